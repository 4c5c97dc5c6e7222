"""A step's metrics on device: their names, the running sums, the guard.

Steps add their values to running sums in `MaxlState.sums` (on device, no
host round trip), and every update passes through the non-finite guard
(`guard_update`), which records the first step whose losses or gradient
norm are not finite, by name. The host side (epoch means, rows, sinks) is
`training/metrics.py`.
"""

import jax
import jax.numpy as jnp

from maxl_jax import diagnostics

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
