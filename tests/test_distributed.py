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

# Three steps (θ1, θ1, θ2) of the tiny quickstart MAXL run on a mesh of the
# first device and on a mesh of all 8; saves θ1, BN statistics and θ2 of
# both, and their initial values.
_ONE_VS_EIGHT = """
import sys
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from experiments.configs import quickstart
from maxl_jax.data import pipeline
from maxl_jax.training import assembly, loop, mesh as mesh_lib

config = quickstart.get_config()
config.compare_methods, config.method = '', 'maxl'
config.data.batch_size, config.model.head_hidden = 16, 32
config.train.steps_per_epoch = 2  # Steps 0, 1: θ1; step 2: θ2.
train_it, _, info, _ = pipeline.get_datasets(config.data, seed=config.seed)
run = assembly.build_run(config, info)
images = loop.training_images(train_it)
init = run.init_state(run.label_source.init_state(images))
assert jax.device_count() == 8, jax.devices()
out = {}
for n in (0, 1, 8):  # 0: the initial values.
  mesh = mesh_lib.make_mesh(jax.devices()[: n or 1])
  state = jax.device_put(  # A copy: the steps donate their input.
    jax.tree.map(np.array, init), NamedSharding(mesh, PartitionSpec())
  )
  fns = assembly.jit_steps(run, mesh)
  train_it.set_state({'epoch': 0, 'step': 0})
  for step in range(3 if n else 0):
    batch = mesh_lib.global_batch(next(train_it), mesh)
    assert len(batch['image'].sharding.device_set) == n
    state = fns[run.schedule.kind(step)](state, batch)
  assert n == 0 or (int(state.step1), int(state.step2)) == (2, 1)
  leaves = jax.tree_util.tree_leaves_with_path(
    {'theta1': state.theta1, 'state1': state.state1, 'theta2': state.theta2}
  )
  for path, leaf in leaves:
    assert leaf.sharding.is_fully_replicated
    out[f'{n}{jax.tree_util.keystr(path)}'] = np.asarray(leaf)
np.savez(sys.argv[1], **out)
"""


def test_eight_devices_match_one_device(tmp_path):
  path = tmp_path / 'params.npz'
  proc = subprocess.run(
    [sys.executable, '-c', _ONE_VS_EIGHT, str(path)],
    cwd=ep.REPO,
    env=ep.env(devices=8),
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = np.load(path)
  keys = sorted(k[1:] for k in saved.files if k.startswith('0'))
  for n in '18':
    assert keys == sorted(k[1:] for k in saved.files if k.startswith(n))
  for group in ('theta1', 'state1', 'theta2'):
    assert any(k.startswith(f"['{group}']") for k in keys), keys
  for key in keys:
    np.testing.assert_allclose(
      saved['8' + key], saved['1' + key], rtol=1e-5, atol=1e-5, err_msg=key
    )
  # The updates agree too, not only the weights (float32 noise: the
  # meta-gradient moves by ~3e-3 already between XLA optimisation levels).
  for group, rtol in (('theta1', 1e-4), ('state1', 1e-4), ('theta2', 2e-2)):
    names = [k for k in keys if k.startswith(f"['{group}']")]
    one, eight = (
      np.concatenate([(saved[n + k] - saved['0' + k]).ravel() for k in names])
      for n in '18'
    )
    assert np.linalg.norm(one) > 0, group
    assert np.linalg.norm(eight - one) < rtol * np.linalg.norm(one), group


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
  assert [json.loads(r)['epoch'] for r in rows] == [1, 2]  # Process 0 only.
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
