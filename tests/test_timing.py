"""Where a run's wall clock goes: the ledger's arithmetic, and a real run's."""

import json
import os
import subprocess
import sys

import entry_point as ep
import pytest

from experiments.configs import smoke
from maxl_jax.training import loop, timing

# Tiny programs: XLA's optimisations cost more compile time than they save.
pytestmark = pytest.mark.usefixtures('fast_compiles')


class _Clocks:
  """A wall clock and a compilation clock that the test moves by hand."""

  def __init__(self, monkeypatch):
    self.wall = self.compiled = 0.0
    monkeypatch.setattr(timing.time, 'perf_counter', lambda: self.wall)
    monkeypatch.setattr(timing.compilation, 'seconds', lambda: self.compiled)


def test_charges_add_up_to_the_wall_clock_with_compilation_apart(monkeypatch):
  clocks = _Clocks(monkeypatch)
  ledger = timing.Ledger.open(since=0.0)
  clocks.wall = 5.0  # Start-up, 2 s of it compiling.
  clocks.compiled = 2.0
  ledger = ledger.charge('startup')
  clocks.wall = 15.0  # Steps, 1 s compiling.
  clocks.compiled = 3.0
  ledger = ledger.charge('steps')
  clocks.wall = 16.5
  ledger = ledger.charge('eval')
  clocks.wall = 17.0
  ledger = ledger.charge('checkpoint')
  assert ledger.seconds == pytest.approx(
    {
      'startup': 3.0,
      'compile': 3.0,
      'steps': 9.0,
      'eval': 1.5,
      'checkpoint': 0.5,
      'other': 0.0,
    }
  )
  summary = ledger.summary()
  assert summary['wall_s'] == pytest.approx(17.0)
  assert summary['steps_share'] == pytest.approx(9.0 / 17.0)
  shares = sum(summary[f'{p}_share'] for p in timing.PHASES)
  assert shares == pytest.approx(1.0)
  assert timing.describe(summary).startswith('wall 17 s: steps 53%')


def test_a_resumed_session_adds_to_the_carried_totals(monkeypatch):
  clocks = _Clocks(monkeypatch)
  carried = {'steps_s': 10.0, 'compile_s': 4.0, 'train_s': 99.0}
  clocks.wall, clocks.compiled = 100.0, 50.0
  ledger = timing.Ledger.open(since=98.0, carried=carried)
  clocks.wall = 103.0
  ledger = ledger.charge('steps')
  assert ledger.row()['steps_s'] == pytest.approx(15.0)
  assert ledger.row()['compile_s'] == pytest.approx(4.0)
  assert set(ledger.row()) == {f'{p}_s' for p in timing.PHASES}


def test_the_process_age_is_that_of_this_process():
  age = timing.process_age_s()
  assert 0.0 < age < 24 * 3600  # This pytest process started before now.
  later = timing.process_age_s()
  assert later >= age


def test_a_run_accounts_for_its_wall_clock(tmp_path):
  started = timing.process_start()
  config = smoke.get_config()
  config.train.epochs = 1  # 6 steps: every phase, checkpoints included.
  config.log.tensorboard = True  # The event files' writer is timed too.
  result = loop.train_and_evaluate(config, str(tmp_path), started=started)
  summary = result['timing']
  phases = sum(summary[f'{p}_s'] for p in timing.PHASES)
  assert summary['wall_s'] == pytest.approx(phases)
  for p in timing.PHASES:
    assert summary[f'{p}_s'] >= 0.0, p
  # Every second since this process started is in some phase (start-up
  # holds the session's imports and earlier tests); /proc counts in ticks.
  age = timing.process_age_s()
  assert age - 2.0 <= summary['wall_s'] <= age + 0.05
  assert summary['steps_s'] > 0 and summary['eval_s'] > 0
  assert summary['checkpoint_s'] > 0
  rows = [
    json.loads(line)
    for line in (tmp_path / 'timing.jsonl').read_text().splitlines()
  ]
  for key in ('steps_s', 'eval_s', 'compile_s', 'startup_s'):
    totals = [r[key] for r in rows]
    assert totals == sorted(totals), key  # Running totals.
  assert rows[-1]['steps_s'] <= summary['steps_s']
  assert os.path.exists(tmp_path / 'result.json')
  assert list(tmp_path.glob('events.out.tfevents.*'))  # log.tensorboard


_NO_TENSORBOARD = """
import sys
from experiments.configs import smoke
from maxl_jax.training import loop
config = smoke.get_config()
config.log.tensorboard = False
config.train.epochs = 1
loop.train_and_evaluate(config, sys.argv[1])
print('tensorflow imported:', 'tensorflow' in sys.modules)
"""


def test_without_tensorboard_a_run_never_imports_tensorflow(tmp_path):
  """Offline data and no TensorBoard: ~4 s and ~0.6 GB of start-up saved."""
  proc = subprocess.run(
    [sys.executable, '-c', _NO_TENSORBOARD, str(tmp_path)],
    env=ep.env(),  # Its compiles as fast as the entry points' (cached).
    cwd=ep.REPO,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'tensorflow imported: False' in proc.stdout
  assert not list(tmp_path.glob('events.out.tfevents.*'))
  assert (tmp_path / 'result.json').exists()
