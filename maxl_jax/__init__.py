"""MAXL (Meta AuXiliary Learning) in JAX/Flax.

`import maxl_jax` gives the math (pure functions) without importing TFDS,
Orbax or CLU. The networks live in `maxl_jax.networks`, the input pipeline
in `maxl_jax.data`, the label sources in `maxl_jax.labels`, and the run
assembly, training loop, checkpoints and restore in `maxl_jax.training`.
"""

from maxl_jax import (
  diagnostics,
  hierarchy,
  inverse_hvp,
  loss_combiner,
  losses,
  meta_grad,
  problem,
)
from maxl_jax.errors import NonFiniteError, Preempted, UsageError
from maxl_jax.meta_grad import ESTIMATORS, MetaOutput, get_estimator
from maxl_jax.problem import MaxlProblem

__all__ = [
  'ESTIMATORS',
  'MaxlProblem',
  'MetaOutput',
  'NonFiniteError',
  'Preempted',
  'UsageError',
  'diagnostics',
  'get_estimator',
  'hierarchy',
  'inverse_hvp',
  'loss_combiner',
  'losses',
  'meta_grad',
  'problem',
]
