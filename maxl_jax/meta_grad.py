"""The meta-gradient estimators' former home: a re-export of
`maxl_jax.estimators` (CHANGELOG 0.2.0), kept so that code written against
`maxl_jax.meta_grad` runs unchanged. New code imports `maxl_jax.estimators`.
"""

import functools

from maxl_jax import estimators
from maxl_jax.estimators import *  # noqa: F403 - the re-export itself.
from maxl_jax.estimators import k_step

__all__ = [*estimators.__all__, 'OptimizerLookahead']


def OptimizerLookahead(tx, steps: int, entropy_only: bool = False):  # noqa: N802
  """The K-step lookahead estimator, bound: `estimators.k_step` with `tx`,
  `steps` and `entropy_only` (formerly a class of that name)."""
  return functools.partial(
    k_step, tx=tx, steps=steps, entropy_only=entropy_only
  )
