"""The meta-gradient: the estimators against each other and the truth."""

import dataclasses
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.flatten_util import ravel_pytree
from toy_problems import TinyConvBN, estimate, inputs, make_problem, rel_err

from maxl_jax import hierarchy, inverse_hvp, losses, meta_grad
from maxl_jax.errors import UsageError
from maxl_jax.networks import models
from maxl_jax.problem import (
  MaxlProblem,
  generated_labels,
  primary_loss_at,
  train_loss,
)
from maxl_jax.steps import meta_metrics
from maxl_jax.training import carry, metrics

pytestmark = pytest.mark.usefixtures('fast_compiles')  # conftest.py.


def held_out_batch(batch, n, num_primary, seed=100):
  """A batch like `batch` with n other examples (a held-out meta batch)."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n, *batch['image'].shape[1:]))
  return {
    'image': jnp.asarray(images, batch['image'].dtype),
    'label': jnp.asarray(rng.integers(0, num_primary, n), jnp.int32),
  }


@pytest.mark.parametrize('kind', ['mlp', 'conv'])
def test_unrolled_matches_finite_differences_float64(kind):
  with jax.enable_x64(True):
    args = make_problem(kind, psi=(2, 1, 3), n=5, dtype=jnp.float64)
    problem, theta1, model_state1, theta2, model_state2, batch = args
    alpha = 0.3
    grads2, _ = estimate('unrolled', args, alpha)
    flat, unravel = ravel_pytree(theta2)

    @jax.jit
    def j_of(flat2):
      return meta_grad.meta_objective(
        problem,
        meta_grad.MetaInputs(
          theta1, model_state1, unravel(flat2), model_state2, batch, alpha
        ),
      )

    rng = np.random.default_rng(1)
    h = 1e-5
    for _ in range(3):
      d = jnp.asarray(rng.normal(size=flat.shape))
      fd = (j_of(flat + h * d) - j_of(flat - h * d)) / (2 * h)
      exact = jnp.dot(ravel_pytree(grads2)[0], d)
      assert abs(fd - exact) / abs(exact) < 1e-6, (fd, exact)


def test_held_out_meta_batch_float64():
  """J = L_pri(θ1⁺; meta_batch) + λH, θ1⁺ from `batch`: unrolled against
  central differences (rel. 1e-6), structured against unrolled (rel.
  1e-10), first_order within its finite-difference error (rel. 1e-4).
  With BatchNorm, whose statistics then come from the meta batch."""
  with jax.enable_x64(True):
    args = make_problem('conv', (2, 1, 3), 5, dtype=jnp.float64, lam=0.4)
    problem, theta1, model_state1, theta2, model_state2, batch = args
    meta_batch = held_out_batch(batch, 9, 3)
    alpha = 0.3
    exact, out = estimate('unrolled', args, alpha, meta_batch)
    flat, unravel = ravel_pytree(theta2)

    @jax.jit
    def j_of(flat2):
      t2 = unravel(flat2)
      return meta_grad.meta_objective(
        problem,
        meta_grad.MetaInputs(
          theta1, model_state1, t2, model_state2, batch, alpha, meta_batch
        ),
      )

    np.testing.assert_allclose(out.meta_loss, j_of(flat), rtol=1e-12)
    rng = np.random.default_rng(2)
    h = 1e-5
    for _ in range(3):
      d = jnp.asarray(rng.normal(size=flat.shape))
      fd = (j_of(flat + h * d) - j_of(flat - h * d)) / (2 * h)
      along = jnp.dot(ravel_pytree(exact)[0], d)
      assert abs(fd - along) / abs(along) < 1e-6, (fd, along)
    structured, out_b = estimate('structured', args, alpha, meta_batch)
    assert rel_err(structured, exact) < 1e-10
    np.testing.assert_allclose(out.meta_loss, out_b.meta_loss, rtol=1e-12)
    approx, _ = estimate('first_order', args, alpha, meta_batch)
    assert rel_err(approx, exact) < 1e-4


def test_meta_batch_none_means_batch():
  """(`structured` and `first_order` agree with `unrolled` without one.)"""
  # float64: two different programs (the batch passed once or twice) may
  # round differently: ~1e-16 here, 1e-12 on any CPU (float32: ~1e-7).
  with jax.enable_x64(True):
    args = make_problem('mlp', (2, 3), 6, dtype=jnp.float64)
    published, out = estimate('unrolled', args, 0.2)
    same, out_same = estimate('unrolled', args, 0.2, args[5])
    assert rel_err(same, published) < 1e-12
    np.testing.assert_allclose(out_same.meta_loss, out.meta_loss, rtol=1e-12)
    other = held_out_batch(args[5], 4, 2)
    held_out, _ = estimate('unrolled', args, 0.2, other)
    assert rel_err(held_out, published) > 1e-2


# psi (incl. unbalanced), batch size, alpha, gamma, lambda, model kind.
AGREEMENT_CASES = [
  ((2, 3), 6, 0.1, 2.0, 0.2, 'mlp'),
  ((1, 4, 2), 7, 1.0, 0.0, 0.0, 'mlp'),
  ((3, 3, 3, 3), 4, 0.05, 2.0, 1.0, 'conv'),
  ((5, 1), 9, 0.5, 0.0, 0.2, 'conv'),
  ((2, 2, 1, 6, 3), 12, 0.01, 2.0, 0.5, 'conv'),
]


@pytest.mark.parametrize('psi,n,alpha,gamma,lam,kind', AGREEMENT_CASES)
def test_structured_equals_unrolled_float64(psi, n, alpha, gamma, lam, kind):
  with jax.enable_x64(True):
    args = make_problem(kind, psi, n, gamma, lam, jnp.float64, seed=n)
    exact, out_a = estimate('unrolled', args, alpha)
    structured, out_b = estimate('structured', args, alpha)
    assert rel_err(structured, exact) < 1e-10
    np.testing.assert_allclose(out_a.meta_loss, out_b.meta_loss, rtol=1e-12)


# Measured: structured 0.3%; first_order 4.7% (its finite difference of two
# nearly equal bf16-rounded forwards amplifies the rounding). That error is
# the bf16 rounding of the same values, the same on every CPU; float32
# summation-order noise (~1e-7) is 10^4 times smaller.
@pytest.mark.parametrize(
  'name,tol', [('structured', 1e-2), ('first_order', 0.15)]
)
def test_bf16_matmul_convs_stay_close_to_float32(name, tol):
  """conv_impl='im2col_bf16' (bf16 operands): same θ, within bf16 rounding."""
  psi, n, alpha = (3, 3, 3, 3), 8, 0.1
  exact, _ = estimate('unrolled', make_problem('conv', psi, n), alpha)
  args = make_problem('conv', psi, n, conv_impl='im2col_bf16')
  rounded, out = estimate(name, args, alpha)
  assert 0 < rel_err(rounded, exact) < tol
  assert np.isfinite(out.meta_loss)


@pytest.mark.parametrize('psi,n,alpha,gamma,lam,kind', AGREEMENT_CASES[::2])
def test_structured_equals_unrolled_float32(psi, n, alpha, gamma, lam, kind):
  args = make_problem(kind, psi, n, gamma, lam, jnp.float32, seed=n)
  exact, _ = estimate('unrolled', args, alpha)
  structured, _ = estimate('structured', args, alpha)
  # Norm-wise float32 rounding of either is ~κu, κ fixed by the (seeded)
  # data, not the CPU: measured <= 1.5e-7, so 1e-4 (~1700u) on any CPU.
  assert rel_err(structured, exact) < 1e-4


@pytest.mark.parametrize('kind', ['mlp', 'conv'])
def test_first_order_error_shrinks_with_eps(kind):
  with jax.enable_x64(True):
    errors = []
    for eps in (1.0, 1e-1, 1e-2):
      args = make_problem(kind, (2, 3), 6, dtype=jnp.float64, fd_eps=eps)
      exact, _ = estimate('unrolled', args, 0.5)
      approx, _ = estimate('first_order', args, 0.5)
      errors.append(rel_err(approx, exact))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4


@pytest.mark.parametrize('example_weights', [False, True])
def test_closed_form_with_dense_mixed_hessian(example_weights):
  """−α (∂²L_train/∂θ2∂θ1)ᵀ ∇L_pri(θ1⁺) + λ∇H from explicit matrices.

  With weights L_train's targets are w·g, H's argument g."""
  with jax.enable_x64(True):
    args = make_problem(
      'mlp',
      (2, 2, 1),
      5,
      dtype=jnp.float64,
      lam=0.7,
      example_weights=example_weights,
    )
    problem, theta1, model_state1, theta2, model_state2, batch = args
    alpha = 0.2
    flat1, un1 = ravel_pytree(theta1)
    flat2, un2 = ravel_pytree(theta2)

    def l_train(f1, f2):
      labels, _ = generated_labels(problem, un2(f2), model_state2, batch)
      return train_loss(problem, un1(f1), model_state1, labels.targets, batch)[
        0
      ]

    def l_pri(f1):
      (logits, _), _ = problem.f_apply(
        un1(f1), model_state1, batch['image'], True
      )
      return losses.primary_loss(logits, batch['label'], problem.gamma)

    def entropy(f2):
      labels, _ = generated_labels(problem, un2(f2), model_state2, batch)
      return losses.entropy_regularizer(labels.probs)

    mixed = jax.jacfwd(jax.grad(l_train, 0), 1)(flat1, flat2)  # [d1, d2]
    theta1_plus = flat1 - alpha * jax.grad(l_train, 0)(flat1, flat2)
    v = jax.grad(l_pri)(theta1_plus)
    closed = -alpha * mixed.T @ v + problem.lam * jax.grad(entropy)(flat2)
    for name in ('unrolled', 'structured'):
      got = ravel_pytree(estimate(name, args, alpha)[0])[0]
      np.testing.assert_allclose(got, closed, rtol=1e-9, atol=1e-12)


# --------------------------------- implicit (IFT) against dense matrices ---


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


def dense_pieces(args, meta_batch):
  """`(H, M, g, λ∇H)` as dense matrices, independently of the estimator.

  H = ∇²θ1 L_T (`jax.hessian`), M = ∂(∇θ1 L_T)/∂θ2 [d1, d2], g = ∇θ1 L_A,
  and the entropy term's gradient [d2].
  """
  problem, theta1, model_state1, theta2, model_state2, batch = args
  flat1, un1 = ravel_pytree(theta1)
  flat2, un2 = ravel_pytree(theta2)

  def l_train(f1, f2):
    labels, _ = generated_labels(problem, un2(f2), model_state2, batch)
    return train_loss(problem, un1(f1), model_state1, labels.targets, batch)[0]

  def l_held_out(f1):
    images = meta_batch['image']
    (logits, _), _ = problem.f_apply(un1(f1), model_state1, images, True)
    return losses.primary_loss(logits, meta_batch['label'], problem.gamma)

  def entropy(f2):
    labels, _ = generated_labels(problem, un2(f2), model_state2, batch)
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
  problem = args[0]

  def run(inputs):
    return [meta_grad.implicit(problem, inputs, inverse=i) for i in inverses]

  return jax.jit(run)(inputs(args, alpha, meta_batch))


def expected_outputs(args, meta_batch):
  """MetaOutput of `implicit`: L_pri(θ1; batch), held-out L_A, ∇θ1 L_T..."""
  problem, theta1, model_state1, theta2, model_state2, batch = args

  @jax.jit
  def reference(theta1, theta2):
    labels, new_model_state2 = generated_labels(
      problem, theta2, model_state2, batch
    )
    probs = labels.probs
    grads1, (new_model_state1, metrics) = jax.grad(train_loss, 1, has_aux=True)(
      problem, theta1, model_state1, labels.targets, batch
    )
    images, labels = meta_batch['image'], meta_batch['label']
    (logits, _), _ = problem.f_apply(theta1, model_state1, images, True)
    held_out = losses.primary_loss(logits, labels, problem.gamma)
    entropy = losses.entropy_regularizer(probs)
    return meta_grad.MetaOutput(
      meta_loss=held_out + problem.lam * entropy,
      loss_pri_before=metrics['loss_pri'],
      loss_pri_after=held_out,
      entropy=entropy,
      theta1_grads=grads1,
      new_model_state1=new_model_state1,
      new_model_state2=new_model_state2,
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
        if name == 'entropy_grads':  # tests/test_meta_signal.py checks it.
          continue
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
    problem = args[0]
    meta_batch = held_out_batch(args[5], 5, 2)
    structured = jax.jit(functools.partial(meta_grad.structured, problem))
    alphas = (0.02, 0.01)
    inverses = [inverse_hvp.InverseHvp(steps=0, lr=alpha) for alpha in alphas]
    results = estimates(args, meta_batch, inverses)  # α itself is unused.
    diffs = []
    for alpha, (got, _) in zip(alphas, results, strict=True):
      ref, _ = structured(inputs(args, alpha, meta_batch))
      diff = ravel_pytree(got)[0] - ravel_pytree(ref)[0]
      diffs.append(float(jnp.linalg.norm(diff)))
    assert 3.0 < diffs[0] / diffs[1] < 5.0, diffs


def test_implicit_needs_a_held_out_batch():
  # The check comes first, so placeholders stand in for the problem.
  placeholders = meta_grad.MetaInputs(*(None,) * 5, 0.1)
  with pytest.raises(UsageError, match='held-out'):
    meta_grad.implicit(None, placeholders)
  with pytest.raises(UsageError, match='held-out'):
    meta_grad.get_estimator('implicit')(None, placeholders)


# ----------------------------------------------- per-example aux weights ---


def _central_differences(j_of, flat, directions, h=1e-5):
  """`(J(θ2 + h d) - J(θ2 - h d)) / 2h` for each direction d."""
  return [
    (j_of(flat + h * d) - j_of(flat - h * d)) / (2 * h) for d in directions
  ]


# kind, psi, batch size, alpha, gamma, lambda, held-out meta batch.
WEIGHTED_CASES = [
  ('mlp', (2, 1, 3), 5, 0.3, 2.0, 0.2, False),
  ('conv', (2, 1, 3), 5, 0.3, 2.0, 0.4, True),
  ('conv', (3, 2), 7, 1.0, 0.0, 0.0, False),
]


@pytest.mark.parametrize('kind,psi,n,alpha,gamma,lam,held', WEIGHTED_CASES)
def test_example_weights_exact_estimators_float64(
  kind, psi, n, alpha, gamma, lam, held
):
  """L_aux = mean_n w_n ℓ(aux_n, g_n): unrolled against central differences
  of J (rel. 1e-6) along random directions and along the weight unit alone;
  structured against unrolled (rel. 1e-10); first_order approximates
  structured (rel. 1e-4)."""
  with jax.enable_x64(True):
    args = make_problem(
      kind, psi, n, gamma, lam, jnp.float64, seed=n, example_weights=True
    )
    problem, theta1, model_state1, theta2, model_state2, batch = args
    meta_batch = held_out_batch(batch, 6, len(psi)) if held else None
    exact, out = estimate('unrolled', args, alpha, meta_batch)
    flat, unravel = ravel_pytree(theta2)

    @jax.jit
    def j_of(flat2):
      return meta_grad.meta_objective(
        problem,
        meta_grad.MetaInputs(
          theta1,
          model_state1,
          unravel(flat2),
          model_state2,
          batch,
          alpha,
          meta_batch,
        ),
      )

    np.testing.assert_allclose(out.meta_loss, j_of(flat), rtol=1e-12)
    rng = np.random.default_rng(3)
    only_weight = jax.tree.map(jnp.zeros_like, theta2)
    only_weight['weight'] = jax.tree.map(
      lambda a: jnp.asarray(rng.normal(size=a.shape)), theta2['weight']
    )
    directions = [jnp.asarray(rng.normal(size=flat.shape)) for _ in range(2)]
    directions.append(ravel_pytree(only_weight)[0])
    flat_exact = ravel_pytree(exact)[0]
    for d, fd in zip(
      directions, _central_differences(j_of, flat, directions), strict=True
    ):
      along = jnp.dot(flat_exact, d)
      assert abs(fd - along) / abs(along) < 1e-6, (fd, along)
    structured, out_b = estimate('structured', args, alpha, meta_batch)
    assert rel_err(structured, exact) < 1e-10
    np.testing.assert_allclose(out_b.meta_loss, out.meta_loss, rtol=1e-12)
    approx, _ = estimate('first_order', args, alpha, meta_batch)
    assert 0 < rel_err(approx, structured) < 1e-4


@pytest.mark.parametrize(
  'kind,psi,n', [('mlp', (2, 3), 6), ('conv', (3, 2), 8)]
)
def test_example_weights_implicit_matches_generic_ift_float64(kind, psi, n):
  """implicit (structured mixed term, two cotangents through g) against
  `inverse_hvp.hypergradient` (reverse-over-reverse through g's weighted
  targets) plus λ∇H of the unweighted labels, with the same solver."""
  with jax.enable_x64(True):
    args = make_problem(
      kind, psi, n, dtype=jnp.float64, lam=0.3, seed=n, example_weights=True
    )
    problem, theta1, model_state1, theta2, model_state2, batch = args
    meta_batch = held_out_batch(batch, 5, len(psi))
    inverse = meta_grad.AUXILEARN_INVERSE

    def inner(t1, t2):
      labels, _ = generated_labels(problem, t2, model_state2, batch)
      return train_loss(problem, t1, model_state1, labels.targets, batch)[0]

    def outer(t1):
      return primary_loss_at(problem, t1, model_state1, meta_batch)

    def entropy(t2):
      labels, _ = generated_labels(problem, t2, model_state2, batch)
      return problem.lam * losses.entropy_regularizer(labels.probs)

    @jax.jit
    def reference(t2):
      ift = inverse_hvp.hypergradient(inner, outer, theta1, t2, inverse)
      return jax.tree.map(jnp.add, ift, jax.grad(entropy)(t2))

    implicit = functools.partial(meta_grad.implicit, problem, inverse=inverse)
    got, out = jax.jit(implicit)(
      meta_grad.MetaInputs(
        theta1, model_state1, theta2, model_state2, batch, 0.1, meta_batch
      )
    )
    assert rel_err(got, reference(theta2)) < 1e-9
    labels, _ = generated_labels(problem, theta2, model_state2, batch)
    np.testing.assert_allclose(out.aux_weights, labels.weights, rtol=1e-12)


def test_label_generator_weights_start_at_init_weight():
  """models.LabelGenerator: every w_n is 0.9 at initialisation, the labels
  are those of the generator without weights, and every estimator's
  gradient reaches the weight unit (finite, non-zero)."""
  problem, theta1, model_state1, _, _, batch = make_problem('conv', (2, 3), 8)
  key, images = jax.random.key(3), batch['image']
  plain, weighted = (
    models.LabelGenerator(TinyConvBN(), 5, example_weights=on)
    for on in (False, True)
  )
  v_plain = dict(plain.init(key, images, False))
  v_weighted = dict(weighted.init(key, images, False))
  theta2, theta2_plain = v_weighted.pop('params'), v_plain.pop('params')
  chex.assert_trees_all_equal(
    {k: theta2[k] for k in ('trunk', 'aux_head')}, theta2_plain
  )
  problem_w = dataclasses.replace(
    problem, g_apply=models.make_apply(weighted), example_weights=True
  )
  problem_p = dataclasses.replace(problem, g_apply=models.make_apply(plain))
  labels, _ = generated_labels(problem_w, theta2, v_weighted, batch)
  labels_p, _ = generated_labels(problem_p, theta2_plain, v_plain, batch)
  np.testing.assert_allclose(labels.weights, 0.9, rtol=1e-6)
  np.testing.assert_array_equal(labels.probs, labels_p.probs)
  meta_batch = held_out_batch(batch, 6, 2)
  # entropy_only: H never sees the weights, so their gradient is 0.
  for name in sorted(set(meta_grad.ESTIMATORS) - {'entropy_only'}):
    args = (problem_w, theta1, model_state1, theta2, v_weighted, batch)
    held = meta_batch if name == 'implicit' else None
    grads2, out = estimate(name, args, 0.1, held)
    for leaf in jax.tree.leaves(grads2['weight_head']):
      assert np.all(np.isfinite(leaf)) and float(jnp.abs(leaf).max()) > 0, name
    assert np.all((out.aux_weights > 0) & (out.aux_weights < 1))


def test_mean_weight_metric():
  """`meta/aux_weight` is the mean weight; runs without weights keep their
  metric set (and checkpoint layout)."""
  grads2, out = estimate('structured', make_problem(example_weights=True), 0.1)
  sums = carry.add(carry.zero_sums(5, aux_weight=True), meta_metrics(out))
  means = metrics.epoch_means(jax.tree.map(np.asarray, sums))
  # A float32 mean of 6 values in (0, 1): error <= 8u (u = 2^-24) = 4.8e-7.
  np.testing.assert_allclose(
    means['meta/aux_weight'], np.mean(out.aux_weights), rtol=1e-6
  )
  grads2, out = estimate('structured', make_problem(), 0.1)
  sums = carry.add(carry.zero_sums(5), meta_metrics(out))
  assert 'meta/aux_weight' not in metrics.epoch_means(sums)
  assert set(sums) == set(carry.zero_sums(5, aux_weight=True)) - {
    'meta/aux_weight'
  }


@pytest.mark.parametrize('name', sorted(meta_grad.ESTIMATORS))
def test_estimators_give_finite_nonzero_gradients(name):
  args = make_problem('conv', (3, 2), 8)
  _, theta1, model_state1, theta2, model_state2, batch = args
  meta_batch = None
  if name == 'implicit':  # It needs a held-out batch.
    meta_batch = held_out_batch(batch, 6, 2)
  grads2, out = estimate(name, args, 0.1, meta_batch)
  chex.assert_tree_all_finite(grads2)
  chex.assert_trees_all_equal_shapes(grads2, args[3])
  assert float(ravel_pytree(grads2)[0] @ ravel_pytree(grads2)[0]) > 0
  assert out.aux_probs.shape == (8, 5)
  chex.assert_tree_all_finite(out)
  chex.assert_trees_all_equal_shapes_and_dtypes(
    (out.theta1_grads, out.new_model_state1, out.new_model_state2),
    (theta1, model_state1, model_state2),
  )
  chex.assert_shape(
    [out.meta_loss, out.loss_pri_before, out.loss_pri_after, out.entropy], ()
  )
  chex.assert_shape(list(out.train_metrics.values()), ())


class _Float32Compute(nn.Module):
  """A two-layer net with float64 parameters and float32 compute."""

  num_out: int
  heads: int = 1

  @nn.compact
  def __call__(self, x, train):
    del train
    dense = functools.partial(
      nn.Dense, dtype=jnp.float32, param_dtype=jnp.float64
    )
    h = jnp.tanh(dense(8)(x.reshape(x.shape[0], -1)))
    outs = tuple(dense(k)(h) for k in ((2, self.num_out) if self.heads == 2
                                       else (self.num_out,)))  # fmt: skip
    return outs if self.heads == 2 else outs[0]


@pytest.mark.parametrize('name', sorted(meta_grad.ESTIMATORS))
def test_float64_parameters_with_float32_compute(name):
  """Cotangents follow the network's output dtype, not θ's (x64 enabled)."""
  psi = (2, 3)
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    batch = {
      'image': jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
      'label': jnp.asarray(rng.integers(0, 2, 6), jnp.int32),
    }
    f, g = _Float32Compute(5, heads=2), _Float32Compute(5)
    theta1 = f.init(jax.random.key(0), batch['image'], True)['params']
    theta2 = g.init(jax.random.key(1), batch['image'], True)['params']
    problem = MaxlProblem(
      f_apply=models.make_apply(f),
      g_apply=models.make_apply(g),
      mask=hierarchy.class_mask(psi),
    )
    meta_batch = dict(batch) if name == 'implicit' else None
    grads2, _ = estimate(
      name, (problem, theta1, {}, theta2, {}, batch), 0.1, meta_batch
    )
    chex.assert_tree_all_finite(grads2)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads2, theta2)


def test_unknown_estimator_is_a_usage_error():
  with pytest.raises(UsageError, match='hessian_free'):
    meta_grad.get_estimator('hessian_free')


def _toy(problem, inputs, *, scale=1.0):
  """A toy estimator with one setting: `structured`'s gradient, scaled."""
  grads2, out = meta_grad.structured(problem, inputs)
  return jax.tree.map(lambda g: scale * g, grads2), out


