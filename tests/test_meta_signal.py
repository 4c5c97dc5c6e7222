"""What trains g: the two parts of θ2's gradient, the variants of the
meta-signal and the controls (maxl_jax/estimators/, diagnostics.py)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from toy_problems import make_problem

from maxl_jax import diagnostics, losses, meta_grad
from maxl_jax import state as state_lib
from maxl_jax import steps as step_fns
from maxl_jax.problem import lookahead, primary_loss_at


def flat(tree):
  return np.asarray(ravel_pytree(tree)[0])


def estimate(name, problem, rest, alpha, meta_batch=None):
  fn = functools.partial(meta_grad.ESTIMATORS[name], problem)
  return jax.jit(fn)(meta_grad.MetaInputs(*rest, alpha, meta_batch))


def lookahead_primary_loss(
  problem, theta1, model_state1, model_state2, batch, alpha
):
  """`θ2 -> L_pri(θ1⁺(θ2))` written out (no meta_grad code)."""

  def loss(theta2):
    outputs, _ = problem.g_apply(theta2, model_state2, batch['image'], True)
    probs = losses.mask_softmax(outputs, batch['label'], problem.mask)
    plus = lookahead(problem, theta1, model_state1, probs, batch, alpha)[0]
    return primary_loss_at(problem, plus, model_state1, batch)

  return loss


def weighted_entropy(problem, model_state2, batch):
  """`θ2 -> λ H(g(θ2))` written out."""

  def entropy(theta2):
    outputs, _ = problem.g_apply(theta2, model_state2, batch['image'], True)
    probs = losses.mask_softmax(outputs, batch['label'], problem.mask)
    return problem.lam * losses.entropy_regularizer(probs)

  return entropy


@pytest.mark.parametrize('name', ['structured', 'unrolled'])
@pytest.mark.parametrize('kind', ['mlp', 'conv'])
def test_gradient_parts_are_the_two_separate_gradients_float64(name, kind):
  """meta part = ∇θ2 L_pri(θ1⁺), entropy part = λ∇θ2 H, each computed on
  its own by jax.grad; their norms and cosine as logged."""
  with jax.enable_x64(True):
    problem, theta1, model_state1, theta2, model_state2, batch = make_problem(
      kind, psi=(2, 3), n=6, dtype=jnp.float64
    )
    alpha = 0.3
    rest = (theta1, model_state1, theta2, model_state2, batch)
    grads2, out = estimate(name, problem, rest, alpha)
    meta, entropy = meta_grad.gradient_parts(grads2, out)
    meta_ref = jax.grad(
      lookahead_primary_loss(
        problem, theta1, model_state1, model_state2, batch, alpha
      )
    )(theta2)
    entropy_ref = jax.grad(weighted_entropy(problem, model_state2, batch))(
      theta2
    )
    np.testing.assert_allclose(
      flat(meta), flat(meta_ref), rtol=1e-9, atol=1e-13
    )
    np.testing.assert_allclose(
      flat(entropy), flat(entropy_ref), rtol=1e-9, atol=1e-13
    )
    stats = diagnostics.gradient_parts_stats(meta, entropy)
    m, e = flat(meta_ref), flat(entropy_ref)
    norm_m, norm_e = np.linalg.norm(m), np.linalg.norm(e)
    assert norm_m > 0 and norm_e > 0
    np.testing.assert_allclose(stats['grad_meta_norm'], norm_m, rtol=1e-6)
    np.testing.assert_allclose(stats['grad_entropy_norm'], norm_e, rtol=1e-6)
    np.testing.assert_allclose(
      stats['grad_parts_cosine'], m @ e / (norm_m * norm_e), rtol=1e-5
    )
    np.testing.assert_allclose(
      stats['meta_share'], norm_m / (norm_m + norm_e), rtol=1e-6
    )


@pytest.mark.parametrize('name', ['first_order', 'implicit', 'entropy_only'])
def test_entropy_part_is_the_same_for_every_estimator_float64(name):
  """The entropy part does not depend on how the meta part is estimated."""
  with jax.enable_x64(True):
    problem, theta1, model_state1, theta2, model_state2, batch = make_problem(
      'conv', psi=(3, 2), n=6, dtype=jnp.float64
    )
    rest = (theta1, model_state1, theta2, model_state2, batch)
    meta_batch = dict(batch) if name == 'implicit' else None
    grads2, out = estimate(name, problem, rest, 0.1, meta_batch)
    entropy_ref = jax.grad(weighted_entropy(problem, model_state2, batch))(
      theta2
    )
    np.testing.assert_allclose(
      flat(out.entropy_grads), flat(entropy_ref), rtol=1e-9, atol=1e-13
    )
    if name == 'entropy_only':  # The whole gradient is the entropy part.
      np.testing.assert_array_equal(flat(grads2), flat(out.entropy_grads))
      meta, _ = meta_grad.gradient_parts(grads2, out)
      assert np.all(flat(meta) == 0)


def finite_difference_check(problem, rest, alpha, grads2, rng, h=1e-5):
  """Central differences of J along random directions against `grads2`."""
  theta1, model_state1, theta2, model_state2, batch = rest
  flat2, unravel = ravel_pytree(theta2)

  @jax.jit
  def j_of(x):
    return meta_grad.meta_objective(
      problem,
      meta_grad.MetaInputs(
        theta1, model_state1, unravel(x), model_state2, batch, alpha
      ),
    )

  for _ in range(3):
    d = jnp.asarray(rng.normal(size=flat2.shape))
    fd = (j_of(flat2 + h * d) - j_of(flat2 - h * d)) / (2 * h)
    exact = flat(grads2) @ np.asarray(d)
    assert abs(fd - exact) / abs(exact) < 1e-6, (fd, exact)


@pytest.mark.parametrize('name', ['structured', 'unrolled'])
@pytest.mark.parametrize('meta_gamma', [0.0, 1.0])
def test_meta_loss_variant_matches_finite_differences_float64(name, meta_gamma):
  """J with a cross-entropy (γ' = 0) or γ' = 1 meta loss, θ1 trained with
  the focal loss (γ = 2): each exact estimator against central
  differences, and J really changes with γ'."""
  with jax.enable_x64(True):
    problem, *rest = make_problem('conv', psi=(2, 3), n=6, dtype=jnp.float64)
    variant = dataclasses.replace(
      problem,
      meta_loss=lambda logits, y: losses.primary_loss(logits, y, meta_gamma),
    )
    grads2, out = estimate(name, variant, rest, 0.3)
    rng = np.random.default_rng(0)
    finite_difference_check(variant, rest, 0.3, grads2, rng)
    _, published = estimate(name, problem, rest, 0.3)
    assert abs(float(out.meta_loss - published.meta_loss)) > 1e-3


def _theta2_after(problem, batch, start, tx, **deps):
  """θ2 after one jitted meta step (structured) from `start`."""
  step = functools.partial(
    step_fns.meta_step,
    problem=problem,
    estimator=meta_grad.structured,
    tx2=tx,
    **deps,
  )
  return jax.jit(step)(start, batch)[0].theta2


def _toy_start(tx):
  problem, theta1, model_state1, theta2, model_state2, batch = make_problem(
    'conv', psi=(2, 3), n=6, dtype=jnp.float64
  )
  start = state_lib.initial_state(
    theta1, model_state1, theta2, model_state2, tx, tx, {}
  )
  return problem, batch, start


def test_lookahead_scale_is_part_of_alpha():
  """maxl.lookahead_scale s: the run's α is s times θ1's learning rate (the
  logged lr unchanged), and the meta step moves θ2 differently with it."""
  from toy_problems import TOY_INFO, run_config

  from maxl_jax.training import contract

  run = contract.build_run(run_config(lookahead_scale=10.0), TOY_INFO)
  paper = contract.build_run(run_config(), TOY_INFO)
  for t in (0, 7):
    assert run.lr_schedule(t) == paper.lr_schedule(t) == paper.alpha_schedule(t)
    np.testing.assert_array_equal(
      run.alpha_schedule(t), 10.0 * run.lr_schedule(t)
    )
  assert meta_grad.lookahead_alpha(paper.lr_schedule) is paper.lr_schedule
  with jax.enable_x64(True):
    tx = optax.sgd(0.5)
    problem, batch, start = _toy_start(tx)
    base = lambda t: 0.1  # noqa: E731
    scaled = _theta2_after(
      problem, batch, start, tx,
      alpha_schedule=meta_grad.lookahead_alpha(base, 10.0),
    )  # fmt: skip
    published = _theta2_after(problem, batch, start, tx, alpha_schedule=base)
    assert np.abs(flat(scaled) - flat(published)).max() > 1e-6


def test_normalized_balance_gives_unit_meta_and_lambda_entropy():
  """'sum' is no transform (the published gradient); 'normalized' scales
  the parts to norms 1 and λ, and the θ2 step follows their sum."""
  assert meta_grad.balance('sum', 0.2) is None
  with jax.enable_x64(True):
    tx = optax.sgd(1.0)
    problem, batch, start = _toy_start(tx)
    at = meta_grad.MetaInputs(
      start.theta1,
      start.model_state1,
      start.theta2,
      start.model_state2,
      batch,
      0.3,
    )
    m, e = meta_grad.gradient_parts(*meta_grad.structured(problem, at))
    meta, entropy = meta_grad.balance('normalized', 0.2)(m, e)
    np.testing.assert_allclose(np.linalg.norm(flat(meta)), 1.0, rtol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(flat(entropy)), 0.2, rtol=1e-8)
    unit = lambda x: flat(x) / np.linalg.norm(flat(x))  # noqa: E731
    combined = unit(m) + 0.2 * unit(e)
    share = diagnostics.gradient_parts_stats(meta, entropy)['meta_share']
    np.testing.assert_allclose(share, 1 / 1.2, rtol=1e-6)
    after = _theta2_after(
      problem, batch, start, tx,
      alpha_schedule=lambda t: 0.3,
      balance=meta_grad.balance('normalized', 0.2),
    )  # fmt: skip
    np.testing.assert_allclose(
      flat(start.theta2) - flat(after), combined, rtol=1e-8, atol=1e-12
    )


def test_label_drift_by_hand():
  """Total variation per example, summed over real examples only."""
  now = jnp.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  then = jnp.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  sums = diagnostics.label_drift(now, then, jnp.array([1.0, 1.0, 0.0]))
  assert float(sums['drift']) == 1.0 and float(sums['count']) == 2.0
