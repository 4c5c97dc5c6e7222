"""The library API (maxl_jax/api.py): pure updates for a user's own loop.

Each update is checked against an independent computation (optax SGD on
the loss written out here, the reference meta-gradient), and the API's
steps against the runner's jitted steps, bitwise: one implementation.
"""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from toy_problems import TOY_INFO, OneHead, TinyConvBN, TwoHeads, run_config

import maxl_jax
from maxl_jax import inverse_hvp, losses, meta_grad
from maxl_jax.errors import UsageError
from maxl_jax.training import carry, config_fields, contract, optim
from maxl_jax.training import mesh as mesh_lib

PSI = (2, 3)
SHAPE = (5, 5, 2)
LR1, LR2 = 0.1, 0.05


# Tiny problems: XLA's optimisations cost more than they save (conftest.py).
pytestmark = pytest.mark.usefixtures('fast_compiles')


def _nets():
  k = sum(PSI)
  return TwoHeads(TinyConvBN(), len(PSI), k), OneHead(TinyConvBN(), k)


def _batch(seed=0, n=6):
  rng = np.random.default_rng(seed)
  return {
    'image': jnp.asarray(rng.normal(size=(n, *SHAPE)), jnp.float32),
    'label': jnp.asarray(rng.integers(0, len(PSI), n), jnp.int32),
  }


@functools.cache
def _maxl(estimator='structured'):
  """One learner per estimator, so that its jitted updates are shared."""
  f, g = _nets()
  return maxl_jax.maxl(
    f, g, PSI, optax.sgd(LR1), optax.sgd(LR2), alpha=LR1, estimator=estimator
  )


@functools.cache
def _jit(name, estimator='structured'):
  return jax.jit(getattr(_maxl(estimator), name))


def _sgd(params, grads, lr):
  return jax.tree.map(lambda p, g: p - lr * g, params, grads)


def _close(a, b, tol=1e-5):
  chex.assert_trees_all_close(a, b, atol=tol, rtol=tol)


def test_init_is_flax_init_of_f_and_g_with_split_keys():
  f, g = _nets()
  learner = _maxl()
  state = learner.init(jax.random.key(3), SHAPE)
  k1, k2 = jax.random.split(jax.random.key(3))
  x = jnp.zeros((1, *SHAPE))
  # Jitted, as `models.init_variables` does: an eager init's initialisers
  # can round differently (1 ulp on some CPUs).
  init = lambda net, key: jax.jit(net.init, static_argnums=2)(key, x, False)  # noqa: E731
  chex.assert_trees_all_equal(state.theta1, init(f, k1)['params'])
  chex.assert_trees_all_equal(state.theta2, init(g, k2)['params'])
  assert int(state.step1) == int(state.step2) == 0


def test_theta1_update_is_sgd_on_the_multi_task_loss_with_g_labels():
  learner, batch = _maxl(), _batch()
  state = learner.init(jax.random.key(0), SHAPE)
  new, m = _jit('theta1_update')(state, batch)
  mask = jnp.asarray([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], bool)
  aux_logits, _ = learner.problem.g_apply(
    state.theta2, state.model_state2, batch['image'], True
  )
  targets = losses.mask_softmax(aux_logits, batch['label'], mask)

  def loss(theta1):
    (pri, aux), _ = learner.problem.f_apply(
      theta1, state.model_state1, batch['image'], True
    )
    total, (lp, la) = losses.multi_task_loss(
      pri, aux, batch['label'], targets, 2.0
    )
    return total, (lp, la)

  (_, (lp, la)), grads = jax.value_and_grad(loss, has_aux=True)(state.theta1)
  _close(new.theta1, _sgd(state.theta1, grads, LR1))
  chex.assert_trees_all_equal(new.theta2, state.theta2)
  np.testing.assert_allclose(m['loss_pri'], lp, rtol=1e-5)
  np.testing.assert_allclose(m['loss_aux'], la, rtol=1e-5)
  assert set(m) == {
    'loss_pri',
    'loss_aux',
    'accuracy',
    'grad_norm',
    'nonfinite',
  }
  assert int(m['nonfinite']) == 0 and int(new.step1) == 1


@pytest.mark.parametrize('estimator', ['structured', 'first_order'])
def test_theta2_update_follows_the_meta_gradient(estimator):
  learner, batch = _maxl(estimator=estimator), _batch(1)
  state = learner.init(jax.random.key(1), SHAPE)
  new, m = jax.jit(learner.theta2_update)(state, batch)
  args = (state.theta1, state.model_state1)
  objective = lambda t2: meta_grad.meta_objective(  # noqa: E731
    learner.problem,
    meta_grad.MetaInputs(*args, t2, state.model_state2, batch, LR1),
  )
  j, grads2 = jax.value_and_grad(objective)(state.theta2)
  tol = 1e-4 if estimator == 'structured' else 5e-2
  _close(new.theta2, _sgd(state.theta2, grads2, LR2), tol)
  chex.assert_trees_all_equal(new.theta1, state.theta1)
  np.testing.assert_allclose(m['meta_loss'], j, rtol=1e-5)
  assert m['aux_hist'].shape == (sum(PSI),)
  assert int(new.step2) == 1 and int(new.step1) == 0


