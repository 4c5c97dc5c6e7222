"""The run builder, the schedules and the metrics, in process (no data).

A run is built from a config and a `DatasetInfo` alone: its abstract state
must describe the real initial state exactly, and building it must import
no data library.
"""

import json
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import smoke
from maxl_jax import errors, hierarchy
from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError
from maxl_jax.networks import models
from maxl_jax.training import assembly, loop, metrics, restore, schedule
from maxl_jax.training import state as state_lib

INFO = DatasetInfo('toy', 4, (32, 32, 1), num_train=64, num_test=8)


def _config(method='maxl', **maxl):
  config = smoke.get_config()
  config.method = method
  config.model.head_hidden = 8
  config.maxl.update(maxl)
  return config


@pytest.mark.parametrize('method', ['single', 'maxl', 'random', 'uniform'])
def test_abstract_state_describes_the_initial_state(method):
  run = assembly.build_run(_config(method), INFO)
  real = run.init_state({})
  abstract = run.abstract_state()
  chex.assert_trees_all_equal_shapes_and_dtypes(real, abstract)
  assert jax.tree.structure(real) == jax.tree.structure(abstract)
  assert (run.g is not None) == (method == 'maxl')
  assert run.label_source.num_aux == (0 if method == 'single' else 4 * 3)
  assert run.schedule.name == ('paper' if method == 'maxl' else 'single')


def test_kmeans_abstract_state_needs_no_images():
  config = _config('kmeans')
  config.kmeans.update(ae_widths=(4, 8), latent_dim=6)
  run = assembly.build_run(config, INFO)
  label_state = run.abstract_state().label_state
  assert label_state['assign'].shape == (INFO.num_train,)
  assert label_state['centroids'].shape == (12, 6)
  params = run.label_source.ae.init(
    jax.random.key(0), jnp.zeros((1, 32, 32, 1))
  )['params']
  chex.assert_trees_all_equal_shapes_and_dtypes(
    label_state['ae_params'], params
  )


def test_the_same_config_builds_the_same_initial_state():
  a = assembly.build_run(_config(), INFO).init_state({})
  b = assembly.build_run(_config(), INFO).init_state({})
  chex.assert_trees_all_equal(a, b)


def test_steps_per_epoch_and_bad_values():
  config = _config()
  assert assembly.steps_per_epoch(config, INFO) == 3  # Capped by the config.
  config.train.steps_per_epoch = 0
  assert assembly.steps_per_epoch(config, INFO) == 64 // 16
  config.data.batch_size = 100
  with pytest.raises(UsageError, match='exceeds the 64 training examples'):
    assembly.steps_per_epoch(config, INFO)
  with pytest.raises(UsageError, match="config.maxl.schedule = 'nope'"):
    assembly.build_run(_config(schedule='nope'), INFO)
  with pytest.raises(UsageError, match='label hierarchy'):
    assembly.build_run(_config('human'), INFO)


def test_building_a_run_imports_no_data_library():
  code = (
    'import sys; import maxl_jax; import maxl_jax.training.assembly; '
    "bad = [m for m in sys.modules if m.split('.')[0] in "
    "('tensorflow', 'tensorflow_datasets', 'orbax', 'clu', 'sklearn')]; "
    'print(bad); assert not bad'
  )
  proc = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


# ------------------------------------------------------------- schedules ---


def test_paper_schedule_alternates_passes():
  plan = schedule.Schedule('paper', steps_per_epoch=3)
  assert plan.epoch_steps == 6
  kinds = [plan.kind(s) for s in range(12)]
  assert kinds == (['primary'] * 3 + ['meta'] * 3) * 2
  assert plan.kinds() == ('primary', 'meta')


def test_interleaved_schedule_updates_theta2_every_k_steps():
  every = schedule.Schedule('interleaved', steps_per_epoch=4)
  assert [every.kind(s) for s in range(4)] == ['interleaved'] * 4
  assert every.epoch_steps == 4 and every.kinds() == ('interleaved',)
  k3 = schedule.Schedule('interleaved', steps_per_epoch=4, meta_every=3)
  kinds = [k3.kind(s) for s in range(9)]
  assert [s for s, k in enumerate(kinds) if k == 'interleaved'] == [2, 5, 8]
  assert k3.kinds() == ('primary', 'interleaved')


def test_single_schedule_and_bad_meta_every():
  assert {schedule.Schedule('single', 5).kind(s) for s in range(10)} == {
    'primary'
  }
  with pytest.raises(UsageError, match='meta_every'):
    schedule.Schedule('paper', 5, meta_every=2)
  with pytest.raises(UsageError, match='meta_every'):
    schedule.Schedule('interleaved', 5, meta_every=0)


# --------------------------------------------------------------- metrics ---


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
    sums = metrics.add_meta(sums, out)
  means = metrics.epoch_means(jax.tree.map(np.asarray, sums))
  np.testing.assert_allclose(means[metrics.AUX_HIST], [0.25, 0.25, 0.5])
  assert means['meta/loss_after'] == 0.5
  assert means['meta/aux_usage'] == pytest.approx((2 / 3 + 1 / 3) / 2)


def _guard_state():
  zero = jnp.zeros((), jnp.int32)
  return state_lib.MaxlState(
    step=zero, step1=zero, step2=zero, theta1={'w': jnp.ones(2)},
    state1={}, opt_state1=(), theta2={}, state2={}, opt_state2=(),
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


# -------------------------------------------------------- small defects ---


def test_head_logits_are_the_wider_of_float32_and_the_compute_dtype():
  with jax.enable_x64(True):
    for dtype, expected in (
      (jnp.float64, jnp.float64),
      (jnp.float32, jnp.float32),
      (jnp.bfloat16, jnp.float32),
    ):
      head = models.Head(3, dtype=dtype)
      h = jnp.ones((2, 4), dtype)
      logits = head.apply(head.init(jax.random.key(0), h), h)
      assert logits.dtype == expected, (dtype, logits.dtype)


def test_uniform_targets_spread_evenly_over_the_class_range():
  run = assembly.build_run(_config('uniform', psi_per_class=2), INFO)
  psi = run.psi
  batch = {'label': jnp.asarray([0, 3, 1])}
  targets = run.label_source.targets({}, None, None, batch, problem=None)
  mask = hierarchy.class_mask(psi)
  np.testing.assert_allclose(targets, mask[[0, 3, 1]] / 2.0)


# ------------------------------------------------ implicit, end to end ---


def test_implicit_every_k_steps_trains_with_a_held_out_split(tmp_path):
  """AuxiLearn's setting: θ2 by the IFT hypergradient every 2 θ1 steps."""
  config = smoke.get_config()
  config.maxl.update(meta_grad='implicit', schedule='interleaved', meta_every=2)
  config.data.meta_fraction = 0.2
  config.train.epochs, config.train.steps_per_epoch = 1, 4
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    result = loop.train_and_evaluate(config, str(tmp_path))
  finally:
    jax.config.update('jax_disable_most_optimizations', False)
  assert result['steps'] == 4
  (row,) = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').open()]
  assert row['nonfinite_steps'] == 0 and np.isfinite(row['meta/meta_loss'])
  info = json.loads((tmp_path / 'dataset.json').read_text())
  assert info['num_meta'] == round(0.2 * 1437)
  assert info['num_train'] == 1437 - info['num_meta']
  restored = restore.restore_run(str(tmp_path))
  assert int(restored.state.step1) == 4 and int(restored.state.step2) == 2
