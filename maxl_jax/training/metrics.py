"""Training metrics on the host: the epoch means, the guard's check, sinks.

Each step's metrics (`maxl_jax.step_metrics`) go into running sums on
device (`carry`: the sums and the non-finite guard); the loop reduces them
to means at each epoch end (`epoch_means`), checks the guard
(`check_guard`) and writes one row per epoch to `metrics.jsonl` and to
TensorBoard (`EpochWriter`).

Row keys: `train/<name>` (mean over the epoch's θ1 steps), `meta/<name>`
(over its θ2 steps), `signal/<name>` (what trains g, over the θ2 steps
that logged it: every `log.meta_signal_every`-th), `meta/aux_hist` ([K]
mean generated probability of each auxiliary class: the label usage
histogram), `meta/aux_weight` (the
mean per-example auxiliary weight; runs with `maxl.example_weights` only),
`test/accuracy`, `test/loss`, `test/aux_information` and (with a label
hierarchy) `test/aux_recovery_nmi`, `test/aux_recovery_ari` (what the
labels know, DESIGN §6; `loop.evaluate`), `grad_cosine`, `lr`,
`nonfinite_steps`, `epoch`, `step`. A loss-combiner run (`combine`) sums
its own names (`named_sums`) and logs `weight/<task>` for `grad_cosine`.
"""

import functools
import importlib.util
import json

import numpy as np
from absl import logging
from etils import epath

from maxl_jax.errors import NonFiniteError
from maxl_jax.step_metrics import GUARDED
from maxl_jax.training.workdir import METRICS, TIMING


def epoch_means(sums: dict[str, np.ndarray]) -> dict:
  """Host sums -> the mean of each `<group>/<name>` over its group's steps
  (a list for a vector sum); groups without steps are left out."""
  out = {}
  for group in ('train', 'meta', 'signal'):
    count = float(sums.get(f'{group}/count', 0))
    if not count:
      continue
    for key in sorted(sums):
      if key.startswith(f'{group}/') and key != f'{group}/count':
        mean = np.asarray(sums[key], np.float64) / count
        out[key] = mean.tolist() if mean.ndim else float(mean)
  return out


# ------------------------------------------------------ non-finite guard ---


def check_guard(guard: dict, on_nonfinite: str, last_saved) -> int:
  """The number of non-finite steps; raises NonFiniteError in mode 'stop'.

  Args:
    guard: `carry.Carry.guard` on the host.
    on_nonfinite: 'stop' | 'skip_step'.
    last_saved: the step of the last checkpoint, or None.
  """
  count = int(guard['count'])
  if count and on_nonfinite == 'stop':
    values = ', '.join(f'{k}={float(guard["values"][k]):.6g}' for k in GUARDED)
    kept = (
      'no checkpoint was written'
      if last_saved is None
      else f'the last good checkpoint (step {last_saved}) is kept'
    )
    raise NonFiniteError(
      f'non-finite values at step {int(guard["step"]) + 1}: {values}; '
      f'{kept}. Lower the learning rates, or set '
      '--config.train.on_nonfinite=skip_step.'
    )
  return count


# ---------------------------------------------------------------- sinks ---


class _JsonLines:
  """A `.jsonl` file of per-epoch rows, rewritten whole (works on gs://).

  Rows of epochs after `completed_epochs` (written by a run that was then
  interrupted before its checkpoint) are dropped: the resumed run writes
  them again.
  """

  def __init__(self, path: epath.Path, completed_epochs: int):
    self._path, self.rows = path, []
    if path.exists():
      rows = [json.loads(x) for x in path.read_text().splitlines() if x]
      self.rows = [r for r in rows if r['epoch'] <= completed_epochs]
      if len(self.rows) < len(rows):
        self._write()

  def append(self, row: dict):
    self.rows.append(row)
    self._write()

  def _write(self):
    self._path.write_text(''.join(json.dumps(r) + '\n' for r in self.rows))


def tensorboard_available() -> bool:
  """Whether TensorBoard event files can be written: CLU's writer imports
  TensorFlow and TensorBoard, optional dependencies (the `tensorboard`
  extra of setup.cfg)."""
  return all(importlib.util.find_spec(m) for m in ('tensorflow', 'tensorboard'))


@functools.cache
def _say_tensorboard_skipped():
  """Says so once per process, however many runs it trains."""
  logging.warning(
    'TensorBoard event files skipped: TensorFlow is not installed '
    '(pip install "maxl_jax[tensorboard]"); metrics.jsonl is written as '
    'always.'
  )


class EpochWriter:
  """One row per epoch to `metrics.jsonl` and TensorBoard (CLU), timings.

  `metrics.jsonl` holds what training computed (bitwise the same when a run
  is resumed); `timing.jsonl` where the wall clock went (`timing.Ledger`'s
  running totals and `train_s`, training without evaluations, for
  time-to-accuracy plots), cumulated over resumptions. Only the lead
  process writes files; the others only log (with `tensorboard`). Without
  TensorFlow installed, `tensorboard` is ignored (said once, in the log).
  """

  def __init__(
    self,
    workdir: epath.Path,
    completed_epochs: int,
    lead: bool,
    tensorboard: bool = True,
  ):
    self._scalars = self._metrics = self._timing = None
    if tensorboard and not tensorboard_available():
      _say_tensorboard_skipped()
      tensorboard = False
    if tensorboard:
      from clu import metric_writers  # Imports TensorFlow: only here.

      self._scalars = metric_writers.create_default_writer(
        str(workdir), just_logging=not lead
      )
    if lead:
      self._metrics = _JsonLines(workdir / METRICS, completed_epochs)
      self._timing = _JsonLines(workdir / TIMING, completed_epochs)

  def carried(self, key: str) -> float:
    """`key`'s cumulated seconds in the epochs kept from earlier sessions."""
    return self.carried_row().get(key, 0.0)

  def carried_row(self) -> dict:
    """The last timing.jsonl row kept from earlier sessions ({} if none)."""
    rows = self._timing.rows if self._timing else []
    return rows[-1] if rows else {}

  def write(self, step: int, row: dict, timing: dict):
    """Appends `row`; lists (the histogram) go to metrics.jsonl only."""
    if self._scalars is not None:
      scalars = {k: v for k, v in row.items() if not isinstance(v, list)}
      self._scalars.write_scalars(step, scalars)
    if self._metrics is not None:
      self._metrics.append(row)
      self._timing.append({'epoch': row['epoch'], 'step': step, **timing})

  def flush(self):
    if self._scalars is not None:
      self._scalars.flush()