# (method, estimator): MAXL, AuxiLearn's implicit hypergradient (its clip
# on, held-out batch) and the two controls.
DOORS = [
  ('maxl', 'structured'),
  ('maxl', 'implicit'),
  ('entropy_only', 'structured'),
  ('frozen', 'structured'),
]


@pytest.mark.parametrize('method, estimator', DOORS)
def test_api_steps_are_the_runners_steps_bitwise(method, estimator):
  """Both doors assemble the same pieces (`assemble.assemble`): the API's
  θ1 and θ2 updates are the runner's jitted steps, bitwise."""
  config = run_config(method, meta_grad=estimator)
  config.model.widths = (4, 4, 4, 4)
  info = dataclasses.replace(TOY_INFO, image_shape=(16, 16, 1))
  held_out = estimator == 'implicit'
  if held_out:
    config.data.meta_fraction = 0.25
    info = dataclasses.replace(info, num_meta=16)
    config.inverse_hvp.max_grad_norm = 1e-3  # Clips every step.
  run = contract.build_run(config, info)
  per_epoch = config_fields.steps_per_epoch(config, info)
  opt2 = optim.make_optimizer(
    config.label_opt, per_epoch, config.label_opt.name
  )
  solver = {k: v for k, v in config.inverse_hvp.items() if k != 'max_grad_norm'}
  implicit = {
    'inverse': inverse_hvp.make_solver(**solver),
    'max_grad_norm': config.inverse_hvp.max_grad_norm,
  }
  learner = maxl_jax.maxl(
    run.f,
    run.g,
    run.psi,
    run.tx1,
    opt2,
    alpha=run.lr_schedule,
    estimator=estimator,
    method=method,
    gamma=config.maxl.gamma,
    lam=config.maxl.lam,
    meta_signal=False,
    **(implicit if held_out else {}),
  )
  state = learner.init(jax.random.key(config.seed), info.image_shape)
  chex.assert_trees_all_equal(state, run.create_state({}))
  steps = run.jit_steps(mesh_lib.make_mesh())
  rng = np.random.default_rng(0)
  batch, meta_batch = (
    {
      'image': jnp.asarray(rng.normal(size=(16, 16, 16, 1)), jnp.float32),
      'label': jnp.asarray(rng.integers(0, 4, 16), jnp.int32),
      'mask': jnp.ones(16, jnp.float32),
    }
    for _ in range(2)
  )
  meta = (meta_batch,) if held_out else ()
  start = carry.start(run.create_state({}), run.zero_sums())
  runner = steps['meta'](steps['primary'](start, batch), batch, *meta)
  ours, m1 = jax.jit(learner.theta1_update)(state, batch)
  ours, m2 = jax.jit(learner.theta2_update)(ours, batch, *meta)
  chex.assert_trees_all_equal(ours, runner.state)
  # The runner's sums are the steps' own metrics, summed.
  assert float(m1['loss_pri']) == float(runner.sums['train/loss_pri'])
  assert float(m2['meta_loss']) == float(runner.sums['meta/meta_loss'])
  if held_out:  # The clip acted: the hypergradient is longer than it.
    assert float(m2['grad_norm']) > 10 * config.inverse_hvp.max_grad_norm
  moved = jax.tree.leaves(
    jax.tree.map(lambda a, b: jnp.any(a != b), ours.theta2, state.theta2)
  )
  assert any(map(bool, moved)) == (method != 'frozen')


def test_both_doors_raise_the_same_usage_error():
  """A bad name is a UsageError through the API and the runner alike; the
  API's estimator settings belong to their estimator."""
  f, g = _nets()
  maxl = functools.partial(
    maxl_jax.maxl, f, g, PSI, optax.sgd(LR1), optax.sgd(LR2), alpha=LR1
  )
  for field, value in [('balance', 'max'), ('meta_loss', 'mse')]:
    with pytest.raises(UsageError, match=f'{value!r}'):
      maxl(**{field: value})
    with pytest.raises(UsageError, match=f'{value!r}'):
      contract.build_run(run_config(**{field: value}), TOY_INFO)
  with pytest.raises(UsageError, match="'structured' takes no settings"):
    maxl(max_grad_norm=1.0)
  with pytest.raises(UsageError, match='fixed targets'):
    maxl(method='uniform')
  with pytest.raises(UsageError, match='lookahead_steps = 2'):
    maxl(estimator='first_order', lookahead_steps=2)


