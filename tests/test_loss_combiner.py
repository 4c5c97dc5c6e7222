"""The learned loss combiner (maxl_jax/loss_combiner.py): its forms, weights
and what it learns."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from maxl_jax import inverse_hvp, loss_combiner
from maxl_jax.errors import UsageError


def random_losses(n=7, tasks=3, seed=0):
  """[n, tasks] non-negative losses."""
  return jnp.asarray(np.random.default_rng(seed).exponential(size=(n, tasks)))


@pytest.mark.parametrize('form', loss_combiner.FORMS)
def test_initial_weights_are_about_one(form):
  """'linear' and 'fixed': exactly 1; 'mlp': about 1 at small losses."""
  init, apply = loss_combiner.make_combiner(form, 3)
  params = init(jax.random.key(0))
  small = jnp.full((4, 3), 1e-3)
  weights = loss_combiner.task_weights(apply, params, small)
  chex.assert_shape(weights, (3,))
  if form == 'mlp':
    assert np.all((weights > 0.6) & (weights < 1.4)), weights
  else:
    np.testing.assert_allclose(weights, 1.0, rtol=1e-6)
  if form == 'fixed':
    assert params == {}
  chex.assert_shape(apply(params, random_losses()), (7,))


def test_linear_is_a_weighted_sum_with_softplus_weights():
  init, apply = loss_combiner.make_combiner('linear', 3)
  rho = jnp.asarray([-2.0, 0.0, 3.0])
  params = jax.tree.map(lambda _: rho, init(jax.random.key(0)))
  weights = jax.nn.softplus(rho)
  ell = random_losses()
  np.testing.assert_allclose(apply(params, ell), ell @ weights, rtol=1e-6)
  np.testing.assert_allclose(
    loss_combiner.combined_aux_loss(apply, params, ell), jnp.mean(ell @ weights)
  )
  for seed in (1, 2):  # The same weights whatever the losses.
    got = loss_combiner.task_weights(apply, params, random_losses(seed=seed))
    np.testing.assert_allclose(got, weights, rtol=1e-6)


def test_mlp_is_nonnegative_monotone_and_zero_at_zero():
  """For ℓ >= 0: c(ℓ) >= 0, c(0) = 0 and ∂c/∂ℓ_t >= 0, for any parameters."""
  init, apply = loss_combiner.make_combiner('mlp', 3, hidden=5)
  for seed in range(3):
    key1, key2 = jax.random.split(jax.random.key(seed))
    flat, unravel = ravel_pytree(init(key1))
    params = unravel(flat + 3.0 * jax.random.normal(key2, flat.shape))
    ell = random_losses(seed=seed)
    assert np.all(apply(params, ell) >= 0)
    # c(0) = net(0) - net(0): two float32 matmuls of different shapes, each
    # within γ_H Σ|terms| of Σ_h softplus(b_h) u⁺_h in any order (+ a few
    # ulps of softplus per term): 0 up to that bound on any CPU.
    terms = np.logaddexp(0, np.asarray(params['b'], np.float64))
    terms *= np.logaddexp(0, np.asarray(params['u'], np.float64))
    bound = 2 * 13 * 2.0**-24 * np.sum(terms)  # 2γ_{H+8}, H = 5.
    assert np.all(np.abs(apply(params, jnp.zeros((2, 3)))) <= bound)
    grads = jax.grad(lambda x: jnp.sum(apply(params, x)))(ell)  # noqa: B023
    assert np.all(grads >= 0)


def test_task_weights_are_mean_loss_derivatives():
  """'mlp': against a central difference of the combined loss (float64)."""
  with jax.enable_x64(True):
    init, apply = loss_combiner.make_combiner('mlp', 3, param_dtype=jnp.float64)
    params = init(jax.random.key(1))
    ell = random_losses()
    got = loss_combiner.task_weights(apply, params, ell)
    h = 1e-6
    for t in range(3):
      step = h * jax.nn.one_hot(t, 3, dtype=ell.dtype)
      plus = loss_combiner.combined_aux_loss(apply, params, ell + step)
      minus = loss_combiner.combined_aux_loss(apply, params, ell - step)
      np.testing.assert_allclose(got[t], (plus - minus) / (2 * h), rtol=1e-7)


@pytest.mark.parametrize(
  'form,num_tasks,hidden',
  [('quadratic', 2, 4), ('linear', 0, 4), ('mlp', 2, 0)],
)
def test_bad_settings_are_usage_errors(form, num_tasks, hidden):
  with pytest.raises(UsageError):
    loss_combiner.make_combiner(form, num_tasks, hidden)


def regression_tasks(seed, d=8, n=30, n_val=200):
  """AuxiLearn-style toy: main y = Xa + noise, aux 1 Xa + small noise
  (helpful), aux 2 Xb (a different function: harmful)."""
  rng = np.random.default_rng(seed)
  a, b = rng.normal(size=d), rng.normal(size=d)
  x, x_val = rng.normal(size=(n, d)), rng.normal(size=(n_val, d))
  y = x @ a + rng.normal(size=n)
  helpful = x @ a + 0.3 * rng.normal(size=n)
  harmful = x @ b
  y_val = x_val @ a + rng.normal(size=n_val)
  return jax.tree.map(
    lambda v: jnp.asarray(v, jnp.float32),
    (x, y, jnp.stack([helpful, harmful], -1), x_val, y_val),
  )


@pytest.mark.parametrize('seed,solver', [(0, 'neumann'), (1, 'cg')])
def test_learns_to_down_weight_a_harmful_auxiliary(seed, solver):
  """θ: 1000 GD steps on L_T; φ ('linear'): every 10 θ steps, one step on
  the implicit hypergradient of the held-out main loss (AuxiLearn's Neumann
  K = 3, η = 0.1, or CG). Measured (seeds 0-5): helpful weight 1.7-3.5,
  harmful 0.03-0.21, from 1 and 1."""
  x, y, aux_y, x_val, y_val = regression_tasks(seed)
  init, apply = loss_combiner.make_combiner('linear', 2)
  inverse = inverse_hvp.InverseHvp(
    solver, steps=3 if solver == 'neumann' else 8
  )

  def inner(theta, phi):
    pred = x @ theta
    aux = (pred[:, None] - aux_y) ** 2  # [N, 2] per-example losses.
    main = jnp.mean((pred - y) ** 2)
    return main + loss_combiner.combined_aux_loss(apply, phi, aux)

  def outer(theta):
    return jnp.mean((x_val @ theta - y_val) ** 2)

  @jax.jit
  def train(theta, phi):
    def outer_step(carry, _):
      theta, phi = carry
      theta = jax.lax.fori_loop(
        0, 10, lambda _, t: t - 0.1 * jax.grad(inner)(t, phi), theta
      )
      hypergrad = inverse_hvp.hypergradient(inner, outer, theta, phi, inverse)
      phi = jax.tree.map(lambda p, g: p - 0.3 * g, phi, hypergrad)
      return (theta, phi), None

    (theta, phi), _ = jax.lax.scan(outer_step, (theta, phi), None, length=100)
    return theta, phi

  theta, phi = train(jnp.zeros(x.shape[1]), init(jax.random.key(0)))
  helpful, harmful = loss_combiner.task_weights(apply, phi, jnp.ones((1, 2)))
  assert harmful < 0.5 < 1.0 < helpful, (helpful, harmful)
  assert harmful < 0.25 * helpful, (helpful, harmful)
  chex.assert_tree_all_finite(theta)
