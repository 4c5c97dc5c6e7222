"""Which run a config describes: MAXL's (or a baseline's), or a combiner's.

A config with a `combiner` group (experiments/configs/combine_fashion.py)
trains AuxiLearn's loss combiner on given tasks (`combine.CombineRun`); any
other trains `config.method` (`assembly.Run`). Both train through `loop`
and restore through `restore`.
"""

from maxl_jax.data.info import DatasetInfo
from maxl_jax.training import assembly, combine

Run = assembly.Run | combine.CombineRun


def validate(config):
  """Raises UsageError for a bad config, before any data is loaded."""
  if combine.is_combiner(config):
    combine.validate(config)
  else:
    assembly.validate(config)


def build_run(config, info: DatasetInfo) -> Run:
  """The run of `config` for the dataset `info` (no data, nothing trained)."""
  if combine.is_combiner(config):
    return combine.build_run(config, info)
  return assembly.build_run(config, info)
