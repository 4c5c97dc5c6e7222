"""`python -m experiments.sweep`: a config's sweep, skipped when finished."""

import json
import subprocess
import sys

import entry_point as ep

SWEEP_CONFIG = """
from experiments.configs import smoke

def get_config():
  config = smoke.get_config()
  config.train.epochs, config.train.steps_per_epoch = 1, 2
  return config

def sweep():
  return [('single/seed0', {'method': 'single', 'seed': 0}),
          ('maxl/seed1', {'method': 'maxl', 'seed': 1,
                          'maxl.lam': 0.5})]
"""


def _sweep(config, workdir, *args):
  return subprocess.run(
    [sys.executable, '-m', 'experiments.sweep', f'--config={config}',
     f'--workdir={workdir}', *args],
    cwd=ep.REPO, env=ep.env(), capture_output=True, text=True, timeout=300,
  )  # fmt: skip


def test_sweep_runs_each_override_then_skips_finished_runs(tmp_path):
  config = tmp_path / 'tiny_sweep.py'
  config.write_text(SWEEP_CONFIG)
  workdir = tmp_path / 'runs'
  proc = _sweep(config, workdir, '--out=')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr.count('Starting from scratch') == 2
  maxl = json.loads((workdir / 'maxl/seed1/config.json').read_text())
  assert (maxl['method'], maxl['seed'], maxl['maxl']['lam']) == ('maxl', 1, 0.5)
  single = json.loads((workdir / 'single/seed0/result.json').read_text())
  assert single['method'] == 'single' and single['steps'] == 2

  again = _sweep(config, workdir, '--out=', '--only=maxl')
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Starting from scratch' not in again.stderr
  assert 'maxl/seed1' in again.stdout and 'single/seed0' not in again.stdout


def test_bad_sweep_override_is_one_error_line(tmp_path):
  config = tmp_path / 'bad_sweep.py'
  config.write_text(
    SWEEP_CONFIG.replace("'maxl.lam': 0.5", "'maxl.lamda': 0.5")
  )
  proc = _sweep(config, tmp_path / 'runs', '--out=')
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = ep.error_lines(proc.stderr)
  assert "'maxl.lamda'" in line
  assert not (tmp_path / 'runs').exists()  # Checked before any run.
