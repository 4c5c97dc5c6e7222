"""The kinds of run (`KINDS`), the checks that every kind shares, and the
builder of a run from its config (`build_run`).

`config.run` names the kind: 'maxl' (MAXL or a baseline of
`config.method`, `maxl_run.MaxlRun`) or 'combiner' (AuxiLearn's loss
combiner on given tasks, `combiner_run.CombinerRun`). `build_run(config,
info)` checks the config (the loop's fields, then the kind's own) and
builds the kind's run from the config and the dataset's description alone:
no data, nothing trained, no TensorFlow. `loop` trains any `Run`
(`protocol`, which this module re-exports), `restore` rebuilds one from
its workdir.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError
from maxl_jax.networks import layers, models, trunks
from maxl_jax.training import combiner_run, maxl_checks, maxl_run
from maxl_jax.training.config_fields import check_fields
from maxl_jax.training.protocol import Run, State

__all__ = ['KINDS', 'Kind', 'Run', 'State', 'build_run', 'kind_of', 'validate']


class Kind(NamedTuple):
  """A kind of run: its config checks and its builder (after the checks)."""

  check: Callable[[Any], None]
  build: Callable[[Any, DatasetInfo], Run]


KINDS = {
  'maxl': Kind(maxl_checks.check_config, maxl_run.build),
  'combiner': Kind(combiner_run.check_config, combiner_run.build),
}

# The loop's and the networks' fields, checked for every kind of run.
LOOP_CHOICES = {
  'train.on_nonfinite': ('stop', 'skip_step'),
  'model.name': tuple(trunks.TRUNKS),
  'model.conv_impl': layers.CONV_IMPLS,
  'model.compute_dtype': tuple(models.COMPUTE_DTYPES),
  'model.remat': tuple(trunks.REMAT_MODES),
}
LOOP_POSITIVE = (
  'train.epochs',
  'checkpoint.keep',
  'checkpoint.every_steps',
  'checkpoint.every_epochs',
  'log.progress_every_steps',
  'train.eval_every_epochs',
)


def kind_of(config) -> str:
  """`config.run`. A config.json from before the field: 'combiner' when it
  has a combiner group, else 'maxl'."""
  kind = config.run
  if kind not in KINDS:
    raise UsageError(
      f'config.run = {kind!r} is not one of {list(KINDS)}; set '
      '--config.run=<one of them>.'
    )
  return kind


def validate(config):
  """Raises UsageError for a bad config, before any data is loaded."""
  check_fields(config, LOOP_CHOICES, LOOP_POSITIVE)
  KINDS[kind_of(config)].check(config)


def build_run(config, info: DatasetInfo) -> Run:
  """Validates `config` and builds its run for the dataset `info`."""
  validate(config)
  return KINDS[kind_of(config)].build(config, info)
