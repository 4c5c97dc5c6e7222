"""Runs a CPU training process under jemalloc when the machine has it.

XLA:CPU allocates each step's temporary buffers with malloc and frees them at
the end of the step. glibc hands blocks this large back to the kernel on
free, so every step page-faults its whole working set in again: on a 2-core
machine ~31k faults per ConvNet-4 single-task step and ~100k per MAXL meta
step, a quarter of the step time spent in the kernel zeroing pages.
jemalloc with purging turned off keeps the pages, and the same steps run
12-20% faster (`benchmarks/README.md`, "Allocator").

`maybe_reexec()` restarts the current command once, with jemalloc preloaded,
when all of these hold:
- `MAXL_ALLOCATOR` is unset or 'jemalloc' ('system' opts out);
- jemalloc is not preloaded already;
- the JAX install is CPU-only (no CUDA or TPU plugin, or JAX_PLATFORMS=cpu):
  accelerator runtimes keep their own device memory and are left alone;
- `libjemalloc.so.2` exists (Debian/Ubuntu: `apt-get install libjemalloc2`).
The restart is an `execve` of the same command line, so the process id,
working directory, arguments and signals stay the same.
"""

import ctypes.util
import importlib.util
import os
import sys

ENV_CHOICE = 'MAXL_ALLOCATOR'
CHOICES = ('jemalloc', 'system')
# Never purge freed pages: the next step reuses them (MALLOC_CONF syntax).
JEMALLOC_CONF = 'dirty_decay_ms:-1,muzzy_decay_ms:-1'
_LIB_DIRS = (
  '/usr/lib/x86_64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/usr/lib64',
  '/usr/lib',
  '/usr/local/lib',
)
_ACCELERATOR_PLUGINS = ('libtpu', 'jax_cuda12_plugin', 'jax_cuda13_plugin')


def find_jemalloc() -> str | None:
  """Path of libjemalloc.so.2, or None."""
  for directory in _LIB_DIRS:
    path = os.path.join(directory, 'libjemalloc.so.2')
    if os.path.exists(path):
      return path
  name = ctypes.util.find_library('jemalloc')
  return name if name and os.path.isabs(name) else None


def _cpu_only(environ) -> bool:
  platforms = environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  return not any(importlib.util.find_spec(p) for p in _ACCELERATOR_PLUGINS)


def jemalloc_environ(environ, library: str | None) -> dict[str, str] | None:
  """The environment to restart with, or None to run as is.

  Args:
    environ: the current environment (a mapping; not modified).
    library: path of libjemalloc (see `find_jemalloc`), or None.

  Raises:
    ValueError: `MAXL_ALLOCATOR` is not one of CHOICES.
  """
  choice = environ.get(ENV_CHOICE, 'jemalloc')
  if choice not in CHOICES:
    raise ValueError(
      f'{ENV_CHOICE}={choice!r}; valid values: {", ".join(CHOICES)} '
      '(unset means jemalloc when it is installed).'
    )
  preload = environ.get('LD_PRELOAD', '')
  if choice == 'system' or 'jemalloc' in preload or library is None:
    return None
  if not _cpu_only(environ):
    return None
  env = dict(environ)
  env['LD_PRELOAD'] = f'{library}:{preload}' if preload else library
  env.setdefault('MALLOC_CONF', JEMALLOC_CONF)
  env[ENV_CHOICE] = 'jemalloc'
  return env


def active() -> str:
  """'jemalloc' if this process runs with jemalloc preloaded, else 'system'."""
  preloaded = 'jemalloc' in os.environ.get('LD_PRELOAD', '')
  return 'jemalloc' if preloaded else 'system'


def maybe_reexec() -> None:
  """Restarts this command with jemalloc preloaded (see the module doc)."""
  if not sys.platform.startswith('linux'):
    return
  env = jemalloc_environ(os.environ, find_jemalloc())
  if env is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
