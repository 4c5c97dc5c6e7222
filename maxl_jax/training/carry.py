"""The loop's carry: a method's state with the step, the epoch's metric
sums and the non-finite guard, all on device.

`accumulating(step, on_nonfinite)` wraps a step `(state, *batches) ->
(state, metrics)` as `(carry, *batches) -> carry`, jitted as one program:
the step's metrics go into the running sums and through the guard without
a round trip to the host. The guard records the first step whose guarded
values (`step_metrics.GUARDED`) are not finite and does not apply it; with
'stop' no later step is applied either (the host stops the run at its next
check), with 'skip_step' training goes on.

A checkpoint holds the carry as one flat tree (`to_checkpoint`): the
state's fields beside `step`, `sums` and `guard`. `upgrade` reads the trees
of earlier versions.
"""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from maxl_jax.step_metrics import (
  AUX_HIST,
  AUX_WEIGHT,
  GUARDED,
  META,
  SIGNAL,
  TRAIN,
  guarded_values,
)

Sums = dict[str, jax.Array]


@flax.struct.dataclass
class Carry:
  """What the loop carries from step to step (a pytree)."""

  state: Any  # `MaxlState` or `CombinerState`.
  step: jnp.ndarray  # Batches consumed since the start (every kind).
  sums: Sums  # The epoch's sums of the steps' metrics, per group.
  guard: dict  # `zero_guard`.


def named_sums(
  train: tuple[str, ...], meta: tuple[str, ...] = (), signal=()
) -> Sums:
  """Zero sums of each group's metric names, with `<group>/count` counting
  the steps that returned that group."""
  names = []
  for group, keys in (('train', train), ('meta', meta), ('signal', signal)):
    if group != 'signal' or keys:  # train/count, meta/count as ever.
      names += [f'{group}/{k}' for k in (*keys, 'count')]
  return {k: jnp.zeros((), jnp.float32) for k in names}


def zero_sums(num_aux: int, aux_weight: bool = False) -> Sums:
  """MAXL's sums: `TRAIN`, `META`, `SIGNAL`, `AUX_HIST` (+ `AUX_WEIGHT`
  with per-example weights)."""
  sums = named_sums(TRAIN, META, SIGNAL)
  if aux_weight:
    sums[AUX_WEIGHT] = jnp.zeros((), jnp.float32)
  # At least one entry: orbax cannot save zero-size arrays.
  sums[AUX_HIST] = jnp.zeros((max(num_aux, 1),), jnp.float32)
  return sums


def add(sums: Sums, metrics: dict) -> Sums:
  """`sums` plus one step's `metrics`: each group the step returned counts
  one step more; names the sums do not keep are ignored."""
  groups = {k.split('/')[0] for k in metrics if '/' in k}
  out = dict(sums)
  for key, total in sums.items():
    group, name = key.split('/', 1)
    if group not in groups:
      continue
    out[key] = total + (1.0 if name == 'count' else metrics[key])
  return out


def zero_guard() -> dict:
  """No non-finite step yet."""
  return {
    'count': jnp.zeros((), jnp.int32),
    'step': jnp.full((), -1, jnp.int32),
    'values': {k: jnp.zeros((), jnp.float32) for k in GUARDED},
  }


def start(state, sums: Sums) -> Carry:
  """Step 0's carry of `state`."""
  return Carry(state, jnp.zeros((), jnp.int32), sums, zero_guard())


def accumulating(step, on_nonfinite: str):
  """`step(state, *batches) -> (state, metrics)` as `(carry, *batches) ->
  carry`: the metrics summed, the step guarded (module docstring)."""

  def run(carry: Carry, *batches) -> Carry:
    new, metrics = step(carry.state, *batches)
    values = guarded_values(metrics)
    finite = jnp.all(jnp.isfinite(values))
    clean = carry.guard['count'] == 0
    apply = finite if on_nonfinite == 'skip_step' else finite & clean
    first_bad = clean & ~finite
    keep = lambda n, o: jnp.where(apply, n, o)  # noqa: E731
    recorded = jnp.stack([carry.guard['values'][k] for k in GUARDED])
    recorded = jnp.where(first_bad, values, recorded)
    guard = {
      'count': carry.guard['count'] + (~finite).astype(jnp.int32),
      'step': jnp.where(first_bad, carry.step, carry.guard['step']),
      'values': dict(zip(GUARDED, recorded, strict=True)),
    }
    return Carry(
      state=jax.tree.map(keep, new, carry.state),
      step=carry.step + 1,
      sums=jax.tree.map(keep, add(carry.sums, metrics), carry.sums),
      guard=guard,
    )

  return run


# ---------------------------------------------------------- checkpoints ---


def to_checkpoint(carry: Carry) -> dict:
  """The carry as a checkpoint's flat tree."""
  fields = dataclasses.fields(carry.state)
  tree = {f.name: getattr(carry.state, f.name) for f in fields}
  return {**tree, 'step': carry.step, 'sums': carry.sums, 'guard': carry.guard}


def from_checkpoint(tree: dict, like: Carry) -> Carry:
  """The carry of a checkpoint's flat tree, `like`'s state type."""
  fields = dataclasses.fields(like.state)
  state = type(like.state)(**{f.name: tree[f.name] for f in fields})
  return Carry(state, tree['step'], tree['sums'], tree['guard'])


# Fields renamed since earlier versions: (new name, old name).
_RENAMED = (
  ('phi', 'theta2'),  # A loss combiner's φ, before `CombinerState`.
  ('opt_state_phi', 'opt_state2'),
)


def upgrade(saved: dict, template: dict) -> dict:
  """A checkpoint tree of an earlier version in `template`'s layout.

  The one table of changes: the fields renamed (`_RENAMED`); the
  `signal/` sums, which were `meta/` sums counted by `meta/count`; names
  the template does not have are dropped.

  Raises:
    KeyError: a name of the template that no rule finds in `saved`.
  """
  old_names = dict(_RENAMED)
  tree = {}
  for key in template:
    source = key if key in saved else old_names.get(key, key)
    tree[key] = saved[source]
  sums = {}
  for key in template['sums']:
    group, name = key.split('/', 1)
    if key in tree['sums']:
      sums[key] = tree['sums'][key]
    elif group == 'signal':
      sums[key] = tree['sums']['meta/count' if name == 'count' else
                               f'meta/{name}']  # fmt: skip
    else:
      raise KeyError(key)
  return {**tree, 'sums': sums}
