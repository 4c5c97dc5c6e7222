"""One prepared accelerator check: step benchmarks, a VGG-16 MAXL run, the
projection of the paper's CIFAR-100 run; one markdown table.

Run it through `benchmarks/device_check.sh OUT_DIR` (which installs
carried wheels first). Nothing is downloaded: the data are CIFAR-100-shaped
synthetic arrays (`data.name=arrays`: 32x32x3 uint8, 20 primary classes,
ψ = 5 per class, so K = 100 as the paper's 20 -> 100 run).

1. `bench_steps.py` for every backbone (ConvNet-4, VGG-16, ResNet-32):
   median ms per step, XLA's memory analysis, peak RSS and the device
   allocator's peak; VGG-16's exact meta step also with `model.remat=blocks`.
2. A VGG-16 MAXL run under the real loop (`python -m experiments.run` with
   `experiments/configs/cifar100.py`): `--epochs` epochs of `--batches`
   batches of 100, i.e. 2 x epochs x batches steps (a θ1 pass and a θ2 pass
   per epoch, the paper's schedule).
3. The paper's run (200 epochs of 50,000 images, batch 100, a 10,000-image
   test set evaluated every epoch) projected from that run's steady state:
   the epochs after the first (which compiles), from `timing.jsonl`.

Each part has a deadline (the whole check stays within `--budget_s`); a part
out of time is reported as such and the table is still written.

COMMAND:
  benchmarks/device_check.sh /tmp/device_check         # on the device
  DEVICE_CHECK_TINY=1 benchmarks/device_check.sh /tmp/dc  # CPU dry run
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, 'benchmarks', 'bench_steps.py')
# The paper's CIFAR-100 run (DESIGN §3): 200 epochs, 500 batches of 100.
PAPER = {'epochs': 200, 'train': 50_000, 'test': 10_000, 'batch': 100}
PRIMARY, PSI = 20, 5  # CIFAR-100's 20 superclasses, 5 auxiliary each.

# (backbone, kind, remat) of the step benchmarks, in order of priority; each
# is one bench_steps.py process (a compile of tens of seconds on a GPU).
FULL_BENCH = [
  ('vgg16', 'single', 'none'),
  ('vgg16', 'meta_structured', 'none'),
  ('vgg16', 'meta_structured', 'blocks'),
  ('convnet4', 'meta_structured', 'none'),
  ('resnet32', 'meta_structured', 'none'),
  ('vgg16', 'theta1', 'none'),
  ('vgg16', 'meta_unrolled', 'none'),
  ('convnet4', 'single', 'none'),
  ('resnet32', 'single', 'none'),
]
TINY_BENCH = [('convnet4', 'single', 'none')]
MAXL_RESERVE_S = 200  # Kept for the MAXL run (compiles 3 programs).
MAX_BENCH_S = 120  # At most this per step benchmark.


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--out', required=True, help='Output directory.')
  p.add_argument('--tiny', action='store_true', help='CPU dry run sizes.')
  p.add_argument('--budget_s', type=float, default=450.0)
  p.add_argument('--steps', type=int, default=None, help='Timed steps.')
  p.add_argument('--epochs', type=int, default=None, help='MAXL run epochs.')
  p.add_argument('--batches', type=int, default=None, help='Per epoch.')
  args = p.parse_args(argv)
  tiny = args.tiny
  args.steps = args.steps or (1 if tiny else 10)
  args.epochs = args.epochs or (2 if tiny else 3)
  args.batches = args.batches or (2 if tiny else 50)
  args.batch = 8 if tiny else PAPER['batch']
  return args


class Deadline:
  """Seconds left of the whole check."""

  def __init__(self, budget_s):
    self.end = time.time() + budget_s

  def left(self):
    return self.end - time.time()


def environment():
  """(one line naming the machine, dict for the JSON)."""
  import jax

  devices = jax.devices()
  kind = devices[0].device_kind
  env = {
    'jax': jax.__version__,
    'backend': jax.default_backend(),
    'devices': len(devices),
    'device_kind': kind,
    'cpus': os.cpu_count(),
  }
  line = (
    f'{len(devices)} x {kind} ({jax.default_backend()}), '
    f'{os.cpu_count()} CPUs, jax {jax.__version__}'
  )
  return line, env


def _run(cmd, timeout):
  """(returncode, stdout, stderr) of cmd in its own process group, which is
  killed whole (bench_steps' children too) after `timeout` seconds.

  Raises:
    subprocess.TimeoutExpired: after killing it.
  """
  proc = subprocess.Popen(
    cmd,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    cwd=REPO,
    start_new_session=True,
  )
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    raise
  return proc.returncode, out, err


def run_bench(args, deadline, log):
  """The step benchmarks: a list of bench_steps.py result dicts."""
  results = []
  jobs = TINY_BENCH if args.tiny else FULL_BENCH
  reserve = min(MAXL_RESERVE_S, 0.4 * deadline.left())
  for backbone, kind, remat in jobs:
    share = min(MAX_BENCH_S, deadline.left() - reserve)
    path = os.path.join(args.out, f'bench_{backbone}_{kind}_{remat}.json')
    cmd = [sys.executable, BENCH, f'--backbones={backbone}', f'--kinds={kind}']
    cmd += [f'--remat={remat}', f'--steps={args.steps}', f'--json={path}']
    cmd += [f'--batch={args.batch}', '--quiet_wait=0']
    cmd += ['--warmup=0' if args.tiny else '--warmup=2']
    if share < 20:
      log(f'bench {backbone} {kind} {remat}: skipped (out of time).')
      results.append(
        {'backbone': backbone, 'kind': kind, 'remat': remat, 'error': 'no time'}
      )
      continue
    start = time.time()
    try:
      rc, _, err = _run(cmd, share)
      error = None if rc == 0 else err[-400:]
    except subprocess.TimeoutExpired:
      error = f'timed out after {share:.0f} s'
    log(f'bench {backbone} {kind} remat={remat}: {time.time() - start:.0f} s')
    if os.path.exists(path):
      with open(path) as f:
        results += json.load(f)['results']
    else:
      error = error or 'no result'
      results.append(
        {'backbone': backbone, 'kind': kind, 'remat': remat, 'error': error}
      )
  return results


def synthetic_cifar100(path, num_train, num_test, seed=0):
  """CIFAR-100-shaped arrays (32x32x3 uint8, 20 classes) in an npz."""
  rng = np.random.default_rng(seed)
  np.savez(
    path,
    x_train=rng.integers(0, 256, (num_train, 32, 32, 3), np.uint8),
    y_train=np.arange(num_train) % PRIMARY,
    x_test=rng.integers(0, 256, (num_test, 32, 32, 3), np.uint8),
    y_test=np.arange(num_test) % PRIMARY,
    class_names=np.array([f'class_{c}' for c in range(PRIMARY)]),
  )


def run_maxl(args, deadline, log):
  """The MAXL run under the real loop: a dict of its timings, or error."""
  data = os.path.join(args.out, 'synthetic_cifar100.npz')
  num_train = args.batches * args.batch
  num_test = 4 * args.batch
  synthetic_cifar100(data, num_train, num_test)
  workdir = os.path.join(args.out, 'maxl_run')
  overrides = {
    'data.name': 'arrays',
    'data.path': data,
    'data.batch_size': args.batch,
    'data.eval_batch_size': args.batch,
    'train.epochs': args.epochs,
    'train.steps_per_epoch': args.batches,
    'checkpoint.every_steps': 10**9,  # Only the epoch-end ones.
    'checkpoint.every_epochs': args.epochs,
    'log.progress_every_steps': args.batches,
  }
  if args.tiny:  # A small trunk: the dry run checks the plumbing.
    overrides.update({'model.name': 'convnet4', 'model.widths': '4,4,4,4'})
    overrides['model.head_hidden'] = 8
  cmd = [sys.executable, '-m', 'experiments.run']
  cmd += ['--config=experiments/configs/cifar100.py', f'--workdir={workdir}']
  cmd += [f'--config.{k}={v}' for k, v in overrides.items()]
  timeout = deadline.left() - 5
  if timeout < 30:
    return {'error': 'no time left'}
  start = time.time()
  try:
    rc, out, err = _run(cmd, timeout)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout:.0f} s'}
  wall = time.time() - start
  log(f'maxl run: {wall:.0f} s, rc {rc}')
  with open(os.path.join(args.out, 'maxl_run.log'), 'w') as f:
    f.write(out + err)
  if rc:
    return {'error': (err or out)[-400:]}
  return summarize_run(workdir, wall, args)


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def summarize_run(workdir, wall, args):
  """Steady-state speed of the run and the paper-run projection."""
  timing = _rows(os.path.join(workdir, 'timing.jsonl'))
  with open(os.path.join(workdir, 'result.json')) as f:
    result = json.load(f)
  rows = sorted((r for r in timing if r.get('epoch', 0) >= 1),
                key=lambda r: r['epoch'])  # fmt: skip
  steps_per_epoch = result['steps'] // max(1, result['epochs'])
  # Running totals (`timing.Ledger`, compilation apart); epoch 1 warms
  # up, so the steady state is epochs 2.. (epoch 1 alone if that is all
  # there is). The run evaluates every epoch.
  first = rows[0] if len(rows) > 1 else {'steps_s': 0.0, 'eval_s': 0.0}
  epochs = max(1, len(rows) - 1)
  train_s = (rows[-1]['steps_s'] - first['steps_s']) / epochs
  eval_s = (rows[-1]['eval_s'] - first['eval_s']) / epochs
  steps_per_s = steps_per_epoch / train_s
  batches = PAPER['train'] // PAPER['batch']
  epoch_s = train_s * (batches / args.batches)
  eval_paper_s = eval_s * (PAPER['test'] / (4 * args.batch))
  return {
    'steps': result['steps'],
    'epochs': result['epochs'],
    'wall_s': wall,
    'compile_s': rows[-1].get('compile_s') if rows else None,
    'steps_per_s': steps_per_s,
    'epoch_s': train_s,
    'eval_s': eval_s,
    'paper_epoch_s': epoch_s,
    'paper_eval_s': eval_paper_s,
    'paper_hours': PAPER['epochs'] * (epoch_s + eval_paper_s) / 3600,
    'test_accuracy': result.get('test_accuracy'),
  }


def _f(value, spec):
  return '-' if value is None else format(value, spec)


def table(machine, bench, maxl, args):
  """The check's one markdown document."""
  lines = [f'# Device check: {machine}', '']
  lines += [
    f'Step benchmarks: batch {args.batch}, {args.steps} timed steps, '
    'memory in MB (XLA: the compiled buffer assignment; device peak: the '
    "allocator's `peak_bytes_in_use`, the process high-water mark of "
    'everything run before it).',
    '',
    '| backbone | kind | remat | median ms | compile s | XLA temp |'
    ' XLA total | device peak | peak RSS |',
    '|---|---|---|--:|--:|--:|--:|--:|--:|',
  ]
  for r in bench:
    head = f'| {r["backbone"]} | {r["kind"]} | {r.get("remat", "none")} |'
    if 'error' in r:
      lines.append(f'{head} error: {r["error"][-60:]!r} | | | | | |')
      continue
    lines.append(
      f'{head} {_f(r.get("median_ms"), ".1f")} | '
      f'{_f(r.get("compile_s"), ".1f")} | {_f(r.get("xla_temp_mb"), ".0f")} '
      f'| {_f(r.get("xla_total_mb"), ".0f")} | '
      f'{_f(r.get("device_peak_mb"), ".0f")} | '
      f'{_f(r.get("peak_rss_mb"), ".0f")} |'
    )
  model = 'ConvNet-4 (tiny widths)' if args.tiny else 'VGG-16'
  lines += ['', f'MAXL run ({model}, real loop, synthetic 20 -> 100):', '']
  if 'error' in maxl:
    lines.append(f'error: {maxl["error"]!r}')
  else:
    paper = PAPER
    lines += [
      '| steps | wall s | compile s | steps/s | s per epoch | eval s |'
      ' projected paper epoch s | projected paper run h |',
      '|--:|--:|--:|--:|--:|--:|--:|--:|',
      f'| {maxl["steps"]} | {maxl["wall_s"]:.0f} | '
      f'{_f(maxl["compile_s"], ".0f")} | {maxl["steps_per_s"]:.2f} | '
      f'{maxl["epoch_s"]:.1f} | {maxl["eval_s"]:.1f} | '
      f'{maxl["paper_epoch_s"] + maxl["paper_eval_s"]:.0f} | '
      f'{maxl["paper_hours"]:.2f} |',
      '',
      f'Projection: {paper["epochs"]} epochs x ({paper["train"]:,} / '
      f'{paper["batch"]} = {paper["train"] // paper["batch"]} batches, '
      'each a θ1 and a θ2 step, at the steady-state speed of epochs 2.., '
      f'plus {paper["test"]:,} test images evaluated each epoch at the '
      "run's evaluation speed); compilation and checkpoints not counted.",
    ]
  return '\n'.join(lines) + '\n'


def main(argv=None):
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  deadline = Deadline(args.budget_s)

  def log(message):
    print(f'[{args.budget_s - deadline.left():5.0f} s] {message}', flush=True)

  machine, env = environment()
  log(f'device check on {machine}')
  bench = run_bench(args, deadline, log)
  maxl = run_maxl(args, deadline, log)
  text = table(machine, bench, maxl, args)
  with open(os.path.join(args.out, 'device_check.md'), 'w') as f:
    f.write(text)
  with open(os.path.join(args.out, 'device_check.json'), 'w') as f:
    json.dump({'env': env, 'bench': bench, 'maxl': maxl}, f, indent=1)
  print(text)
  failed = [r for r in bench if 'error' in r] + (['maxl'] if 'error' in maxl
                                                 else [])  # fmt: skip
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
