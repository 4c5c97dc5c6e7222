"""XLA compilation: JAX's persistent cache, and the seconds it takes.

Runs of a sweep compile the same programs (the same networks, steps and
shapes; only seeds and a few numbers differ, and those are data, not code),
so with the persistent cache only the first run of each program compiles;
the others read the executable from disk. `seconds()` counts the wall clock
of getting executables (XLA's compilation, or reading the cache) since the
process started; `timing.jsonl` records it per epoch as `compile_s`.
"""

import threading

import jax
from jax import monitoring

# Emitted around every "compile or read from the cache" of a jitted program.
_BACKEND_COMPILE = '/jax/core/compile/backend_compile_duration'


class _Clock:
  lock = threading.Lock()
  seconds = 0.0
  listening = False


def _listen(event: str, duration_secs: float, **kwargs):
  del kwargs
  if event == _BACKEND_COMPILE:
    with _Clock.lock:
      _Clock.seconds += duration_secs


def seconds() -> float:
  """Seconds spent compiling (or reading compiled programs) so far."""
  if not _Clock.listening:
    monitoring.register_event_duration_secs_listener(_listen)
    _Clock.listening = True
  return _Clock.seconds


def enable_cache(directory: str):
  """JAX's persistent compilation cache in `directory`, for every program.

  Call before the first compilation of the process: JAX reads the setting
  once. Programs that compile in under a second are cached too (the
  evaluation and cosine steps), so a rerun compiles nothing.
  """
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
