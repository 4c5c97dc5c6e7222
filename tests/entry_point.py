"""Helpers to run `python -m experiments.run` in subprocesses from tests.

A tiny MAXL run on scikit-learn's digits (`experiments/configs/smoke.py`:
2 epochs of 3 θ1 + 3 θ2 steps, batch 16). Subprocesses run with XLA's
optimisations mostly off (compiles twice as fast) and share one persistent
JAX compilation cache per pytest session, so only the first run of a
configuration compiles.
"""

import atexit
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
# experiments/configs/smoke.py: 2 epochs x (3 θ1 + 3 θ2 steps) = 12 steps,
# checkpoints every 2 steps.
TINY = ('--config=experiments/configs/smoke.py',)
TOTAL_STEPS = 12

_CACHE = tempfile.mkdtemp(prefix='maxl_jax_test_cache_')
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def compilation_cache_env() -> dict[str, str]:
  """JAX's persistent compilation cache in this process's directory, for
  every program (however quick to compile)."""
  return {
    'JAX_COMPILATION_CACHE_DIR': _CACHE,
    'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
    'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0',
  }


def env(devices: int = 1) -> dict[str, str]:
  """The environment of a CPU-only subprocess with `devices` devices."""
  flags = [
    f
    for f in os.environ.get('XLA_FLAGS', '').split()
    if not f.startswith('--xla_force_host_platform_device_count')
  ]
  flags.append(f'--xla_force_host_platform_device_count={devices}')
  return dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    CUDA_VISIBLE_DEVICES='',
    TF_CPP_MIN_LOG_LEVEL='2',
    XLA_FLAGS=' '.join(flags),
    **compilation_cache_env(),
    # Halves the compile time; runs compared with each other share it.
    JAX_DISABLE_MOST_OPTIMIZATIONS='1',
  )


def command(*args: str, module: str = 'experiments.run') -> list[str]:
  return [sys.executable, '-m', module, *args]


def start(
  *args: str, logs, devices: int = 1, module: str = 'experiments.run'
) -> subprocess.Popen:
  """Starts the entry point `module`; its stdout and stderr go to
  `logs`.out/.err."""
  with open(f'{logs}.out', 'w') as out, open(f'{logs}.err', 'w') as err:
    proc = subprocess.Popen(
      command(*args, module=module),
      cwd=REPO,
      env=env(devices),
      stdout=out,
      stderr=err,
    )
  proc.logs = logs
  return proc


def run(
  *args: str, timeout: float = 240, module: str = 'experiments.run'
) -> subprocess.CompletedProcess:
  """Runs the entry point `module` to completion (killed after `timeout` s)."""
  return subprocess.run(
    command(*args, module=module),
    cwd=REPO,
    env=env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[str, str]:
  """Waits for `proc` (killing it after `timeout` s); (stdout, stderr)."""
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    raise
  return output(proc)


def output(proc: subprocess.Popen) -> tuple[str, str]:
  """What `proc` (from `start`) has written so far: (stdout, stderr)."""
  return tuple(
    pathlib.Path(f'{proc.logs}.{kind}').read_text() for kind in ('out', 'err')
  )


def checkpoint_steps(workdir) -> list[int]:
  """Steps of the complete checkpoints in `workdir`/checkpoints."""
  path = pathlib.Path(workdir) / 'checkpoints'
  if not path.is_dir():
    return []
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())


def wait_for_checkpoint(
  proc: subprocess.Popen, workdir, timeout: float = 240
) -> int:
  """Polls until a checkpoint of a step > 0 exists; returns that step."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    found = [s for s in checkpoint_steps(workdir) if s > 0]
    if found:
      return found[0]
    if proc.poll() is not None:
      raise AssertionError(
        f'run ended (status {proc.returncode}) before any checkpoint:\n'
        + output(proc)[1][-3000:]
      )
    time.sleep(0.01)
  proc.kill()
  raise AssertionError('no checkpoint appeared in time')


def error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith('error:')]


def sha_printed(stdout: str) -> str:
  """The `params sha256 <hex>` that the entry point prints at the end."""
  found = re.findall(r'params sha256 ([0-9a-f]{64})', stdout)
  assert len(found) == 1, stdout
  return found[0]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def interrupt_after_checkpoint(workdir, sig, logs, *overrides) -> tuple:
  """Runs TINY (+ `overrides`) into `workdir`; `sig` after its first checkpoint.

  Returns (the finished process, its stderr).
  """
  proc = start(*TINY, *overrides, f'--workdir={workdir}', logs=logs)
  try:
    wait_for_checkpoint(proc, workdir)
    proc.send_signal(sig)
  finally:
    _, stderr = finish(proc)
  return proc, stderr


def corrupt_checkpoint(checkpoint: pathlib.Path):
  """Truncates the array data files of one checkpoint directory."""
  files = [p for p in (checkpoint / 'state').rglob('*') if p.parent.name == 'd']
  assert files, list(checkpoint.rglob('*'))
  for path in files:
    path.write_bytes(path.read_bytes()[:16])
