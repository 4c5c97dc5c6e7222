"""Running metric sums, epoch means and the non-finite guard.

maxl_jax/training/metrics.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxl_jax import errors
from maxl_jax import state as state_lib
from maxl_jax.training import metrics


def test_epoch_means_are_per_group_means():
  sums = metrics.zero_sums(3)
  sums = metrics.add_train(
    sums, {'loss_pri': 1.0, 'loss_aux': 2.0, 'accuracy': 0.5}
  )
  sums = metrics.add_train(
    sums, {'loss_pri': 3.0, 'loss_aux': 4.0, 'accuracy': 1.0}
  )
  means = metrics.epoch_means(jax.tree.map(np.asarray, sums))
  assert means == {
    'train/loss_pri': 2.0,
    'train/loss_aux': 3.0,
    'train/accuracy': 0.75,
  }  # No θ2 step: no meta/* keys.


def test_epoch_means_write_the_label_usage_histogram():
  class Out:  # The MetaOutput fields that the metrics read.
    loss_pri_before, loss_pri_after, meta_loss, entropy = 1.0, 0.5, 0.2, 2.0

  sums = metrics.zero_sums(3)
  for probs in ([[1.0, 0, 0], [0, 1.0, 0]], [[0, 0, 1.0], [0, 0, 1.0]]):
    out = Out()
    out.aux_probs = jnp.asarray(probs)
    parts = ({'w': jnp.array([3.0, 0.0])}, {'w': jnp.array([0.0, 1.0])})
    sums = metrics.add_meta(sums, out, parts)
  means = metrics.epoch_means(jax.tree.map(np.asarray, sums))
  np.testing.assert_allclose(means[metrics.AUX_HIST], [0.25, 0.25, 0.5])
  assert means['meta/loss_after'] == 0.5
  assert means['meta/grad_meta_norm'] == 3 and means['meta/meta_share'] == 0.75
  assert means['meta/grad_parts_cosine'] == 0  # Orthogonal parts.
  assert means['meta/aux_usage'] == pytest.approx((2 / 3 + 1 / 3) / 2)


def _guard_state():
  zero = jnp.zeros((), jnp.int32)
  return state_lib.MaxlState(
    step=zero, step1=zero, step2=zero, theta1={'w': jnp.ones(2)},
    model_state1={}, opt_state1=(), theta2={}, model_state2={}, opt_state2=(),
    label_state={}, sums={}, guard=metrics.zero_guard(),
  )  # fmt: skip


@pytest.mark.parametrize('mode', ['stop', 'skip_step'])
def test_guard_records_the_first_bad_step_by_name(mode):
  old = _guard_state()
  new = old.replace(theta1={'w': jnp.zeros(2)})
  bad = {'loss_pri': jnp.nan, 'loss_aux': 1.0, 'grad_norm': 3.0}
  after = metrics.guard_update(old, new, bad, mode)
  np.testing.assert_array_equal(after.theta1['w'], [1.0, 1.0])  # Not applied.
  assert int(after.guard['count']) == 1 and int(after.guard['step']) == 0
  assert np.isnan(after.guard['values']['loss_pri'])
  assert float(after.guard['values']['grad_norm']) == 3.0
  good = {'loss_pri': 1.0, 'loss_aux': 1.0, 'grad_norm': 1.0}
  later = metrics.guard_update(after, new.replace(step=after.step), good, mode)
  applied = mode == 'skip_step'  # 'stop' freezes every later step.
  assert float(later.theta1['w'][0]) == (0.0 if applied else 1.0)
  host = jax.tree.map(np.asarray, later.guard)
  if mode == 'stop':
    with pytest.raises(errors.NonFiniteError, match='step 1: loss_pri=nan'):
      metrics.check_guard(host, mode, last_saved=None)
  else:
    assert metrics.check_guard(host, mode, last_saved=None) == 1
