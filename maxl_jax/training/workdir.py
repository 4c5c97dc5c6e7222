"""A run's workdir: its files, checked before anything is written.

  config.json    the config (written at the start of training)
  dataset.json   the dataset's `DatasetInfo` (written with the config)
  metrics.jsonl  one row per epoch (`metrics.EpochWriter`)
  timing.jsonl   seconds of training (train_s, compilation included),
                 compilation (compile_s) and evaluation (eval_s) per epoch,
                 the first two cumulated over resumptions
  log.txt        the whole log of every session (`console`)
  result.json    the final result, once the run has finished
  checkpoints/   Orbax checkpoints of the state and the data position
  events.*       TensorBoard scalars

`config.json` + `dataset.json` + a checkpoint rebuild the run without its
data (`restore`).
"""

import json
import os

import ml_collections
from etils import epath

from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError
from maxl_jax.training import config_fields

CONFIG = 'config.json'
DATASET = 'dataset.json'
METRICS = 'metrics.jsonl'
TIMING = 'timing.jsonl'
RESULT = 'result.json'
CHECKPOINTS = 'checkpoints'
LOG = 'log.txt'


def as_path(workdir: str) -> epath.Path:
  """Local paths made absolute; `gs://` and other URLs as they are."""
  return epath.Path(workdir if '://' in workdir else os.path.abspath(workdir))


def check_writable(workdir: str):
  """Raises UsageError if `workdir` cannot be a run's directory.

  Local paths only (a URL is checked by its first write). Nothing is created.
  """
  if '://' in workdir:
    return
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise UsageError(
      f'--workdir={workdir} is an existing file; give a directory (new or '
      'one of an earlier run, to resume it).'
    )
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise UsageError(
      f'--workdir={workdir} cannot be created: {existing} is a file; give a '
      'path under a directory.'
    )
  if not os.access(existing, os.W_OK | os.X_OK):
    raise UsageError(
      f'--workdir={workdir} cannot be written ({existing} is not writable); '
      'give a directory you can write to.'
    )


def write_run_files(workdir: epath.Path, config_json: str, info: DatasetInfo):
  """config.json (the config as JSON text) and dataset.json."""
  (workdir / CONFIG).write_text(config_json)
  (workdir / DATASET).write_text(json.dumps(info.to_json(), indent=2))


def _need(workdir: epath.Path, name: str) -> epath.Path:
  path = workdir / name
  if not path.exists():
    raise UsageError(
      f'{workdir} holds no {name}: it is not the workdir of a run started by '
      'python -m experiments.run (or that run stopped before its first step).'
    )
  return path


def read_config(workdir: epath.Path) -> ml_collections.ConfigDict:
  """The run's config, as it was trained, with the fields of this version
  (`config_fields.upgrade`)."""
  config = ml_collections.ConfigDict(
    json.loads(_need(workdir, CONFIG).read_text())
  )
  return config_fields.upgrade(config)


def read_info(workdir: epath.Path) -> DatasetInfo:
  return DatasetInfo.from_json(json.loads(_need(workdir, DATASET).read_text()))
