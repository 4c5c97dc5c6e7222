"""Data parallel training: 8 simulated CPU devices, and 2 processes.

Both run in subprocesses: the device count is fixed when JAX starts, and a
process waiting for a missing peer aborts hard, so every wait has a timeout.
"""

import json
import signal
import subprocess
import sys

import entry_point as ep
import numpy as np
import pytest

# Three steps (θ1, θ1, θ2) of the tiny quickstart MAXL run from one initial
# state, on meshes of several sizes; saves the updates (final - initial) of
# θ1, BN statistics and θ2 per mesh. argv: output path, then runs as
# `<devices>[p<permutation seed>]` (p: every batch's examples permuted,
# the same sums in another order).
_UPDATES = """
import sys
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from experiments.configs import quickstart
from maxl_jax.data import pipeline
from maxl_jax.data.spec import DataSpec
from maxl_jax.training import carry, contract, maxl_run, mesh as mesh_lib
from maxl_jax.training import resumption

config = quickstart.get_config()
config.compare_methods, config.method = '', 'maxl'
config.data.batch_size, config.model.head_hidden = 16, 32
config.model.widths = (8, 16, 16, 32)  # Small: float64 convolutions are slow.
config.train.steps_per_epoch = 2  # Steps 0, 1: θ1; step 2: θ2.
if jax.config.jax_enable_x64:
  config.model.compute_dtype = 'float64'
spec = DataSpec(**config.data)
train_it, _, info, _ = pipeline.get_datasets(spec, seed=config.seed)
run = contract.build_run(config, info)
label_state = run.init_label_state(resumption.training_images(train_it))
init = run.create_state(label_state)
dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
batches = [next(train_it) for _ in range(3)]
assert jax.device_count() == 8, jax.devices()
groups = ('theta1', 'model_state1', 'theta2')
leaves = lambda state, g: jax.tree.leaves(getattr(state, g))
flat = lambda state, g: np.concatenate(
  [np.asarray(x, np.float64).ravel() for x in leaves(state, g)]
)
out, fns = {}, {}
for name in sys.argv[2:]:
  n, _, perm = name.partition('p')
  mesh = mesh_lib.make_mesh(jax.devices()[: int(n)])
  state = jax.device_put(  # A copy: the steps donate their input.
    carry.start(jax.tree.map(np.array, init), run.zero_sums()),
    NamedSharding(mesh, PartitionSpec()),
  )
  fns[n] = fns.get(n) or maxl_run.jit_steps(run, mesh)
  for step, batch in enumerate(batches):
    if perm:
      rows = np.random.default_rng([int(perm), step]).permutation(16)
      batch = {k: v[rows] for k, v in batch.items()}
    batch = mesh_lib.global_batch(batch, mesh)
    assert len(batch['image'].sharding.device_set) == int(n)
    state = fns[n][run.schedule.kind(step)](state, batch)
  state = state.state
  assert (int(state.step1), int(state.step2)) == (2, 1)
  for g in groups:
    assert all(x.sharding.is_fully_replicated for x in leaves(state, g))
    assert {x.dtype for x in leaves(state, g)} == {np.dtype(dtype)}
    out[f'{name}/{g}'] = flat(state, g) - flat(init, g)
np.savez(sys.argv[1], **out)
"""
GROUPS = ('theta1', 'model_state1', 'theta2')


