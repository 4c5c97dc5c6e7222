"""The K-step lookahead (maxl.lookahead_steps): θ1⁺ is K updates of θ1's own
optimiser, and its meta-gradient is exact (meta_grad.OptimizerLookahead)."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from toy_problems import (
  TOY_INFO,
  estimate,
  inputs,
  make_problem,
  rel_err,
  run_config,
)

from experiments.configs import smoke
from maxl_jax import losses, meta_grad
from maxl_jax.errors import UsageError
from maxl_jax.problem import generated_labels, train_loss
from maxl_jax.training import contract, loop

pytestmark = pytest.mark.usefixtures('fast_compiles')  # conftest.py.

MOMENTUM_SGD = optax.chain(
  optax.add_decayed_weights(1e-3), optax.sgd(0.2, momentum=0.9)
)


def _started(tx, theta1, seed=3):
  """`tx`'s state after one update by a random gradient: a nonzero
  momentum buffer and count, as mid-training."""
  leaves, treedef = jax.tree.flatten(theta1)
  rng = np.random.default_rng(seed)
  grads = treedef.unflatten(
    [jnp.asarray(rng.normal(size=x.shape), x.dtype) for x in leaves]
  )
  return tx.update(grads, tx.init(theta1), theta1)[1]


def _loop_objective(problem, theta1, ms1, theta2, ms2, batch, tx, opt, k):
  """J with K optimiser updates written as a plain Python loop (no scan, no
  remat): an independent formulation of the K-step objective."""
  labels, _ = generated_labels(problem, theta2, ms2, batch)
  theta = theta1
  for _ in range(k):
    grads, _ = jax.grad(train_loss, 1, has_aux=True)(
      problem, theta, ms1, labels.targets, batch
    )
    updates, opt = tx.update(grads, opt, theta)
    theta = optax.apply_updates(theta, updates)
  (logits, _), _ = problem.f_apply(theta, ms1, batch['image'], True)
  loss = losses.primary_loss(logits, batch['label'], problem.gamma)
  return loss + problem.lam * losses.entropy_regularizer(labels.probs)


@pytest.mark.parametrize('kind,steps', [('mlp', 3), ('conv', 4)])
def test_k_step_meta_gradient_matches_finite_differences_float64(kind, steps):
  """∇θ2 J through K momentum-SGD updates against central differences of
  J written as a plain loop, along random directions."""
  with jax.enable_x64(True):
    args = make_problem(kind, psi=(2, 1, 3), n=5, dtype=jnp.float64)
    problem, theta1, ms1, theta2, ms2, batch = args
    opt = _started(MOMENTUM_SGD, theta1)
    estimator = meta_grad.OptimizerLookahead(MOMENTUM_SGD, steps)
    grads2, out = jax.jit(functools.partial(estimator, problem))(
      inputs(args, 0.0, opt_state1=opt)
    )
    flat, unravel = ravel_pytree(theta2)

    @jax.jit
    def j_of(flat2):
      return _loop_objective(
        problem, theta1, ms1, unravel(flat2), ms2, batch, MOMENTUM_SGD, opt,
        steps,
      )  # fmt: skip

    np.testing.assert_allclose(out.meta_loss, j_of(flat), rtol=1e-12)
    rng = np.random.default_rng(1)
    h = 1e-5
    for _ in range(3):
      d = jnp.asarray(rng.normal(size=flat.shape))
      fd = (j_of(flat + h * d) - j_of(flat - h * d)) / (2 * h)
      exact = jnp.dot(ravel_pytree(grads2)[0], d)
      assert abs(fd - exact) / abs(exact) < 1e-6, (fd, exact)


def test_one_plain_sgd_step_is_the_published_lookahead_float64():
  """K = 1 with SGD at rate α (no momentum) is `unrolled`'s θ1 − α∇L."""
  with jax.enable_x64(True):
    args = make_problem('conv', psi=(2, 3), n=6, dtype=jnp.float64)
    alpha = 0.3
    sgd = optax.sgd(alpha)
    one = meta_grad.OptimizerLookahead(sgd, 1)
    grads2, out = one(args[0], inputs(args, None, opt_state1=sgd.init(args[1])))
    expected, expected_out = estimate('unrolled', args, alpha)
    assert rel_err(grads2, expected) < 1e-12
    assert rel_err(out.entropy_grads, expected_out.entropy_grads) < 1e-12
    np.testing.assert_allclose(out.meta_loss, expected_out.meta_loss)


def test_longer_horizons_change_the_gradient_and_controls_follow_h():
  """In float64, so that the control's J (no gradient taken) matches MAXL's
  to a tolerance that holds on every CPU."""
  with jax.enable_x64(True):
    args = make_problem('conv', psi=(2, 3), n=6, dtype=jnp.float64)
    opt = _started(MOMENTUM_SGD, args[1])
    grads = {
      k: meta_grad.OptimizerLookahead(MOMENTUM_SGD, k)(
        args[0], inputs(args, 0.0, opt_state1=opt)
      )
      for k in (1, 5)
    }
    assert rel_err(grads[5][0], grads[1][0]) > 1e-3
    control = meta_grad.OptimizerLookahead(MOMENTUM_SGD, 5, entropy_only=True)
    grads2, out = control(args[0], inputs(args, 0.0, opt_state1=opt))
    assert rel_err(grads2, grads[5][1].entropy_grads) == 0.0
    np.testing.assert_allclose(out.meta_loss, grads[5][1].meta_loss, rtol=1e-6)


def test_the_run_builder_uses_the_optimiser_and_checks_the_settings():
  published = contract.build_run(run_config('maxl'), TOY_INFO)
  assert published.estimator is meta_grad.structured  # K = 1: unchanged.
  run = contract.build_run(run_config('maxl', lookahead_steps=5), TOY_INFO)
  assert run.estimator.func is meta_grad.k_step
  assert run.estimator.keywords == {
    'tx': run.tx1,
    'steps': 5,
    'entropy_only': False,
  }
  control = contract.build_run(
    run_config('entropy_only', lookahead_steps=5), TOY_INFO
  )
  assert control.estimator.keywords['entropy_only']
  for bad in (
    {'lookahead_steps': 0},
    {'lookahead_steps': 3, 'meta_grad': 'first_order'},
    {'lookahead_steps': 3, 'lookahead_scale': 10.0},
  ):
    with pytest.raises(UsageError, match='lookahead'):
      contract.build_run(run_config('maxl', **bad), TOY_INFO)


def test_a_run_with_a_five_step_lookahead_trains_g(tmp_path):
  """Through the loop (interleaved steps reuse the first step's gradient)."""
  config = smoke.get_config()
  config.maxl.update(lookahead_steps=5, schedule='interleaved')
  config.train.epochs, config.train.steps_per_epoch = 1, 3
  result = loop.train_and_evaluate(config, str(tmp_path))
  row = json.loads((tmp_path / 'metrics.jsonl').read_text().splitlines()[-1])
  assert row['nonfinite_steps'] == 0 and np.isfinite(row['meta/loss_after'])
  assert 0 < row['signal/meta_share'] < 1
  assert result['test_param_drift'] > 0
