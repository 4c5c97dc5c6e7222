"""The meta-gradient estimators' former home: a re-export of
`maxl_jax.estimators` (CHANGELOG 0.2.0), kept so that code written against
`maxl_jax.meta_grad` runs unchanged. New code imports `maxl_jax.estimators`.
"""

import functools

from maxl_jax.estimators import (
  AUXILEARN_INVERSE,
  BALANCES,
  ESTIMATORS,
  META_LOSSES,
  Entry,
  MetaInputs,
  MetaOutput,
  balance,
  bind,
  check_held_out,
  cross_entropy,
  entropy_gradient,
  entropy_only,
  entry,
  first_order,
  get_estimator,
  gradient_parts,
  implicit,
  k_step,
  lookahead_alpha,
  meta_objective,
  meta_primary_loss,
  needs_held_out,
  normalized,
  structured,
  unrolled,
)

__all__ = [
  'AUXILEARN_INVERSE',
  'BALANCES',
  'ESTIMATORS',
  'META_LOSSES',
  'Entry',
  'MetaInputs',
  'MetaOutput',
  'OptimizerLookahead',
  'balance',
  'bind',
  'check_held_out',
  'cross_entropy',
  'entropy_gradient',
  'entropy_only',
  'entry',
  'first_order',
  'get_estimator',
  'gradient_parts',
  'implicit',
  'k_step',
  'lookahead_alpha',
  'meta_objective',
  'meta_primary_loss',
  'needs_held_out',
  'normalized',
  'structured',
  'unrolled',
]


def OptimizerLookahead(tx, steps: int, entropy_only: bool = False):  # noqa: N802
  """The K-step lookahead estimator, bound: `estimators.k_step` with `tx`,
  `steps` and `entropy_only` (formerly a class of that name)."""
  return functools.partial(
    k_step, tx=tx, steps=steps, entropy_only=entropy_only
  )
