"""The estimators of the meta-gradient ∇θ2 J, registered by name.

Each estimator is a function `(problem, inputs: MetaInputs) -> (grad_theta2,
MetaOutput)` in its own module (`base.Estimator`); `ESTIMATORS` names them
with what each owns (`Entry`: whether it needs a held-out meta batch, how
its settings are bound). A new estimator is its module, one entry here and
one agreement test; the run builder reads the registry (and maps a config
group to the entry's settings where it has any). `entropy_only` is a
control, not an estimator of ∇J: θ2 follows the entropy part alone. The
K-step lookahead (`k_step`) is chosen by `lookahead_steps`, not by name.

The meta objective's primary loss is `problem.meta_loss` (one of
`META_LOSSES`); θ2's gradient from its two parts is one of `BALANCES`.
"""

import dataclasses
from collections.abc import Callable

from maxl_jax.errors import UsageError
from maxl_jax.estimators.balances import BALANCES, balance, normalized
from maxl_jax.estimators.base import (
  Estimator,
  MetaInputs,
  MetaOutput,
  entropy_gradient,
  gradient_parts,
  lookahead_alpha,
  meta_objective,
  meta_primary_loss,
)
from maxl_jax.estimators.entropy_only import entropy_only
from maxl_jax.estimators.first_order import first_order
from maxl_jax.estimators.implicit import (
  AUXILEARN_INVERSE,
  held_out_error,
  implicit,
  implicit_settings,
)
from maxl_jax.estimators.k_step import k_step
from maxl_jax.estimators.meta_losses import META_LOSSES, cross_entropy
from maxl_jax.estimators.structured import structured
from maxl_jax.estimators.unrolled import unrolled

__all__ = [
  'AUXILEARN_INVERSE',
  'BALANCES',
  'ESTIMATORS',
  'META_LOSSES',
  'Entry',
  'Estimator',
  'MetaInputs',
  'MetaOutput',
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


@dataclasses.dataclass(frozen=True)
class Entry:
  """An estimator `fn` (calling the entry calls it) and what it owns.

  Attributes:
    fn: the estimator (`base.Estimator`), its settings at their defaults.
    held_out: it needs a held-out meta batch.
    settings: `settings(fn, **values)` -> (fn with the settings bound, a
      transformation of θ2's gradient before θ2's optimiser, or None);
      None: it has no settings.
  """

  fn: Callable
  held_out: bool = False
  settings: Callable | None = None

  def __call__(self, *args, **kwargs):
    return self.fn(*args, **kwargs)


ESTIMATORS = {
  'unrolled': Entry(unrolled),
  'structured': Entry(structured),
  'first_order': Entry(first_order),
  'implicit': Entry(implicit, held_out=True, settings=implicit_settings),
  'entropy_only': Entry(entropy_only),
}


def entry(name: str) -> Entry:
  """The entry registered as `name`; a clear error for unknown names."""
  if name not in ESTIMATORS:
    raise UsageError(
      f'unknown meta-gradient method {name!r}; choose one of '
      f'{sorted(ESTIMATORS)}.'
    )
  return ESTIMATORS[name]


def get_estimator(name: str):
  """The estimator function registered as `name` (its settings' defaults)."""
  return entry(name).fn


def needs_held_out(name: str) -> bool:
  """Whether estimator `name` evaluates its meta objective on a held-out
  batch (the held-out rule, once)."""
  return entry(name).held_out


def check_held_out(name: str, has_held_out: bool):
  """UsageError if `name` needs a held-out batch and has none."""
  if needs_held_out(name) and not has_held_out:
    raise held_out_error(name)


def bind(name: str, **values):
  """(estimator `name` with its settings `values` bound, the
  transformation of θ2's gradient before θ2's optimiser, or None).
  UsageError for settings of an estimator that has none."""
  found = entry(name)
  if found.settings is None:
    if values:
      raise UsageError(
        f'meta-gradient {name!r} takes no settings, got {sorted(values)}.'
      )
    return found.fn, None
  return found.settings(found.fn, **values)
