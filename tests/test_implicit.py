"""Implicit (IFT) hypergradients: inverse HVPs, ridge regression and MAXL."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_problem
from jax.flatten_util import ravel_pytree

from maxl_jax import inverse_hvp, losses, meta_grad
from maxl_jax.errors import UsageError
from maxl_jax.problem import generated_labels, train_loss


def rel_err(a, b):
  a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def spd_problem(dim=6, seed=0):
  """`(A, hvp_fn, g)`: A SPD with eigenvalues in [0.5, 2], g a pytree."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
  a = q @ np.diag(np.linspace(0.5, 2.0, dim)) @ q.T
  g = {'u': jnp.asarray(rng.normal(size=2)), 'v': rng.normal(size=dim - 2)}
  g = jax.tree.map(jnp.asarray, g)
  _, unravel = ravel_pytree(g)
  hvp_fn = lambda t: unravel(jnp.asarray(a) @ ravel_pytree(t)[0])  # noqa: E731
  return a, hvp_fn, g


def test_hvp_matches_dense_hessian():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    params = {'w': rng.normal(size=(3, 2)), 'b': rng.normal(size=2)}
    params = jax.tree.map(jnp.asarray, params)
    x = jnp.asarray(rng.normal(size=(5, 3)))

    def loss(p):
      return jnp.sum(jnp.tanh(x @ p['w'] + p['b']) ** 2) + jnp.sum(p['w'] ** 4)

    flat, unravel = ravel_pytree(params)
    vec = unravel(jnp.asarray(rng.normal(size=flat.size)))
    dense = jax.hessian(lambda f: loss(unravel(f)))(flat)
    got = inverse_hvp.hvp(loss, params, vec)
    expected = dense @ ravel_pytree(vec)[0]
    np.testing.assert_allclose(ravel_pytree(got)[0], expected, rtol=1e-12)


def test_neumann_error_shrinks_monotonically_to_the_solve():
  """`η Σ_{j<=K} (I - ηA)^j g → A⁻¹ g` with rate `max|1 - ηλ| = 0.8`."""
  with jax.enable_x64(True):
    a, hvp_fn, g = spd_problem()
    exact = np.linalg.solve(a, ravel_pytree(g)[0])
    lr = 0.4
    zero = inverse_hvp.neumann(hvp_fn, g, steps=0, lr=lr)
    chex.assert_trees_all_equal(zero, jax.tree.map(lambda t: lr * t, g))
    errors = [
      rel_err(
        inverse_hvp.neumann(hvp_fn, g, steps=k, lr=lr), unravel_like(g, exact)
      )
      for k in (0, 1, 2, 4, 8, 16, 32, 64)
    ]
    assert all(
      e1 > e2 for e1, e2 in zip(errors[:-1], errors[1:], strict=True)
    ), errors
    assert errors[-1] < 0.8**64
    far = inverse_hvp.neumann(hvp_fn, g, steps=200, lr=lr)
    assert rel_err(far, unravel_like(g, exact)) < 1e-12


def unravel_like(tree, flat):
  return ravel_pytree(tree)[1](jnp.asarray(flat))


@pytest.mark.parametrize('damping', [0.0, 0.3])
def test_cg_matches_the_solve(damping):
  with jax.enable_x64(True):
    a, hvp_fn, g = spd_problem(seed=1)
    exact = np.linalg.solve(a + damping * np.eye(6), ravel_pytree(g)[0])
    w = inverse_hvp.cg(hvp_fn, g, steps=6, damping=damping, tol=1e-14)
    assert rel_err(w, unravel_like(g, exact)) < 1e-10
    inverse = inverse_hvp.InverseHvp('cg', steps=6, damping=damping, tol=1e-14)
    chex.assert_trees_all_close(inverse.solve(hvp_fn, g), w, rtol=1e-14)


