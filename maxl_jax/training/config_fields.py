"""Reading and checking dotted config fields ('maxl.lam'), for every kind
of run (`contract`, `maxl_run`, `combiner_run`) and the sweeps, and
upgrading the config.json of a run written by an earlier version
(`upgrade`, where a run is restored)."""

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


# Fields added since the first version, each with the value that does what
# runs from before it did (which need not be today's default): the one table
# of `upgrade`. `run`: a config with a combiner group was a combiner run.
ADDED = (
  ('run', lambda config: 'combiner' if 'combiner' in config else 'maxl'),
  ('checkpoint.every_epochs', 1),
  ('log.drift_images', 1000),
  ('log.tensorboard', True),
  ('log.meta_signal_every', 1),  # What trains g was logged every θ2 step.
  ('train.label_smoothing', 0.0),
  ('maxl.psi', 'balanced'),
  ('maxl.example_weights', False),
  ('maxl.meta_loss', 'focal'),
  ('maxl.lookahead_scale', 1.0),
  ('maxl.lookahead_steps', 1),
  ('maxl.balance', 'sum'),
  ('baseline.soft_human_eps', 0.5),  # As since soft_human came with it.
  ('data.balance', 'primary'),  # Balanced by primary class, fine or not.
  ('data.hierarchy', ''),
  ('data.video_frames', 1),
  ('data.download', True),
  ('data.path', ''),
  ('data.test_fraction', 0.2),
  ('data.label_key', 'label'),
  ('model.widths', ()),  # The trunk's own widths.
  ('model.remat', 'none'),
)


def upgrade(config):
  """A run's config with every field of `ADDED` it lacks (in place;
  returned)."""
  with config.unlocked():
    for dotted, value in ADDED:
      *parents, field = dotted.split('.')
      node = config
      for part in parents:
        node = node[part]
      if field not in node:
        node[field] = value(config) if callable(value) else value
  return config


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

  A field missing from the config is skipped (a config.json of an earlier
  version is upgraded where a run is restored, `upgrade`).
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