def test_uniform_human_and_single_use_their_fixed_targets():
  f, _ = _nets()
  batch = _batch(2)
  fine = jnp.asarray([0, 1, 2, 3, 4, 0], jnp.int32)
  batch_h = {**batch, 'fine_label': fine}
  fine_to_primary = [0, 0, 1, 1, 1]
  batch_h['label'] = jnp.asarray(fine_to_primary, jnp.int32)[fine]
  mask = jnp.asarray([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], jnp.float32)
  cases = [
    (maxl_jax.uniform(f, PSI, optax.sgd(LR1)), batch,
     lambda b: mask[b['label']] / mask[b['label']].sum(-1, keepdims=True)),
    (maxl_jax.human(f, fine_to_primary, optax.sgd(LR1)), batch_h,
     lambda b: jax.nn.one_hot(b['fine_label'], 5)),
  ]  # fmt: skip
  for learner, b, targets in cases:
    reference = maxl_jax.fixed_targets(f, PSI, targets, optax.sgd(LR1))
    state = learner.init(jax.random.key(0), SHAPE)
    ours, m = learner.theta1_update(state, b)
    theirs, m_ref = reference.theta1_update(state, b)
    _close(ours.theta1, theirs.theta1, 1e-6)
    np.testing.assert_allclose(m['loss_aux'], m_ref['loss_aux'], rtol=1e-6)
    assert float(m['loss_aux']) > 0
    assert learner.theta2_update is None
  # Single: the primary focal loss alone.
  learner = maxl_jax.single(f, optax.sgd(LR1))
  state = learner.init(jax.random.key(0), SHAPE)
  _, m = learner.theta1_update(state, batch)
  (pri, _), _ = learner.problem.f_apply(
    state.theta1, state.model_state1, batch['image'], True
  )
  expected = losses.primary_loss(pri, batch['label'], 2.0)
  np.testing.assert_allclose(m['loss_pri'], expected, rtol=1e-6)
  assert float(m['loss_aux']) == 0.0


def test_nonfinite_step_is_skipped_and_reported():
  learner = _maxl()
  state = learner.init(jax.random.key(0), SHAPE)
  bad = _batch()
  bad['image'] = bad['image'].at[0, 0, 0, 0].set(jnp.nan)
  update = _jit('theta1_update')
  new, m = update(state, bad)
  assert int(m['nonfinite']) == 1
  chex.assert_trees_all_equal(new.theta1, state.theta1)
  new, m = update(new, _batch())
  assert int(m['nonfinite']) == 0  # Training goes on.
  assert int(new.step1) == 1


def test_evaluate_counts_masked_examples_and_accuracy():
  learner = _maxl()
  state = learner.init(jax.random.key(0), SHAPE)
  batch = _batch(4)
  (logits, _), _ = learner.problem.f_apply(
    state.theta1, state.model_state1, batch['image'], False
  )
  correct = np.asarray(jnp.argmax(logits, -1) == batch['label'])
  sums = learner.evaluate(state, batch)
  assert float(sums['count']) == 6 and float(sums['correct']) == correct.sum()
  mask = jnp.asarray([1, 1, 1, 0, 0, 0], jnp.float32)
  sums = learner.evaluate(state, {**batch, 'mask': mask})
  assert float(sums['count']) == 3
  assert float(sums['correct']) == correct[:3].sum()


def test_implicit_interleaved_with_a_held_out_batch():
  learner = _maxl(estimator='implicit')
  state = learner.init(jax.random.key(0), SHAPE)
  new, m = jax.jit(learner.interleaved_update)(state, _batch(0), _batch(5))
  assert int(new.step1) == 1 and int(new.step2) == 1
  assert {'loss_pri', 'meta_loss', 'aux_hist'} <= set(m)
  assert np.isfinite(float(m['meta_loss']))


def test_bad_psi_and_estimator_are_clear_errors():
  f, g = _nets()
  with pytest.raises(UsageError, match=r'psi\[1\] = 0'):
    maxl_jax.maxl(f, g, [2, 0], optax.sgd(1), optax.sgd(1), alpha=1.0)
  with pytest.raises(UsageError, match='structured'):
    _maxl(estimator='nope')


def test_variants_of_the_meta_signal_reach_the_problem_and_the_metrics():
  f, g = _nets()
  learner = maxl_jax.maxl(
    f, g, PSI, optax.sgd(LR1), optax.sgd(LR2), alpha=LR1,
    meta_loss='ce', lookahead_scale=10.0, balance='normalized',
  )  # fmt: skip
  assert learner.problem.meta_loss is meta_grad.cross_entropy
  state = learner.init(jax.random.key(0), SHAPE)
  new, values = jax.jit(learner.theta2_update)(state, _batch())
  # The lookahead's scale is part of α: the same update, bitwise, as α
  # scaled by hand.
  by_alpha = maxl_jax.maxl(
    f, g, PSI, optax.sgd(LR1), optax.sgd(LR2),
    alpha=lambda t: 10.0 * jnp.asarray(LR1, jnp.float32),
    meta_loss='ce', balance='normalized',
  )  # fmt: skip
  scaled, _ = jax.jit(by_alpha.theta2_update)(state, _batch())
  chex.assert_trees_all_equal(new.theta2, scaled.theta2)
  # Normalized: unit meta part, λ = 0.2 entropy part, share 1 / 1.2.
  np.testing.assert_allclose(values['grad_meta_norm'], 1.0, rtol=1e-4)
  np.testing.assert_allclose(values['meta_share'], 1 / 1.2, rtol=1e-4)
  with pytest.raises(UsageError, match='balance'):
    maxl_jax.maxl(f, g, PSI, optax.sgd(LR1), optax.sgd(LR2), alpha=LR1,
                  balance='max')  # fmt: skip
