"""MAXL (Meta AuXiliary Learning) in JAX/Flax.

`import maxl_jax` gives the math (pure functions) and the library API for
your own loop (`api`: `maxl`, `single`, `uniform`, `human`,
`fixed_targets`, each a `Learner` of pure updates over a `MaxlState`)
without importing TensorFlow, TFDS, Orbax or CLU. The networks live in
`maxl_jax.networks`, the input pipeline in `maxl_jax.data`, the label
sources in `maxl_jax.labels`, and the run
building, training loop, checkpoints and restore in `maxl_jax.training`.
"""

from maxl_jax import (
  api,
  diagnostics,
  estimators,
  hierarchy,
  inverse_hvp,
  loss_combiner,
  losses,
  meta_grad,
  problem,
)
from maxl_jax.api import (
  Learner,
  MaxlState,
  fixed_targets,
  human,
  maxl,
  single,
  uniform,
)
from maxl_jax.errors import NonFiniteError, Preempted, UsageError
from maxl_jax.estimators import (
  ESTIMATORS,
  MetaInputs,
  MetaOutput,
  get_estimator,
)
from maxl_jax.problem import MaxlProblem

__all__ = [
  'ESTIMATORS',
  'Learner',
  'MaxlProblem',
  'MaxlState',
  'MetaInputs',
  'MetaOutput',
  'NonFiniteError',
  'Preempted',
  'UsageError',
  'api',
  'diagnostics',
  'estimators',
  'fixed_targets',
  'get_estimator',
  'hierarchy',
  'human',
  'inverse_hvp',
  'loss_combiner',
  'losses',
  'maxl',
  'meta_grad',
  'problem',
  'single',
  'uniform',
]
