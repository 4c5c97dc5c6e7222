"""MAXL's config checks: its choice fields (the registries' names) and
the settings that only make sense together. Read once, before the run is
built (`contract.validate`); every problem is a `UsageError`."""

from maxl_jax import estimators, labels
from maxl_jax.errors import UsageError
from maxl_jax.training import optim, schedule
from maxl_jax.training.config_fields import check_fields

POSITIVE = ('maxl.psi_per_class',)


def choices() -> dict:
  """Each choice field and its values (estimators as registered now)."""
  return {
    'method': labels.METHODS,
    'maxl.schedule': schedule.NAMES,
    'maxl.meta_grad': tuple(estimators.ESTIMATORS),
    'maxl.meta_loss': estimators.META_LOSSES,
    'maxl.balance': estimators.BALANCES,
    'label_opt.name': optim.OPTIMIZERS,
  }


def check_config(config):
  """Checks MAXL's choice fields and numbers; raises UsageError."""
  check_fields(config, choices(), POSITIVE)
  # θ2 follows maxl.meta_grad's estimator (MAXL; not its controls).
  meta = labels.source(config.method).meta_gradient
  if (
    config.model.conv_impl == 'im2col_bf16'
    and meta
    and config.maxl.meta_grad == 'unrolled'
  ):
    raise UsageError(
      "model.conv_impl='im2col_bf16' is differentiable once, but "
      "maxl.meta_grad='unrolled' differentiates twice: use "
      '--config.maxl.meta_grad=structured (or first_order), or another '
      'model.conv_impl.'
    )
  name = config.maxl.meta_grad
  if (
    meta
    and estimators.needs_held_out(name)
    and not config.data.meta_fraction > 0
  ):
    raise UsageError(
      f'maxl.meta_grad={name!r} evaluates the primary loss on a held-out '
      'meta batch: set --config.data.meta_fraction > 0, e.g. 0.1.'
    )
  example_weights = config.maxl.example_weights
  smoothing = config.train.label_smoothing
  if config.maxl.lookahead_scale <= 0:
    raise UsageError(
      'config.maxl.lookahead_scale must be > 0, got '
      f'{config.maxl.lookahead_scale!r} (1 = the paper).'
    )
  steps = config.maxl.lookahead_steps
  if not isinstance(steps, int) or steps < 1:
    raise UsageError(
      f'config.maxl.lookahead_steps must be an int >= 1, got {steps!r} '
      '(1 = the paper).'
    )
  if steps > 1 and (
    config.maxl.meta_grad not in ('structured', 'unrolled')
    or config.maxl.lookahead_scale != 1
  ):
    raise UsageError(
      f'config.maxl.lookahead_steps = {steps} differentiates exactly '
      "through θ1's own optimiser: use --config.maxl.meta_grad=structured "
      '(or unrolled) and --config.maxl.lookahead_scale=1.'
    )
  if example_weights and not meta:
    learnt = [m for m, s in labels.SOURCES.items() if s.meta_gradient]
    raise UsageError(
      'maxl.example_weights=True weights the auxiliary loss of learnt '
      f'labels, so it needs method={"|".join(learnt)} (got '
      f'{config.method!r}); set --config.maxl.example_weights=False.'
    )
  if not 0 <= smoothing < 1:
    raise UsageError(
      f'config.train.label_smoothing must be in [0, 1), got {smoothing!r}.'
    )
  # Whether the dataset has the hierarchy that method=human or maxl.psi =
  # 'hierarchy' needs is in its DatasetInfo: make_label_source checks it.
  labels.check_psi_choice(config.maxl.psi)