def _updates(tmp_path, *runs, x64=False):
  """{run: {group: update}} of `_UPDATES` on 8 simulated devices."""
  path = tmp_path / f'updates_x64_{x64}.npz'
  env = ep.env(devices=8)
  env['JAX_ENABLE_X64'] = '1' if x64 else '0'
  proc = subprocess.run(
    [sys.executable, '-c', _UPDATES, str(path), *runs],
    cwd=ep.REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = np.load(path)
  return {r: {g: saved[f'{r}/{g}'] for g in GROUPS} for r in runs}


def _relative(a, b):
  """‖a - b‖ / ‖b‖ of two updates."""
  assert np.linalg.norm(b) > 0
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_eight_devices_match_one_device_in_float64(tmp_path):
  """Exact: float64 parameters and compute, 1 vs 8 devices.

  Only the order of the cross-device sums differs (~1e-16 relative), far
  from the network's ReLU and max-pool kinks, so the updates agree to
  ~1e-13 (measured); 1e-9 leaves room on any CPU and no room for a bug
  (a missing gradient or BatchNorm all-reduce changes them by O(1)).
  """
  updates = _updates(tmp_path, '1', '8', x64=True)
  for group in GROUPS:
    assert _relative(updates['8'][group], updates['1'][group]) < 1e-9, group


@pytest.mark.slow  # The float64 test checks the same updates exactly.
def test_eight_devices_match_one_device_in_float32(tmp_path):
  """float32, within 10x the measured noise floor of a reordered sum.

  The floor: the same 1-device steps with each batch's examples permuted
  (the same sums in another order), measured here, on this CPU. θ1 and
  the BN statistics are smooth in that noise (8 vs 1: 1.6e-6, permuted:
  1.3-1.5e-6 on the machine that wrote this). θ2 is not compared in
  float32: its meta-gradient is a second-order term that jumps when
  float32 noise moves a ReLU or a max-pool choice across its kink
  (docs/DESIGN.md §5); the float64 test checks it exactly.
  """
  updates = _updates(tmp_path, '1', '8', '1p1', '1p2')
  tiny = np.finfo(np.float32).eps  # A floor of exactly 0 is possible.
  for group in ('theta1', 'model_state1'):
    one = updates['1'][group]
    floor = max(_relative(updates[p][group], one) for p in ('1p1', '1p2'))
    assert _relative(updates['8'][group], one) < 10 * max(floor, tiny), group


def _start_process(i, port, workdir, tmp_path):
  return ep.start(
    *ep.TINY,
    '--config.data.eval_batch_size=64',
    f'--workdir={workdir}',
    f'--coordinator_address=127.0.0.1:{port}',
    '--num_processes=2',
    f'--process_id={i}',
    logs=tmp_path / f'process{i}',
    devices=2,
  )


def _start_two(workdir, tmp_path):
  port = ep.free_port()
  return [_start_process(i, port, workdir, tmp_path) for i in range(2)]


def _run_two(procs, timeout=420):
  """Waits for both (killed on timeout); [(status, stdout, stderr)]."""
  try:
    outputs = [ep.finish(p, timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return [(p.returncode, *out) for p, out in zip(procs, outputs, strict=True)]


@pytest.fixture(scope='module')
def two_process_run(tmp_path_factory):
  """An uninterrupted 2-process run: (workdir, result)."""
  tmp_path = tmp_path_factory.mktemp('two_processes')
  workdir = tmp_path / 'run'
  runs = _run_two(_start_two(workdir, tmp_path))
  for i, (status, _, err) in enumerate(runs):
    assert status == 0, f'process {i}:\n{err[-3000:]}'
    assert f'(process {i} of 2)' in err
  result = json.loads((workdir / 'result.json').read_text())
  assert [ep.sha_printed(out) for _, out, _ in runs] == [
    result['params_sha256']
  ] * 2
  return workdir, result


@pytest.mark.slow
def test_two_processes_train_and_agree(two_process_run, tmp_path):
  workdir, result = two_process_run
  assert result['steps'] == ep.TOTAL_STEPS
  rows = (workdir / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(r)['epoch'] for r in rows] == [0, 1, 2]  # Process 0 only.
  assert max(ep.checkpoint_steps(workdir)) == ep.TOTAL_STEPS

  # The same command again: both processes see a finished run.
  for status, out, err in _run_two(_start_two(workdir, tmp_path)):
    assert status == 0, err[-3000:]
    assert 'This run already finished' in err
    assert ep.sha_printed(out) == result['params_sha256']


@pytest.mark.slow
def test_sigterm_to_one_process_saves_on_both(two_process_run, tmp_path):
  workdir = tmp_path / 'run'
  procs = _start_two(workdir, tmp_path)
  ep.wait_for_checkpoint(procs[0], workdir)
  procs[1].send_signal(signal.SIGTERM)
  runs = _run_two(procs)
  lines = []
  for i, (status, _, err) in enumerate(runs):
    assert status == 143, f'process {i}:\n{err[-3000:]}'
    lines += [x for x in err.splitlines() if x.startswith('preempted:')]
  assert len(lines) == 2 and lines[0] == lines[1], lines  # The same step.
  saved = int(lines[0].split('checkpoint saved at step ')[1].split()[0])
  assert saved == max(ep.checkpoint_steps(workdir))

  runs = _run_two(_start_two(workdir, tmp_path))
  for status, out, err in runs:
    assert status == 0, err[-3000:]
    assert f'Resuming from the checkpoint at step {saved} ' in err
    assert ep.sha_printed(out) == two_process_run[1]['params_sha256']
