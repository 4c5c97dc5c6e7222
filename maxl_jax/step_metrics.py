"""A step's metrics: their names, and the rule that skips a non-finite step.

Every step returns `(state, metrics)`: a flat dict of that step's values,
`train/<name>` for a θ1 update, `meta/<name>` for a θ2 update,
`signal/<name>` for what trains g (only where the step computes it) and
`grad_norm`, the norm of the update's gradient. Summing them over an epoch
and the run's non-finite guard belong to the loop (`training/carry.py`).
"""

import jax
import jax.numpy as jnp

TRAIN = ('loss_pri', 'loss_aux', 'accuracy')  # Per θ1 step.
META = (  # Per θ2 step.
  'loss_before',
  'loss_after',
  'meta_loss',
  'entropy',
  'aux_usage',
  'aux_entropy',
)
# What trains g: the norms of θ2's gradient's two parts as given to its
# optimiser (after `maxl.balance`), their cosine and the meta
# part's share of the two norms (`diagnostics.gradient_parts_stats`).
SIGNAL = ('grad_meta_norm', 'grad_entropy_norm', 'grad_parts_cosine',
          'meta_share')  # fmt: skip
AUX_HIST = 'meta/aux_hist'  # [K] mean probability of each auxiliary class.
AUX_WEIGHT = 'meta/aux_weight'  # The mean per-example weight (with them).
# The values whose finiteness decides whether a step is applied, each the
# first of its metric names that the step returns (a θ1 step's loss_pri is
# train/loss_pri, a θ2 step's the loss before its lookahead).
GUARDED = {
  'loss_pri': ('train/loss_pri', 'meta/loss_before'),
  'loss_aux': ('train/loss_aux', 'meta/loss_aux'),
  'meta_loss': ('meta/meta_loss',),
  'grad_norm': ('grad_norm',),
}

Metrics = dict[str, jax.Array]


def prefixed(group: str, values: dict) -> Metrics:
  """`values` named `<group>/<name>`."""
  return {f'{group}/{k}': v for k, v in values.items()}


def guarded_values(metrics: Metrics) -> jax.Array:
  """[len(GUARDED)] float32: each guarded value of a step's metrics (0
  where the step has none)."""

  def first(keys):
    found = [metrics[k] for k in keys if k in metrics]
    return jnp.asarray(found[0] if found else 0.0, jnp.float32)

  return jnp.stack([first(keys) for keys in GUARDED.values()])


def skip_nonfinite(step):
  """`step(state, *batches) -> (state, metrics)` that keeps the old state
  when a guarded value is not finite; metrics['nonfinite'] is then 1."""

  def guarded(state, *batches):
    new, metrics = step(state, *batches)
    finite = jnp.all(jnp.isfinite(guarded_values(metrics)))
    chosen = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    return chosen, {**metrics, 'nonfinite': (~finite).astype(jnp.int32)}

  return guarded
