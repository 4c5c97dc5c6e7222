"""Step functions: what each update changes, the guard, compile-once."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import make_problem
from jax.flatten_util import ravel_pytree

from maxl_jax import meta_grad
from maxl_jax.labels.base import masked_targets_ok
from maxl_jax.labels.generated import GeneratedSource
from maxl_jax.problem import generated_labels
from maxl_jax.training import state as state_lib
from maxl_jax.training import step_fns

ALPHA = 0.1


def _setup(psi=(2, 3), on_nonfinite='stop'):
  problem, theta1, state1, theta2, state2, batch = make_problem(
    'conv', psi, n=6
  )
  tx1, tx2 = optax.sgd(0.1), optax.sgd(0.05)
  state = state_lib.initial_state(
    theta1, state1, theta2, state2, tx1, tx2, {}, int(sum(psi))
  )
  source = GeneratedSource(psi=np.asarray(psi))
  deps = {
    'problem': problem,
    'estimator': meta_grad.unrolled,
    'tx2': tx2,
    'alpha_schedule': lambda count: ALPHA,
    'on_nonfinite': on_nonfinite,
  }
  primary = functools.partial(
    step_fns.primary_step, problem=problem, label_source=source, tx1=tx1,
    on_nonfinite=on_nonfinite,
  )  # fmt: skip
  return state, batch, primary, deps, tx1


def _changed(a, b):
  return float(jnp.max(jnp.abs(ravel_pytree(a)[0] - ravel_pytree(b)[0]))) > 0


def test_meta_step_moves_only_theta2():
  state, batch, _, deps, _ = _setup()
  new = step_fns.meta_step(state, batch, **deps)
  assert _changed(new.theta2, state.theta2)
  chex.assert_trees_all_equal(new.theta1, state.theta1)
  chex.assert_trees_all_equal(new.state1, state.state1)  # f's BN stats.
  assert int(new.step2) == 1 and int(new.step1) == 0 and int(new.step) == 1
  assert float(new.sums['meta/count']) == 1.0


def test_generator_labels_stay_in_mask_after_meta_steps():
  state, batch, _, deps, _ = _setup(psi=(1, 4, 2))
  for _ in range(3):
    state = step_fns.meta_step(state, batch, **deps)
  probs, _ = generated_labels(
    deps['problem'], state.theta2, state.state2, batch
  )
  assert bool(masked_targets_ok(probs, batch['label'], deps['problem'].mask))
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_interleaved_theta1_update_equals_primary_step():
  """The shared lookahead gives the θ1 step exactly its own gradient."""
  state, batch, primary, deps, tx1 = _setup()
  both = step_fns.interleaved_step(state, batch, tx1=tx1, **deps)
  only_theta1 = primary(state, batch)
  only_theta2 = step_fns.meta_step(state, batch, **deps)
  chex.assert_trees_all_close(both.theta1, only_theta1.theta1, rtol=1e-5)
  chex.assert_trees_all_close(both.state1, only_theta1.state1, rtol=1e-5)
  chex.assert_trees_all_close(both.theta2, only_theta2.theta2, rtol=1e-5)
  assert int(both.step1) == 1 and int(both.step2) == 1


@pytest.mark.parametrize('mode', ['stop', 'skip_step'])
def test_nonfinite_batch_is_not_applied(mode):
  state, batch, primary, deps, _ = _setup(on_nonfinite=mode)
  bad = dict(batch, image=batch['image'].at[0, 0, 0, 0].set(jnp.nan))
  after_bad = primary(state, bad)
  chex.assert_trees_all_equal(after_bad.theta1, state.theta1)
  assert int(after_bad.guard['count']) == 1
  assert int(after_bad.guard['step']) == 0
  values = np.asarray(list(after_bad.guard['values'].values()))
  assert not np.all(np.isfinite(values))
  after_good = primary(after_bad, batch)
  # `stop` freezes the state until the host stops the run; `skip_step` goes on.
  assert _changed(after_good.theta1, state.theta1) == (mode == 'skip_step')
  assert int(after_good.step) == 2


def test_steps_compile_once():
  state, batch, primary, deps, _ = _setup()
  step = jax.jit(chex.assert_max_traces(lambda s, b: primary(s, b), n=1))
  for _ in range(3):
    state = step(state, batch)
  meta = jax.jit(
    chex.assert_max_traces(lambda s, b: step_fns.meta_step(s, b, **deps), n=1)
  )
  for _ in range(2):
    state = meta(state, batch)
  assert int(state.step) == 5


def test_eval_step_counts_only_real_examples():
  state, batch, _, deps, _ = _setup()
  mask = jnp.array([1, 1, 1, 0, 0, 0], jnp.float32)
  out = step_fns.eval_step(
    state, dict(batch, mask=mask), problem=deps['problem']
  )
  (logits, _), _ = deps['problem'].f_apply(
    state.theta1, state.state1, batch['image'], False
  )
  correct = np.sum(np.argmax(logits[:3], -1) == np.asarray(batch['label'][:3]))
  assert float(out['count']) == 3.0
  assert float(out['correct']) == correct