def test_inverse_hvp_neumann_damps_the_hessian():
  with jax.enable_x64(True):
    a, hvp_fn, g = spd_problem(seed=2)
    inverse = inverse_hvp.InverseHvp(steps=300, lr=0.4, damping=0.2)
    exact = np.linalg.solve(a + 0.2 * np.eye(6), ravel_pytree(g)[0])
    assert rel_err(inverse.solve(hvp_fn, g), unravel_like(g, exact)) < 1e-12


@pytest.mark.parametrize(
  'kwargs,match',
  [
    ({'solver': 'newton'}, 'newton'),
    ({'steps': -1}, 'steps'),
    ({'damping': -0.1}, 'damping'),
  ],
)
def test_inverse_hvp_rejects_bad_settings(kwargs, match):
  with pytest.raises(UsageError, match=match):
    inverse_hvp.InverseHvp(**kwargs)


def ridge_problem(seed=0, n=40, d=5):
  """Ridge regression with per-feature penalties `exp(φ_j)`; held-out MSE."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=d)
  x, xv = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  y, yv = x @ a + rng.normal(size=n), xv @ a + rng.normal(size=n)
  x, xv, y, yv = map(jnp.asarray, (x, xv, y, yv))

  def inner(theta, phi):
    fit = 0.5 * jnp.mean((x @ theta - y) ** 2)
    return fit + 0.5 * jnp.sum(jnp.exp(phi) * theta**2)

  def outer(theta):
    return 0.5 * jnp.mean((xv @ theta - yv) ** 2)

  phi = jnp.asarray(rng.normal(size=d) - 1.0)
  return inner, outer, phi, d


def test_hypergradient_matches_unrolled_gradient_descent():
  """IFT at the inner minimum = ∇φ through 2000 unrolled GD steps.

  The inner problem is strongly convex; GD (step 1/L) contracts by at least
  `1 - μ/L` per step, so after 2000 steps both θ and ∂θ/∂φ are converged to
  float64 precision. Tolerance rtol 1e-8 (measured 6e-16); AuxiLearn's
  truncated Neumann series is measured 57% off here.
  """
  with jax.enable_x64(True):
    inner, outer, phi, d = ridge_problem()
    theta0 = jnp.zeros(d)
    hessian = jax.jit(jax.hessian(inner))(theta0, phi)  # Constant in θ.
    lr = 1.0 / float(jnp.linalg.eigvalsh(hessian)[-1])

    def solve_by_gd(p):
      step = lambda _, t: t - lr * jax.grad(inner)(t, p)  # noqa: E731
      return jax.lax.fori_loop(0, 2000, step, theta0)

    unrolled = jax.jit(jax.grad(lambda p: outer(solve_by_gd(p))))(phi)
    theta = solve_by_gd(phi)
    assert float(jnp.linalg.norm(jax.grad(inner)(theta, phi))) < 1e-12
    hypergradient = jax.jit(inverse_hvp.hypergradient, static_argnums=(0, 1, 4))
    exact = inverse_hvp.InverseHvp('cg', steps=d, tol=1e-15)
    got = hypergradient(inner, outer, theta, phi, exact)
    np.testing.assert_allclose(got, unrolled, rtol=1e-8, atol=1e-14)
    approx = hypergradient(inner, outer, theta, phi, inverse_hvp.InverseHvp())
    assert 1e-2 < rel_err(approx, unrolled) < 1.0


@dataclasses.dataclass(frozen=True)
class DenseSolve:
  """Exact `(H + δI)⁻¹ g`: H assembled column by column from `hvp_fn`."""

  damping: float

  def solve(self, hvp_fn, g):
    flat, unravel = ravel_pytree(g)
    cols = jax.vmap(lambda e: ravel_pytree(hvp_fn(unravel(e)))[0])(
      jnp.eye(flat.size, dtype=flat.dtype)
    )
    h = cols.T + self.damping * jnp.eye(flat.size, dtype=flat.dtype)
    return unravel(jnp.linalg.solve(h, flat))


def held_out_batch(batch, n, num_primary, seed=100):
  """A batch like `batch` with n other examples (a held-out meta batch)."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n, *batch['image'].shape[1:]))
  return {
    'image': jnp.asarray(images, batch['image'].dtype),
    'label': jnp.asarray(rng.integers(0, num_primary, n), jnp.int32),
  }


