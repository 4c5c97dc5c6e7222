"""The training loop (maxl_jax/training/loop.py) in process.

Runs through the entry point, resumption and the multi-process loop are in
test_run.py, test_resume.py and test_distributed.py.
"""

import json

import jax
import numpy as np
import pytest

from experiments.configs import smoke
from maxl_jax.training import loop, restore

# Tiny runs: the checks are on the loop's rows and states (conftest.py).
pytestmark = pytest.mark.usefixtures('fast_compiles')


def test_implicit_every_k_steps_trains_with_a_held_out_split(tmp_path):
  """AuxiLearn's setting: θ2 by the IFT hypergradient every 2 θ1 steps."""
  config = smoke.get_config()
  config.maxl.update(meta_grad='implicit', schedule='interleaved', meta_every=2)
  config.data.meta_fraction = 0.2
  config.train.epochs, config.train.steps_per_epoch = 1, 4
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert result['steps'] == 4
  _, row = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').open()]
  assert row['nonfinite_steps'] == 0 and np.isfinite(row['meta/meta_loss'])
  info = json.loads((tmp_path / 'dataset.json').read_text())
  assert info['num_meta'] == round(0.2 * 1437)
  assert info['num_train'] == 1437 - info['num_meta']
  restored = restore.restore_run(str(tmp_path))
  assert int(restored.state.step1) == 4 and int(restored.state.step2) == 2


def _rows(workdir) -> list[dict]:
  return [json.loads(x) for x in (workdir / 'metrics.jsonl').open()]


def _smoke_run(tmp_path, method, **config_updates):
  config = smoke.get_config()
  config.method = method
  config.train.epochs, config.train.steps_per_epoch = 1, 3
  for dotted, value in config_updates.items():
    group, field = dotted.split('.')
    config[group][field] = value
  result = loop.train_and_evaluate(config, str(tmp_path))
  return result, _rows(tmp_path)


def test_every_run_starts_with_an_evaluation_at_step_0(finished_smoke_run):
  """Row 0 scores the initial networks: f at chance, g's labels undrifted.

  (On conftest's shared MAXL smoke run: 2 epochs, so 3 rows.)
  """
  workdir, result = finished_smoke_run
  rows = _rows(workdir)
  first, last = rows[0], rows[-1]
  assert (first['epoch'], first['step']) == (0, 0)
  assert first['test/label_drift'] == 0.0
  assert not any(k.startswith(('train/', 'meta/')) for k in first)
  assert last['test/label_drift'] > 0 and result['test_label_drift'] > 0
  # What trains g, per θ2 update, for the published MAXL.
  assert (
    last['signal/grad_meta_norm'] > 0 and last['signal/grad_entropy_norm'] > 0
  )
  assert 0 < last['signal/meta_share'] < 1
  assert -1 <= last['signal/grad_parts_cosine'] <= 1


def test_frozen_generator_never_moves(tmp_path):
  """`frozen`: g's labels train f, θ2 stays at its initialisation while its
  BatchNorm statistics refresh in θ2 steps, as MAXL's do."""
  result, rows = _smoke_run(tmp_path, 'frozen')
  assert rows[-1]['test/label_drift'] == 0.0
  assert rows[-1]['test/param_drift'] == 0.0
  assert rows[-1]['train/loss_aux'] > 0  # g's labels do train f.
  restored = restore.restore_run(str(tmp_path))
  initial = restored.run.create_state(restored.state.label_state)
  same = jax.tree.map(
    lambda a, b: bool(np.array_equal(a, b)), restored.state.theta2,
    initial.theta2,
  )  # fmt: skip
  assert all(jax.tree.leaves(same)) and int(restored.state.step2) == 3
  moved = jax.tree.map(
    lambda a, b: not np.array_equal(a, b), restored.state.model_state2,
    initial.model_state2,
  )  # fmt: skip
  assert all(jax.tree.leaves(moved))


def test_frozen_scores_the_labels_of_maxl_at_learning_rate_0(tmp_path):
  """The statistics-matched null: `frozen` and MAXL whose θ2 steps have
  learning rate 0 train f on the same labels and score the same labels
  (both refresh g's BatchNorm statistics in their θ2 steps)."""
  parity = {'data.hierarchy': 'parity'}  # Hidden fine labels: NMI.
  frozen, frozen_rows = _smoke_run(tmp_path / 'frozen', 'frozen', **parity)
  still, still_rows = _smoke_run(
    tmp_path / 'lr0', 'maxl', **parity, **{'label_opt.lr': 0.0}
  )
  assert frozen['params_sha256'] == still['params_sha256']
  keys = ('test/accuracy', 'test/aux_information', 'test/aux_recovery_nmi',
          'test/label_drift', 'test/param_drift')  # fmt: skip
  for a, b in zip(frozen_rows, still_rows, strict=True):
    np.testing.assert_allclose([a[k] for k in keys], [b[k] for k in keys])
  assert still_rows[-1]['test/label_drift'] == 0.0


def test_entropy_only_has_no_meta_part(tmp_path):
  """`entropy_only`: θ2 moves, by the entropy part alone; J is still logged."""
  result, rows = _smoke_run(tmp_path, 'entropy_only')
  last = rows[-1]
  assert last['signal/grad_meta_norm'] == 0.0 and last['signal/meta_share'] == 0
  assert last['signal/grad_entropy_norm'] > 0 and last['test/label_drift'] > 0
  assert np.isfinite(last['meta/loss_after'])


def test_soft_human_runs_on_a_hierarchy(tmp_path):
  result, rows = _smoke_run(
    tmp_path, 'soft_human', **{'data.hierarchy': 'parity'}
  )
  assert rows[-1]['train/loss_aux'] > 0 and 'test/label_drift' not in rows[-1]
  assert 0 <= result['test_aux_recovery_nmi'] <= 1
