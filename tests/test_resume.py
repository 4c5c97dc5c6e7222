"""Checkpoints and resumption, through the entry point (`experiments.run`).

Each test runs the tiny MAXL quickstart run (12 steps, a checkpoint every 2
steps and at each epoch end) in subprocesses and compares it with one
uninterrupted run: a resumed run must end with the same parameters (sha256)
and the same metrics.jsonl.
"""

import json
import os
import pathlib
import shutil
import signal

import entry_point as ep
import pytest

from maxl_jax.training import workdir as workdir_lib


def _metrics(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines()]


def _result(workdir) -> dict:
  return json.loads((pathlib.Path(workdir) / 'result.json').read_text())


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run: (workdir, result, metrics rows)."""
  workdir = tmp_path_factory.mktemp('reference') / 'run'
  proc = ep.run(*ep.TINY, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Starting from scratch' in proc.stderr
  result = _result(workdir)
  assert result['steps'] == ep.TOTAL_STEPS
  assert ep.sha_printed(proc.stdout) == result['params_sha256']
  assert [r['epoch'] for r in _metrics(workdir)] == [0, 1, 2]
  return workdir, result, _metrics(workdir)


def _assert_same_run(workdir, reference):
  _, ref_result, ref_metrics = reference
  assert _result(workdir)['params_sha256'] == ref_result['params_sha256']
  # metrics.jsonl rows have no timing fields: all must be equal.
  assert _metrics(workdir) == ref_metrics


def _copy(reference, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(reference[0], workdir)
  return workdir


def test_sigkill_then_rerun_matches_uninterrupted(reference, tmp_path):
  workdir = tmp_path / 'run'
  proc, _ = ep.interrupt_after_checkpoint(
    workdir, signal.SIGKILL, tmp_path / 'killed'
  )
  assert proc.returncode == -signal.SIGKILL, 'the run ended before the kill'
  assert 0 < max(ep.checkpoint_steps(workdir)) < ep.TOTAL_STEPS

  again = ep.run(*ep.TINY, f'--workdir={workdir}')
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Resuming from the checkpoint at step' in again.stderr
  _assert_same_run(workdir, reference)


def test_sigterm_saves_a_checkpoint_and_rerun_resumes(reference, tmp_path):
  workdir = tmp_path / 'run'
  proc, stderr = ep.interrupt_after_checkpoint(
    workdir, signal.SIGTERM, tmp_path / 'term'
  )
  assert proc.returncode == 143, stderr[-3000:]
  (line,) = [x for x in stderr.splitlines() if x.startswith('preempted:')]
  assert 'rerun the same command to resume' in line
  saved = int(line.split('checkpoint saved at step ')[1].split()[0])
  assert saved == max(ep.checkpoint_steps(workdir))
  assert not (workdir / 'result.json').exists()

  again = ep.run(*ep.TINY, f'--workdir={workdir}')
  assert again.returncode == 0, again.stderr[-3000:]
  assert f'Resuming from the checkpoint at step {saved} ' in again.stderr
  _assert_same_run(workdir, reference)


def test_corrupted_latest_checkpoint_falls_back(reference, tmp_path):
  workdir = _copy(reference, tmp_path)
  steps = ep.checkpoint_steps(workdir)
  assert steps[-1] == ep.TOTAL_STEPS and len(steps) == 3  # checkpoint.keep.
  ep.corrupt_checkpoint(workdir / 'checkpoints' / str(steps[-1]))
  os.remove(workdir / 'result.json')  # As if killed before the end.

  proc = ep.run(*ep.TINY, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  warning = f'Checkpoint at step {steps[-1]} in'
  assert warning in proc.stderr and 'is unusable' in proc.stderr
  assert f'Resuming from the checkpoint at step {steps[-2]} ' in proc.stderr
  _assert_same_run(workdir, reference)


def test_no_usable_checkpoint_is_one_error_line(reference, tmp_path):
  workdir = _copy(reference, tmp_path)
  for step in ep.checkpoint_steps(workdir):
    ep.corrupt_checkpoint(workdir / 'checkpoints' / str(step))
  proc = ep.run(*ep.TINY, f'--workdir={workdir}')
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = ep.error_lines(proc.stderr)
  assert 'none of the checkpoints' in line
  # No traceback at all: not ours, nor the hundreds of Orbax's abandoned
  # reads that could split the error line under load.
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]


def test_finished_run_does_not_train_again(reference, tmp_path):
  workdir = _copy(reference, tmp_path)
  log = workdir / workdir_lib.LOG
  old_log = log.read_text()

  def modified():  # Every file but the log, which the rerun appends to.
    files = [p for p in workdir.rglob('*') if p.is_file() and p != log]
    return {p: p.stat().st_mtime_ns for p in files}

  before = modified()
  proc = ep.run(*ep.TINY, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'This run already finished' in proc.stderr
  new_log = log.read_text()
  assert new_log.startswith(old_log)
  assert 'This run already finished' in new_log[len(old_log) :]
  assert 'Training ' not in new_log[len(old_log) :]  # No step ran.
  assert ep.sha_printed(proc.stdout) == reference[1]['params_sha256']
  assert modified() == before  # Nothing else written.


# A held-out meta split, consumed by every step of the interleaved schedule.
HELD_OUT = (
  '--config.data.meta_fraction=0.2',
  '--config.maxl.schedule=interleaved',
)


def test_held_out_split_resumes_bitwise(reference, tmp_path):
  whole = tmp_path / 'whole'
  proc = ep.run(*ep.TINY, *HELD_OUT, f'--workdir={whole}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _result(whole)['params_sha256'] != reference[1]['params_sha256']

  workdir = tmp_path / 'run'
  proc, _ = ep.interrupt_after_checkpoint(
    workdir, signal.SIGKILL, tmp_path / 'killed', *HELD_OUT
  )
  assert proc.returncode == -signal.SIGKILL, 'the run ended before the kill'
  again = ep.run(*ep.TINY, *HELD_OUT, f'--workdir={workdir}')
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Resuming from the checkpoint at step' in again.stderr
  assert _result(workdir)['params_sha256'] == _result(whole)['params_sha256']
  assert _metrics(workdir) == _metrics(whole)
