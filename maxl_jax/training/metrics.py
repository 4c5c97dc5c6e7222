"""Training metrics: names, on-device sums, the epoch means, the guard, sinks.

Steps add their values to running sums in `MaxlState.sums` (on device, no
host round trip); the loop reduces them to means at each epoch end
(`epoch_means`) and writes one row per epoch to `metrics.jsonl` and to
TensorBoard (`EpochWriter`). The non-finite guard (`guard_update`) records
the first step whose losses or gradient norm are not finite, by name.

Row keys: `train/<name>` (mean over the epoch's θ1 steps), `meta/<name>`
(over its θ2 steps), `meta/aux_hist` ([K] mean generated probability of
each auxiliary class: the label usage histogram), `meta/aux_weight` (the
mean per-example auxiliary weight; runs with `maxl.example_weights` only),
`test/accuracy`, `test/loss`, `test/aux_information` and (with a label
hierarchy) `test/aux_recovery_nmi`, `test/aux_recovery_ari` (what the
labels know, DESIGN §6; `loop.evaluate`), `grad_cosine`, `lr`,
`nonfinite_steps`, `epoch`, `step`. A loss-combiner run (`combine`) sums
its own names (`named_sums`) and logs `weight/<task>` for `grad_cosine`.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from maxl_jax import diagnostics
from maxl_jax.errors import NonFiniteError
from maxl_jax.training.workdir import METRICS, TIMING

TRAIN = ('loss_pri', 'loss_aux', 'accuracy')  # Per θ1 step.
META = (  # Per θ2 step.
  'loss_before',
  'loss_after',
  'meta_loss',
  'entropy',
  'aux_usage',
  'aux_entropy',
  # What trains g: the norms of θ2's gradient's two parts as given to its
  # optimiser (`meta_grad.balanced_gradient`), their cosine and the meta
  # part's share of the two norms.
  'grad_meta_norm',
  'grad_entropy_norm',
  'grad_parts_cosine',
  'meta_share',
)
AUX_HIST = 'meta/aux_hist'
AUX_WEIGHT = 'meta/aux_weight'
GUARDED = ('loss_pri', 'loss_aux', 'meta_loss', 'grad_norm')

Sums = dict[str, jax.Array]


def named_sums(train: tuple[str, ...], meta: tuple[str, ...] = ()) -> Sums:
  """Zero sums of a θ1 step's `train` and a θ2 step's `meta` values, with
  `<group>/count` counting the steps."""
  names = [f'train/{k}' for k in (*train, 'count')]
  names += [f'meta/{k}' for k in (*meta, 'count')]
  return {k: jnp.zeros((), jnp.float32) for k in names}


def zero_sums(num_aux: int, aux_weight: bool = False) -> Sums:
  """MAXL's sums at the start of an epoch: `TRAIN`, `META`, `AUX_HIST`.

  `aux_weight` adds `AUX_WEIGHT` (per-example weights); runs without them
  keep the sums, and so the checkpoints, of earlier versions.
  """
  sums = named_sums(TRAIN, META)
  if aux_weight:
    sums[AUX_WEIGHT] = jnp.zeros((), jnp.float32)
  # At least one entry: orbax cannot save zero-size arrays.
  sums[AUX_HIST] = jnp.zeros((max(num_aux, 1),), jnp.float32)
  return sums


def add(sums: Sums, group: str, values: dict[str, jax.Array]) -> Sums:
  """Adds one step's `values` to `group`'s sums and counts the step.

  Every `<group>/<name>` sum needs its value; other values are ignored.
  """
  prefix, count = f'{group}/', f'{group}/count'
  out = dict(sums)
  for k in sums:
    if k == count:
      out[k] = sums[k] + 1.0
    elif k.startswith(prefix):
      out[k] = sums[k] + values[k[len(prefix) :]]
  return out


def add_train(sums: Sums, values: dict[str, jax.Array]) -> Sums:
  """Adds one θ1 step's values (`train_loss`'s metrics)."""
  return add(sums, 'train', values)


def add_meta(sums: Sums, out, parts) -> Sums:
  """Adds one θ2 step's values from its `meta_grad.MetaOutput` and the
  (meta, entropy) `parts` of the gradient given to θ2's optimiser."""
  usage = diagnostics.label_usage(out.aux_probs)
  values = {
    'loss_before': out.loss_pri_before,
    'loss_after': out.loss_pri_after,
    'meta_loss': out.meta_loss,
    'entropy': out.entropy,
    **usage,
    **diagnostics.gradient_parts_stats(*parts),
  }
  if AUX_WEIGHT in sums:
    values['aux_weight'] = jnp.mean(out.aux_weights)
  return add(sums, 'meta', values)


def epoch_means(sums: dict[str, np.ndarray]) -> dict:
  """Host sums -> the mean of each `<group>/<name>` over its group's steps
  (a list for a vector sum); groups without steps are left out."""
  out = {}
  for group in ('train', 'meta'):
    count = float(sums[f'{group}/count'])
    if not count:
      continue
    for key in sorted(sums):
      if key.startswith(f'{group}/') and key != f'{group}/count':
        mean = np.asarray(sums[key], np.float64) / count
        out[key] = mean.tolist() if mean.ndim else float(mean)
  return out


# ------------------------------------------------------ non-finite guard ---


def zero_guard() -> dict:
  """No non-finite step yet."""
  return {
    'count': jnp.zeros((), jnp.int32),
    'step': jnp.full((), -1, jnp.int32),
    'values': {k: jnp.zeros((), jnp.float32) for k in GUARDED},
  }


def guard_update(old, new, values: dict[str, jax.Array], on_nonfinite: str):
  """`new` if `values` are finite, else `old` (the step count advances).

  With 'stop', every step after the first non-finite one is frozen as well
  (the host stops the run at its next check); with 'skip_step' training
  goes on. Names of GUARDED that a step does not compute are recorded as 0.
  """
  stacked = jnp.stack(
    [jnp.asarray(values.get(k, 0.0), jnp.float32) for k in GUARDED]
  )
  finite = jnp.all(jnp.isfinite(stacked))
  clean = old.guard['count'] == 0
  apply = finite if on_nonfinite == 'skip_step' else finite & clean
  chosen = jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, old)
  first_bad = clean & ~finite
  recorded = jnp.stack([old.guard['values'][k] for k in GUARDED])
  recorded = jnp.where(first_bad, stacked, recorded)
  guard = {
    'count': old.guard['count'] + (~finite).astype(jnp.int32),
    'step': jnp.where(first_bad, old.step, old.guard['step']),
    'values': dict(zip(GUARDED, recorded, strict=True)),
  }
  return chosen.replace(step=old.step + 1, guard=guard)


def check_guard(guard: dict, on_nonfinite: str, last_saved) -> int:
  """The number of non-finite steps; raises NonFiniteError in mode 'stop'.

  Args:
    guard: `MaxlState.guard` on the host.
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


class EpochWriter:
  """One row per epoch to `metrics.jsonl` and TensorBoard (CLU), timings.

  `metrics.jsonl` holds what training computed (bitwise the same when a run
  is resumed); `timing.jsonl` where the wall clock went (`timing.Ledger`'s
  running totals and `train_s`, training without evaluations, for
  time-to-accuracy plots), cumulated over resumptions. Only the lead
  process writes files; the others only log (with `tensorboard`).
  """

  def __init__(
    self,
    workdir: epath.Path,
    completed_epochs: int,
    lead: bool,
    tensorboard: bool = True,
  ):
    self._scalars = self._metrics = self._timing = None
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
