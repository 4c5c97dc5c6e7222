"""MAXL (Meta AuXiliary Learning) in JAX/Flax.

`import maxl_jax` gives the math (pure functions) without importing TFDS,
Orbax or CLU. The networks live in `maxl_jax.networks`, the input pipeline
in `maxl_jax.data`, the label sources in `maxl_jax.labels`, and the run
assembly, training loop, checkpoints and restore in `maxl_jax.training`.
"""

from maxl_jax import (
  analysis,
  combiner,
  hierarchy,
  implicit,
  lookahead,
  losses,
  meta_grad,
)
from maxl_jax.errors import UsageError
from maxl_jax.lookahead import MaxlProblem
from maxl_jax.meta_grad import ESTIMATORS, MetaOutput, get_estimator

__all__ = [
  'ESTIMATORS',
  'MaxlProblem',
  'MetaOutput',
  'UsageError',
  'analysis',
  'combiner',
  'get_estimator',
  'hierarchy',
  'implicit',
  'lookahead',
  'losses',
  'meta_grad',
]