def dense_pieces(args, meta_batch):
  """`(H, M, g, λ∇H)` as dense matrices, independently of the estimator.

  H = ∇²θ1 L_T (`jax.hessian`), M = ∂(∇θ1 L_T)/∂θ2 [d1, d2], g = ∇θ1 L_A,
  and the entropy term's gradient [d2].
  """
  problem, theta1, state1, theta2, state2, batch = args
  flat1, un1 = ravel_pytree(theta1)
  flat2, un2 = ravel_pytree(theta2)

  def l_train(f1, f2):
    labels, _ = generated_labels(problem, un2(f2), state2, batch)
    return train_loss(problem, un1(f1), state1, labels.targets, batch)[0]

  def l_held_out(f1):
    images = meta_batch['image']
    (logits, _), _ = problem.f_apply(un1(f1), state1, images, True)
    return losses.primary_loss(logits, meta_batch['label'], problem.gamma)

  def entropy(f2):
    labels, _ = generated_labels(problem, un2(f2), state2, batch)
    return losses.entropy_regularizer(labels.probs)

  @jax.jit
  def pieces(f1, f2):
    h = jax.hessian(l_train, 0)(f1, f2)
    mixed = jax.jacfwd(jax.grad(l_train, 0), 1)(f1, f2)
    return h, mixed, jax.grad(l_held_out)(f1), jax.grad(entropy)(f2)

  h, mixed, g, entropy_grad = pieces(flat1, flat2)
  return h, mixed, g, problem.lam * entropy_grad


def estimates(args, meta_batch, inverses, alpha=0.1):
  """`[(grads2, MetaOutput)]` of `implicit` per inverse, in one jit."""
  problem, *rest = args

  def run(*a):
    return [meta_grad.implicit(problem, *a, inverse=i) for i in inverses]

  return jax.jit(run)(*rest, alpha, meta_batch)


def expected_outputs(args, meta_batch):
  """MetaOutput of `implicit`: L_pri(θ1; batch), held-out L_A, ∇θ1 L_T..."""
  problem, theta1, state1, theta2, state2, batch = args

  @jax.jit
  def reference(theta1, theta2):
    labels, new_state2 = generated_labels(problem, theta2, state2, batch)
    probs = labels.probs
    grads1, (new_state1, metrics) = jax.grad(train_loss, 1, has_aux=True)(
      problem, theta1, state1, labels.targets, batch
    )
    images, labels = meta_batch['image'], meta_batch['label']
    (logits, _), _ = problem.f_apply(theta1, state1, images, True)
    held_out = losses.primary_loss(logits, labels, problem.gamma)
    entropy = losses.entropy_regularizer(probs)
    return meta_grad.MetaOutput(
      meta_loss=held_out + problem.lam * entropy,
      loss_pri_before=metrics['loss_pri'],
      loss_pri_after=held_out,
      entropy=entropy,
      theta1_grads=grads1,
      new_state1=new_state1,
      new_state2=new_state2,
      aux_probs=probs,
      train_metrics=metrics,
    )

  return reference(theta1, theta2)


# kind, psi, batch size, held-out size, lam.
MAXL_CASES = [('mlp', (2, 3), 6, 5, 0.2), ('conv', (3, 2), 8, 4, 0.3)]


