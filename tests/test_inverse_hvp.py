"""Inverse HVPs and IFT hypergradients: maxl_jax/inverse_hvp.py.

(The `implicit` MAXL estimator built on them: test_meta_grad.py.)
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from maxl_jax import inverse_hvp
from maxl_jax.errors import UsageError


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
