"""Restoring a run from its workdir: no data, nothing retrained, read-only.

One tiny MAXL run (`configs/smoke.py`, conftest's `finished_smoke_run`) is
trained in process; the tests rebuild it from `config.json`, `dataset.json`
and its checkpoints.
"""

import json
import re
import shutil

import entry_point as ep
import numpy as np
import pytest

from maxl_jax.errors import UsageError
from maxl_jax.training import evaluation, restore


@pytest.fixture
def finished(finished_smoke_run):
  """(workdir, result) of a finished smoke run (conftest.py)."""
  return finished_smoke_run


def test_restore_gives_the_final_state(finished):
  workdir, result = finished
  restored = restore.restore_run(str(workdir))
  assert restored.step == result['steps'] == ep.TOTAL_STEPS
  state = restored.state  # Paper schedule: every step is a θ1 or a θ2 step.
  assert int(state.step1 + state.step2) == restored.step
  sha, _ = evaluation.params_digest(
    restored.state.theta1, restored.state.theta2
  )
  assert sha == result['params_sha256']
  assert restored.config.method == 'maxl'
  assert restored.run.info.num_classes == 10 and restored.run.g is not None


def test_restore_a_chosen_step_and_a_missing_one(finished):
  workdir, _ = finished
  steps = ep.checkpoint_steps(workdir)
  older = restore.restore_run(str(workdir), step=steps[0])
  assert older.step == steps[0] < ep.TOTAL_STEPS
  assert int(older.state.step1 + older.state.step2) == steps[0]
  with pytest.raises(UsageError, match=re.escape(f'kept steps are {steps}')):
    restore.restore_run(str(workdir), step=5)


def test_restore_skips_a_corrupted_checkpoint_without_deleting_it(
  finished, tmp_path
):
  workdir = tmp_path / 'run'
  shutil.copytree(finished[0], workdir)
  steps = ep.checkpoint_steps(workdir)
  ep.corrupt_checkpoint(workdir / 'checkpoints' / str(steps[-1]))
  restored = restore.restore_run(str(workdir))
  assert restored.step == steps[-2]
  assert ep.checkpoint_steps(workdir) == steps  # Read only.
  with pytest.raises(UsageError, match='cannot be restored'):
    restore.restore_run(str(workdir), step=steps[-1])


def test_not_a_workdir(tmp_path):
  with pytest.raises(UsageError, match='holds no config.json'):
    restore.restore_run(str(tmp_path))


def test_metrics_rows_carry_the_label_usage_histogram(finished):
  workdir, _ = finished

  text = (workdir / 'metrics.jsonl').read_text()
  rows = [json.loads(line) for line in text.splitlines()]
  assert [r['epoch'] for r in rows] == [0, 1, 2]
  for row in rows[1:]:  # Row 0, at step 0, has no training metrics.
    hist = np.asarray(row['meta/aux_hist'])
    assert hist.shape == (30,)  # K = 10 classes x psi 3.
    np.testing.assert_allclose(hist.sum(), 1.0, rtol=1e-5)