def _toy_settings(fn, *, scale):
  """config.toy.scale, bound; θ2's gradient goes to its optimiser as is."""
  return functools.partial(fn, scale=scale), None


def test_a_new_estimator_with_a_setting_needs_only_its_entry(monkeypatch):
  """Registering a toy estimator (one setting, needing a held-out split)
  and naming its config group in the builder is all a run needs: the run
  builder checks the name and the held-out split and binds the setting."""
  import ml_collections
  from toy_problems import TOY_INFO, run_config

  from maxl_jax.training import contract, maxl_run

  entry = meta_grad.Entry(_toy, held_out=True, settings=_toy_settings)
  monkeypatch.setitem(meta_grad.ESTIMATORS, 'toy', entry)
  monkeypatch.setitem(maxl_run.SETTINGS_GROUPS, 'toy', 'toy')
  config = run_config(meta_grad='toy')
  config.toy = ml_collections.ConfigDict({'scale': 0.5})
  with pytest.raises(UsageError, match="meta_grad='toy'.*meta_fraction"):
    contract.build_run(config, TOY_INFO)
  config.data.meta_fraction = 0.1
  run = contract.build_run(config, TOY_INFO)
  assert run.estimator.func is _toy and run.estimator.keywords == {'scale': 0.5}
  problem, *rest = make_problem('conv', (2, 3), 6)
  grads2, _ = run.estimator(problem, meta_grad.MetaInputs(*rest, 0.1))
  ref, _ = meta_grad.structured(problem, meta_grad.MetaInputs(*rest, 0.1))
  chex.assert_trees_all_close(
    grads2, jax.tree.map(lambda g: 0.5 * g, ref), rtol=1e-6
  )
  monkeypatch.delitem(meta_grad.ESTIMATORS, 'toy')
  with pytest.raises(UsageError, match="config.maxl.meta_grad = 'toy'"):
    contract.build_run(config, TOY_INFO)


class JitTest(chex.TestCase):
  """Jitted and un-jitted estimators give the same values."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*sorted(meta_grad.ESTIMATORS))
  def test_jit_matches_eager(self, name):
    # float64: jit fuses and orders sums differently from op-by-op: ~1e-16
    # relative here (float32: ~1e-7, near-zero gradient entries far more).
    with jax.enable_x64(True):
      problem, *rest = make_problem('conv', (2, 3), 6, dtype=jnp.float64)
      meta_batch = None
      if name == 'implicit':  # It needs a held-out batch.
        meta_batch = held_out_batch(rest[-1], 4, 2)
      at = meta_grad.MetaInputs(*rest, 0.1, meta_batch)
      estimator = functools.partial(meta_grad.ESTIMATORS[name], problem)
      grads2, out = self.variant(estimator)(at)
      ref, ref_out = estimator(at)
      chex.assert_trees_all_close(grads2, ref, rtol=1e-10, atol=1e-13)
      chex.assert_trees_all_close(out.meta_loss, ref_out.meta_loss, rtol=1e-12)
