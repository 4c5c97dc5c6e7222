"""The entry point's jemalloc restart (experiments/allocator.py)."""

import os
import subprocess
import sys

import pytest

from experiments import allocator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = '/opt/lib/libjemalloc.so.2'
CPU = {'JAX_PLATFORMS': 'cpu'}


def test_restart_environment_preloads_jemalloc():
  env = allocator.jemalloc_environ({**CPU, 'PATH': '/bin'}, LIB)
  assert env['LD_PRELOAD'] == LIB
  assert env['MALLOC_CONF'] == allocator.JEMALLOC_CONF
  assert env['MAXL_ALLOCATOR'] == 'jemalloc'
  assert env['PATH'] == '/bin'


def test_restart_keeps_existing_preloads_and_malloc_conf():
  env = allocator.jemalloc_environ(
    {**CPU, 'LD_PRELOAD': '/x/libfoo.so', 'MALLOC_CONF': 'narenas:2'}, LIB
  )
  assert env['LD_PRELOAD'] == f'{LIB}:/x/libfoo.so'
  assert env['MALLOC_CONF'] == 'narenas:2'


@pytest.mark.parametrize(
  'environ, library',
  [
    ({**CPU, 'MAXL_ALLOCATOR': 'system'}, LIB),  # Opted out.
    ({**CPU, 'LD_PRELOAD': LIB}, LIB),  # Already running under jemalloc.
    (CPU, None),  # Not installed.
    ({'JAX_PLATFORMS': 'cuda'}, LIB),  # Accelerators keep their allocator.
  ],
)
def test_no_restart(environ, library):
  assert allocator.jemalloc_environ(environ, library) is None


def test_unknown_choice_is_a_clear_error():
  with pytest.raises(ValueError, match='MAXL_ALLOCATOR.*jemalloc, system'):
    allocator.jemalloc_environ({'MAXL_ALLOCATOR': 'tcmalloc'}, LIB)


def _run(code, **env):
  environ = {k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'}
  environ.pop('MAXL_ALLOCATOR', None)
  return subprocess.run(
    [sys.executable, '-c', code],
    env={**environ, **CPU, **env},
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )


_PROBE = (
  'import os, sys; from experiments import allocator; '
  'print("before", os.getpid(), flush=True); allocator.maybe_reexec(); '
  'print("after", os.getpid(), allocator.active(), sys.argv[1:])'
)


@pytest.mark.skipif(
  allocator.find_jemalloc() is None, reason='libjemalloc2 not installed'
)
def test_reexec_runs_the_same_command_under_jemalloc_once():
  proc = _run(_PROBE)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.split('\n')
  befores = [s for s in lines if s.startswith('before')]
  # The original process and its one restart (same pid: an execve).
  assert len(befores) == 2 and befores[0] == befores[1]
  pid = befores[0].split()[1]
  assert f'after {pid} jemalloc []' in proc.stdout


def test_opt_out_runs_on_the_system_allocator():
  proc = _run(_PROBE, MAXL_ALLOCATOR='system')
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.count('before') == 1
  assert 'system' in proc.stdout


def test_entry_point_rejects_an_unknown_choice():
  proc = subprocess.run(
    [sys.executable, '-m', 'experiments.run', '--workdir=/tmp/unused'],
    env={**os.environ, 'MAXL_ALLOCATOR': 'tcmalloc'},
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  assert proc.stderr.startswith('error: MAXL_ALLOCATOR=')
