"""benchmarks/device_check.sh: the accelerator check, dry-run on the CPU."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import device_check  # noqa: E402


def test_dry_run_writes_the_table(tmp_path):
  """Tiny sizes, the same code paths: bench_steps, a MAXL run under the
  real loop on synthetic 20-class arrays, the projection, one table."""
  out = tmp_path / 'check'
  env = {**os.environ, 'DEVICE_CHECK_TINY': '1', 'PYTHON': sys.executable}
  env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'  # Compiles twice as fast.
  env.pop('DEVICE_CHECK_WHEELS', None)
  proc = subprocess.run(
    [os.path.join(REPO, 'benchmarks', 'device_check.sh'), str(out)],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  text = (out / 'device_check.md').read_text()
  assert text.startswith('# Device check: 1 x cpu (cpu)')
  assert '| convnet4 | single | none |' in text
  assert 'projected paper run h' in text and 'error' not in text
  report = json.loads((out / 'device_check.json').read_text())
  (bench,) = report['bench']
  assert bench['xla_total_mb'] > 0 and bench['median_ms'] > 0
  maxl = report['maxl']
  assert maxl['steps'] == 2 * 2 * 2  # 2 epochs of 2 θ1 and 2 θ2 steps.
  assert maxl['paper_hours'] > 0 and maxl['steps_per_s'] > 0


def test_projection_from_the_steady_state(tmp_path):
  """Epoch 1 (warming up) is left out; the seconds are running totals."""
  rows = [
    {'epoch': 0, 'step': 0, 'steps_s': 0.0, 'eval_s': 9.0},
    {'epoch': 1, 'step': 100, 'steps_s': 30.0, 'eval_s': 10.0},
    {'epoch': 2, 'step': 200, 'steps_s': 40.0, 'eval_s': 11.0},
    {'epoch': 3, 'step': 300, 'steps_s': 50.0, 'eval_s': 12.0},
  ]
  (tmp_path / 'timing.jsonl').write_text(
    ''.join(json.dumps(r) + '\n' for r in rows)
  )
  (tmp_path / 'result.json').write_text(
    json.dumps({'steps': 300, 'epochs': 3, 'test_accuracy': 0.05})
  )
  args = device_check.parse_args(['--out', str(tmp_path), '--batches=50'])
  summary = device_check.summarize_run(str(tmp_path), 80.0, args)
  assert summary['steps_per_s'] == pytest.approx(100 / 10.0)
  # 500 batches of 100 per paper epoch: 10 s per 50 -> 100 s; the eval of
  # 10,000 images at 1 s per 400 -> 25 s; 200 epochs.
  assert summary['paper_epoch_s'] == pytest.approx(100.0)
  assert summary['paper_eval_s'] == pytest.approx(25.0)
  assert summary['paper_hours'] == pytest.approx(200 * 125 / 3600)
