"""Running metric sums, epoch means and the non-finite guard.

maxl_jax/training/carry.py (on device) and maxl_jax/training/metrics.py
(on the host).
"""

import json
import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from maxl_jax import errors, step_metrics
from maxl_jax.training import carry, metrics


def _means(sums):
  return metrics.epoch_means(jax.tree.map(np.asarray, sums))


def test_epoch_means_are_per_group_means():
  sums = carry.zero_sums(3)
  for loss in (1.0, 3.0):
    step = {'train/loss_pri': loss, 'train/loss_aux': loss + 1,
            'train/accuracy': loss / 4, 'grad_norm': 9.0}  # fmt: skip
    sums = carry.add(sums, step)
  assert _means(sums) == {
    'train/loss_pri': 2.0,
    'train/loss_aux': 3.0,
    'train/accuracy': 0.5,
  }  # No θ2 step: no meta/* or signal/* keys.


def test_the_signal_is_averaged_over_the_steps_that_logged_it():
  sums = carry.zero_sums(3)
  meta = {f'meta/{k}': 1.0 for k in step_metrics.META}
  meta[step_metrics.AUX_HIST] = jnp.array([0.5, 0.5, 0.0])
  sums = carry.add(sums, meta)
  sums = carry.add(sums, {**meta, 'signal/meta_share': 0.75,
                          'signal/grad_meta_norm': 3.0,
                          'signal/grad_entropy_norm': 1.0,
                          'signal/grad_parts_cosine': 0.0})  # fmt: skip
  means = _means(sums)
  assert means['meta/loss_after'] == 1.0 and sums['meta/count'] == 2
  assert means['signal/meta_share'] == 0.75 and sums['signal/count'] == 1
  np.testing.assert_allclose(means[step_metrics.AUX_HIST], [0.5, 0.5, 0])


def _fake_step(state, batch):
  """θ1 moves by the batch; its loss is the batch (NaN: a bad step)."""
  new = {'w': state['w'] - 1.0}
  return new, {'train/loss_pri': batch, 'train/loss_aux': 1.0,
               'train/accuracy': 1.0, 'grad_norm': 3.0}  # fmt: skip


@pytest.mark.parametrize('mode', ['stop', 'skip_step'])
def test_guard_records_the_first_bad_step_by_name(mode):
  step = jax.jit(carry.accumulating(_fake_step, mode))
  start = carry.start({'w': jnp.ones(2)}, carry.named_sums(step_metrics.TRAIN))
  after = step(start, jnp.float32(jnp.nan))
  np.testing.assert_array_equal(after.state['w'], [1.0, 1.0])  # Not applied.
  assert float(after.sums['train/count']) == 0  # Nor summed.
  assert int(after.guard['count']) == 1 and int(after.guard['step']) == 0
  assert np.isnan(after.guard['values']['loss_pri'])
  assert float(after.guard['values']['grad_norm']) == 3.0
  later = step(after, jnp.float32(2.0))
  applied = mode == 'skip_step'  # 'stop' freezes every later step.
  assert float(later.state['w'][0]) == (0.0 if applied else 1.0)
  assert float(later.sums['train/loss_pri']) == (2.0 if applied else 0.0)
  assert int(later.step) == 2
  host = jax.tree.map(np.asarray, later.guard)
  if mode == 'stop':
    with pytest.raises(errors.NonFiniteError, match='step 1: loss_pri=nan'):
      metrics.check_guard(host, mode, last_saved=None)
  else:
    assert metrics.check_guard(host, mode, last_saved=None) == 1


def test_a_guarded_value_is_the_first_name_the_step_returns():
  values = step_metrics.guarded_values(
    {'meta/loss_before': 2.0, 'meta/meta_loss': 3.0, 'grad_norm': 4.0}
  )
  np.testing.assert_array_equal(values, [2.0, 0.0, 3.0, 4.0])
  assert list(step_metrics.GUARDED) == [
    'loss_pri', 'loss_aux', 'meta_loss', 'grad_norm'
  ]  # fmt: skip


def test_skip_nonfinite_keeps_the_state_and_says_so():
  step = step_metrics.skip_nonfinite(_fake_step)
  state, m = step({'w': jnp.ones(2)}, jnp.float32(jnp.inf))
  np.testing.assert_array_equal(state['w'], [1.0, 1.0])
  assert int(m['nonfinite']) == 1
  state, m = step(state, jnp.float32(1.0))
  np.testing.assert_array_equal(state['w'], [0.0, 0.0])
  assert int(m['nonfinite']) == 0


def test_an_earlier_checkpoint_tree_is_upgraded():
  """`signal/` sums were `meta/` sums; a combiner's φ was θ2."""
  template = {
    'phi': 0, 'opt_state_phi': 0, 'step': 0, 'guard': 0,
    'sums': {'meta/count': 0, 'signal/meta_share': 0, 'signal/count': 0},
  }  # fmt: skip
  saved = {
    'theta2': 'phi', 'opt_state2': 'opt', 'model_state2': {}, 'step': 5,
    'guard': 'g', 'label_state': {},
    'sums': {'meta/count': 4.0, 'meta/meta_share': 2.0},
  }  # fmt: skip
  assert carry.upgrade(saved, template) == {
    'phi': 'phi', 'opt_state_phi': 'opt', 'step': 5, 'guard': 'g',
    'sums': {'meta/count': 4.0, 'signal/meta_share': 2.0,
             'signal/count': 4.0},
  }  # fmt: skip
  with pytest.raises(KeyError, match='train/count'):
    carry.upgrade(saved, {**template, 'sums': {'train/count': 0}})


def test_without_tensorflow_rows_are_written_and_tensorboard_skipped_once(
  tmp_path, monkeypatch, caplog
):
  """TensorFlow is optional (setup.cfg's `tensorboard` extra): without it
  a run still writes metrics.jsonl, and says once why it has no events."""
  monkeypatch.setitem(sys.modules, 'tensorflow', None)  # Not importable.
  metrics._say_tensorboard_skipped.cache_clear()
  assert not metrics.tensorboard_available()
  caplog.set_level(logging.WARNING)
  row = {'epoch': 1, 'step': 3, 'train/loss_pri': 0.5}
  for run in ('single', 'maxl'):  # Two runs of one process.
    workdir = epath.Path(tmp_path) / run
    workdir.mkdir()
    writer = metrics.EpochWriter(workdir, 0, lead=True, tensorboard=True)
    writer.write(3, row, {'steps_s': 1.0})
    writer.flush()
    lines = (workdir / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(x) for x in lines] == [row]
    assert not list(workdir.glob('events.out.tfevents.*'))
  said = [r for r in caplog.records if 'skipped' in r.getMessage()]
  assert len(said) == 1
  assert 'maxl_jax[tensorboard]' in said[0].getMessage()