@pytest.mark.parametrize('kind,psi,n,n_meta,lam', MAXL_CASES)
def test_implicit_maxl_matches_dense_ift(kind, psi, n, n_meta, lam):
  """Against `-Mᵀ (H + δI)⁻¹ g + λ∇H` with dense matrices (float64).

  H is indefinite at initialisation, so δ = 0.2 - λ_min(H) makes H + δI
  positive definite (smallest eigenvalue 0.2). Relative errors (norm):
  exact solve 1e-9; CG (300 steps, relative residual 1e-13) 1e-7;
  AuxiLearn's Neumann (K = 3, η = 0.1, the estimator's default) against the
  same truncated series written densely 1e-9. The other outputs (losses,
  ∇θ1 L_T, batch statistics) against a direct computation: rtol 1e-12.
  """
  with jax.enable_x64(True):
    args = make_problem(kind, psi, n, dtype=jnp.float64, lam=lam, seed=n)
    meta_batch = held_out_batch(args[5], n_meta, len(psi))
    h, mixed, g, entropy_grad = dense_pieces(args, meta_batch)
    damping = 0.2 - min(float(jnp.linalg.eigvalsh(h)[0]), 0.0)
    shifted = h + damping * jnp.eye(h.shape[0])
    exact = -mixed.T @ jnp.linalg.solve(shifted, g) + entropy_grad

    term, w = g, g
    for _ in range(3):
      term = term - 0.1 * (h @ term)
      w = w + term
    neumann = -mixed.T @ (0.1 * w) + entropy_grad

    cg = inverse_hvp.InverseHvp('cg', steps=300, damping=damping, tol=1e-13)
    inverses = (DenseSolve(damping), cg, meta_grad.AUXILEARN_INVERSE)
    results = estimates(args, meta_batch, inverses)
    got = [ravel_pytree(grads2)[0] for grads2, _ in results]
    assert rel_err(got[0], exact) < 1e-9
    assert rel_err(got[1], exact) < 1e-7
    assert rel_err(got[2], neumann) < 1e-9

    expected = expected_outputs(args, meta_batch)
    for grads2, out in results:
      chex.assert_trees_all_equal_shapes(grads2, args[3])
      chex.assert_tree_all_finite((grads2, out))
      for name, value in expected._asdict().items():
        chex.assert_trees_all_close(
          getattr(out, name), value, rtol=1e-12, atol=1e-15, custom_message=name
        )


def test_implicit_with_one_neumann_term_is_maxl_to_second_order():
  """K = 0, η = α: w = α∇L_A(θ1) vs structured's αv, v = ∇L_A(θ1⁺).

  The two differ by `α (∇L_A(θ1) - ∇L_A(θ1⁺)) = O(α²)`, so halving α
  quarters the difference (the ratio is measured ~4.0; asserted in [3, 5]).
  """
  with jax.enable_x64(True):
    args = make_problem('mlp', (2, 3), 6, dtype=jnp.float64)
    problem, *rest = args
    meta_batch = held_out_batch(args[5], 5, 2)
    structured = jax.jit(functools.partial(meta_grad.structured, problem))
    alphas = (0.02, 0.01)
    inverses = [inverse_hvp.InverseHvp(steps=0, lr=alpha) for alpha in alphas]
    results = estimates(args, meta_batch, inverses)  # α itself is unused.
    diffs = []
    for alpha, (got, _) in zip(alphas, results, strict=True):
      ref, _ = structured(*rest, alpha, meta_batch)
      diff = ravel_pytree(got)[0] - ravel_pytree(ref)[0]
      diffs.append(float(jnp.linalg.norm(diff)))
    assert 3.0 < diffs[0] / diffs[1] < 5.0, diffs


def test_implicit_needs_a_held_out_batch():
  # The check comes first, so placeholders stand in for the problem.
  args = (None,) * 6 + (0.1,)
  with pytest.raises(UsageError, match='meta_fraction'):
    meta_grad.implicit(*args)
  with pytest.raises(UsageError, match='meta_fraction'):
    meta_grad.get_estimator('implicit')(*args, meta_batch=None)
