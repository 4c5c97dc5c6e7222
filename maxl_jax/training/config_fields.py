"""Reading and checking dotted config fields ('maxl.lam'), for every kind
of run (`contract`, `maxl_run`, `combiner_run`) and the sweeps."""

from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError


def config_field(config, dotted: str):
  """(the ConfigDict that holds `dotted`, the field's name), e.g. for
  'maxl.lam': (config.maxl, 'lam'). Raises KeyError for a missing field."""
  *parents, field = dotted.split('.')
  node = config
  for part in parents:
    node = node[part]
  if field not in node:
    raise KeyError(dotted)
  return node, field


_MISSING = object()


def _lookup(config, dotted):
  """The value of `dotted`, or _MISSING."""
  try:
    node, field = config_field(config, dotted)
  except KeyError:
    return _MISSING
  return node[field]


def check_fields(config, choices: dict, positive: tuple[str, ...]):
  """Raises UsageError unless each field of `choices` holds one of its
  values and each of `positive` is >= 1.

  A field missing from the config (the config.json of a run from before
  the field existed) is skipped: the code reads it with its default.
  """
  for field, allowed in choices.items():
    value = _lookup(config, field)
    if value is not _MISSING and value not in allowed:
      raise UsageError(
        f'config.{field} = {value!r} is not one of {list(allowed)}; set '
        f'--config.{field}=<one of them>.'
      )
  for field in positive:
    value = _lookup(config, field)
    if value is not _MISSING and value < 1:
      raise UsageError(f'config.{field} must be >= 1, got {value!r}.')


def steps_per_epoch(config, info: DatasetInfo) -> int:
  """θ1 steps per epoch: full batches, capped by train.steps_per_epoch."""
  num_steps = info.num_train // config.data.batch_size
  if config.train.steps_per_epoch:
    num_steps = min(num_steps, config.train.steps_per_epoch)
  if num_steps < 1:
    raise UsageError(
      f'config.data.batch_size = {config.data.batch_size} exceeds the '
      f'{info.num_train} training examples; use a smaller batch.'
    )
  return num_steps
