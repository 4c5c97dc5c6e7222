"""Where a run's wall clock goes: start-up, compilation, steps, evaluation,
checkpoints.

A `Ledger` charges the wall clock since its last charge to one phase, less
the seconds spent getting compiled programs meanwhile
(`compilation.seconds()`), which it charges to 'compile'. The loop charges
every interval of a session to some phase, so the phases add up to the
session's wall clock; `timing.jsonl` has their running totals (carried over
resumptions) and result.json their sums with each phase's share.

- startup: from the process's start (`experiments.run`; a library caller:
  the call of `train_and_evaluate`) to the first step: imports, loading the
  data, building and initialising the run (K-Means trains its autoencoder
  here), restoring a checkpoint.
- compile: getting every program's executable (XLA or the persistent cache).
- steps: the training steps, with feeding them their batches.
- eval: the test set's scores, the label drift and the probe's row entries.
- checkpoint: writing checkpoints, and waiting for the asynchronous writes.
- other: writing metrics and logs, the result.
"""

import os
import time
from typing import NamedTuple

from maxl_jax.training import compilation

PHASES = ('startup', 'compile', 'steps', 'eval', 'checkpoint', 'other')


def process_age_s() -> float:
  """Seconds since this process started (Linux's /proc; 0.0 elsewhere)."""
  try:
    with open('/proc/self/stat') as f:
      # Field 22, starttime in clock ticks after boot; fields 3.. follow
      # the command name's closing parenthesis.
      start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return 0.0
  booted = time.clock_gettime(time.CLOCK_BOOTTIME)
  return max(0.0, booted - start_ticks / os.sysconf('SC_CLK_TCK'))


def process_start() -> float:
  """This process's start on the `time.perf_counter` clock."""
  return time.perf_counter() - process_age_s()


class Ledger(NamedTuple):
  """Seconds per phase so far; `charge` returns a new ledger."""

  seconds: dict  # {phase: cumulative seconds}
  mark: float  # perf_counter at the last charge.
  compiled: float  # compilation.seconds() at the last charge.

  @classmethod
  def open(cls, since: float, carried: dict | None = None) -> 'Ledger':
    """A session's ledger from perf_counter time `since`, adding to the
    totals `carried` from earlier sessions ({f'{phase}_s': seconds})."""
    carried = carried or {}
    seconds = {p: carried.get(f'{p}_s', 0.0) for p in PHASES}
    return cls(seconds, since, compilation.seconds())

  def charge(self, phase: str) -> 'Ledger':
    """The wall clock since the last charge to `phase`, compiling aside."""
    now, compiled = time.perf_counter(), compilation.seconds()
    compiling = compiled - self.compiled
    seconds = dict(self.seconds)
    seconds[phase] += now - self.mark - compiling
    seconds['compile'] += compiling
    return Ledger(seconds, now, compiled)

  def row(self) -> dict:
    """timing.jsonl's running totals, {f'{phase}_s': seconds}."""
    return {f'{p}_s': self.seconds[p] for p in PHASES}

  def summary(self) -> dict:
    """result.json's `timing`: each phase's seconds and share of the wall
    clock (the sum of the phases, over every session of the run)."""
    wall = sum(self.seconds.values())
    out = {**self.row(), 'wall_s': wall}
    for p in PHASES:
      out[f'{p}_share'] = self.seconds[p] / wall if wall > 0 else 0.0
    return out


def describe(summary: dict) -> str:
  """'wall 187 s: steps 71%, eval 12%, ...' from `Ledger.summary()`."""
  shares = sorted(PHASES, key=lambda p: -summary[f'{p}_share'])
  parts = ', '.join(f'{p} {summary[f"{p}_share"]:.0%}' for p in shares)
  return f'wall {summary["wall_s"]:.0f} s: {parts}'
