"""Finished runs on disk: finding them, reading them, grouping seeds.

A run folder holds config.json, metrics.jsonl (one JSON row per epoch),
result.json (written when training finished) and checkpoints/<step>/. A
`--workdir` is a run folder, or a `compare_methods` parent whose subfolders
are run folders. Runs whose configs differ only in the seed (and in
bookkeeping fields such as paths and logging) form one group: the seeds of
one experiment.
"""

import dataclasses
import json
import math
import pathlib
from typing import Any

from maxl_jax.errors import UsageError
from maxl_jax.labels import SOURCES
from maxl_jax.step_metrics import SIGNAL
from maxl_jax.training.workdir import (
  CHECKPOINTS,
  CONFIG,
  METRICS,
  RESULT,
  TIMING,
)

TRAIN_S = 'train_s'  # Cumulative training seconds (from timing.jsonl).

# Config fields that do not change what a run computes (besides the seed).
BOOKKEEPING = (
  'seed',
  'compare_methods',
  # The kind of run: older configs lack the field, and their groups tell it
  # (maxl_jax/training/contract.py, `kind_of`).
  'run',
  'checkpoint.',
  'log.',
  'data.data_dir',
  'data.local_dir',
  'data.download',
  'data.eval_batch_size',
)


@dataclasses.dataclass(frozen=True)
class FinishedRun:
  """One finished run: its folder, display name and files' contents."""

  path: pathlib.Path
  name: str  # Unique among the analysed runs, e.g. 'c100/maxl'.
  config: dict[str, Any]
  result: dict[str, Any]
  metrics: list[dict[str, Any]]  # metrics.jsonl rows, in epoch order.

  @property
  def method(self) -> str:
    return self.config['method']

  @property
  def dataset(self) -> str:
    return self.config['data']['name']

  @property
  def seed(self) -> int:
    return int(self.config['seed'])

  @property
  def slug(self) -> str:
    """The name as a file-name part."""
    return self.name.replace('/', '_').replace(' ', '_')


def psi_label(config: dict) -> str:
  """The hierarchy of a run as a short string ('3', '20→100', 'halves', '—').

  A psi from the data's label hierarchy (human, or maxl.psi = 'hierarchy')
  is named by data.hierarchy ('ids' for a list of coarse ids), or by
  CIFAR-100's levels.
  """
  source, data = SOURCES[config['method']], config['data']
  if source.psi == 'none':
    return '—'
  hierarchical = config['maxl'].get('psi') == 'hierarchy'
  if source.psi == 'fine' or hierarchical:
    name = data.get('hierarchy', '')
    if name:
      return 'ids' if ',' in name else name
    return f'{data.get("primary_level")}→{data.get("aux_level")}'
  aux = config.get('baseline', {}).get('aux_classes', 0)
  if 'random_aux_classes' in source.options and aux:  # K, not ψ's.
    return f'K={aux}'
  return str(config['maxl']['psi_per_class'])


def data_label(config: dict) -> str:
  """The training data used: '100%', '5%' or '10/class'."""
  per_class = config['data'].get('per_class', 0)
  if per_class:
    return f'{per_class}/class'
  return f'{100 * config["data"].get("train_fraction", 1.0):g}%'


def flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  """A nested config dict as {'a.b': value} (dotted keys, as overrides)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _setting(config: dict) -> dict[str, Any]:
  """The flattened config without the seed and bookkeeping fields."""
  return {
    k: v
    for k, v in flatten(config).items()
    if not any(k == b or k.startswith(b) for b in BOOKKEEPING)
  }


def _read_json(path: pathlib.Path) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise UsageError(f'cannot read {path}: {e}.') from None


# Row keys of earlier versions: what trains g was logged with the θ2 steps.
_OLD_KEYS = {f'meta/{k}': f'signal/{k}' for k in SIGNAL}


def _renamed(row: dict) -> dict:
  """A metrics.jsonl row with the keys of this version."""
  return {_OLD_KEYS.get(k, k): v for k, v in row.items()}


def _read_run(path: pathlib.Path, name: str) -> FinishedRun:
  missing = [f for f in (CONFIG, METRICS, RESULT) if not (path / f).is_file()]
  if missing:
    raise UsageError(
      f'{path} is not a finished run: no {" or ".join(missing)} (run '
      'python -m experiments.run with this workdir until it finishes).'
    )
  lines = (path / METRICS).read_text().splitlines()
  try:
    metrics = [_renamed(json.loads(line)) for line in lines if line.strip()]
  except ValueError as e:
    raise UsageError(f'cannot read {path / METRICS}: {e}.') from None
  timing = path / TIMING  # Training seconds per epoch (newer runs).
  if timing.is_file():
    seconds = {
      row['epoch']: row['train_s']
      for row in map(json.loads, timing.read_text().splitlines())
    }
    metrics = [
      {**row, TRAIN_S: seconds[row['epoch']]} if row['epoch'] in seconds
      else row
      for row in metrics
    ]  # fmt: skip
  return FinishedRun(
    path, name, _read_json(path / CONFIG), _read_json(path / RESULT), metrics
  )


def find_runs(workdirs: list[str]) -> list[FinishedRun]:
  """The finished runs in `workdirs` (run folders or their parents).

  Raises:
    UsageError: a workdir that is missing, holds no run, or holds a run
      that has not finished (naming the missing files).
  """
  runs = []
  for workdir in workdirs:
    path = pathlib.Path(workdir)
    if not path.is_dir():
      raise UsageError(f'--workdir={workdir}: no such directory.')
    if (path / CONFIG).exists() or (path / METRICS).exists():
      runs.append(_read_run(path, path.resolve().name))
      continue
    subs = sorted(p for p in path.iterdir() if (p / CONFIG).is_file())
    if not subs:
      raise UsageError(
        f'--workdir={workdir} holds no run: no {CONFIG} in it or in its '
        'subfolders.'
      )
    parent = path.resolve().name
    runs.extend(_read_run(p, f'{parent}/{p.name}') for p in subs)
  unique = {r.path.resolve(): r for r in reversed(runs)}  # A workdir twice.
  return _unique_names([r for r in runs if unique[r.path.resolve()] is r])


def _unique_names(runs: list[FinishedRun]) -> list[FinishedRun]:
  """Runs of the same name are named by more of their path: 'seed0/maxl'."""
  depth = 1
  while len({r.name for r in runs}) < len(runs):
    depth += 1
    names = [r.name for r in runs]
    runs = [
      dataclasses.replace(
        r, name=str(pathlib.PurePath(*r.path.resolve().parts[-depth:]))
      )
      if names.count(r.name) > 1
      else r
      for r in runs
    ]
  return runs


def checkpoint_steps(run: FinishedRun) -> list[int]:
  """Steps of the checkpoints in the run's checkpoints/ folder."""
  path = run.path / CHECKPOINTS
  if not path.is_dir():
    return []
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())


def check_step(runs: list[FinishedRun], step: int | None):
  """Raises UsageError unless every run has a checkpoint at `step`."""
  for run in runs:
    steps = checkpoint_steps(run)
    if not steps:
      raise UsageError(f'{run.path} has no checkpoint in {CHECKPOINTS}/.')
    if step is not None and step not in steps:
      raise UsageError(
        f'--step={step}: {run.path} has no checkpoint at that step; it has '
        f'steps {steps}.'
      )


@dataclasses.dataclass(frozen=True)
class Group:
  """Runs that differ only in the seed."""

  label: str  # e.g. 'maxl ψ=3, 100% data' (+ dataset, + detail).
  runs: tuple[FinishedRun, ...]
  detail: str = ''  # Fields that tell it from a group of the same label.

  @property
  def first(self) -> FinishedRun:
    return self.runs[0]


def group_runs(runs: list[FinishedRun]) -> list[Group]:
  """Groups runs by their config without the seed, in first-seen order.

  Labels name the method, psi and training data, the dataset when several
  are analysed, and, for groups that would otherwise share a label, the
  config fields (last name part) in which they differ from the first-seen
  one of them, which keeps the plain label.
  """
  keyed: dict[str, list[FinishedRun]] = {}
  for run in runs:
    key = json.dumps(_setting(run.config), sort_keys=True, default=str)
    keyed.setdefault(key, []).append(run)
  several = len({r.dataset for r in runs}) > 1
  base = {}
  for key, members in keyed.items():
    config = members[0].config
    label = f'{config["method"]}'
    if SOURCES[config['method']].psi != 'none':
      label += f' ψ={psi_label(config)}'
    label += f', {data_label(config)} data'
    if several:
      label += f', {members[0].dataset}'
    base[key] = label
  groups = []
  for key, members in keyed.items():
    twins = [k for k in keyed if base[k] == base[key]]
    label, detail = base[key], ''
    if twins[0] != key:  # Named by what differs from the first-seen twin.
      mine = _setting(members[0].config)
      first = _setting(keyed[twins[0]][0].config)
      differ = sorted(
        k for k in set(mine) | set(first) if first.get(k) != mine.get(k)
      )
      detail = ', '.join(f'{k.split(".")[-1]}={mine.get(k)}' for k in differ)
      label += f' ({detail})'
    ordered = sorted(members, key=lambda r: (r.seed, r.name))
    groups.append(Group(label, tuple(ordered), detail))
  return groups


def series(run: FinishedRun, key: str) -> tuple[list[int], list[float]]:
  """(epochs, values) of a scalar metric, skipping rows without it."""
  epochs, values = [], []
  for row in run.metrics:
    value = row.get(key)
    if isinstance(value, (int, float)) and math.isfinite(value):
      epochs.append(int(row['epoch']))
      values.append(float(value))
  return epochs, values
