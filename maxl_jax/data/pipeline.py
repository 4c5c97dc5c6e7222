"""Input pipeline: in-memory datasets, low-data subsets, batches as numpy.

`get_datasets(spec, seed=...)` (a `DataSpec`) loads a dataset once as
uint8 32x32 images (see `readers`), keeps this process's even share of the
training set, and returns a `TrainIterator` (shuffled, augmented,
normalised batches, an infinite iterator over epochs), an `EvalData`
(padded test batches with a mask; both in `batches`) and a `DatasetInfo`.
No model code and no JAX arrays here. Stored labels pass through the label
hierarchy (`groupings`, `spec.hierarchy`): 'label' is the primary class
and, with a hierarchy, 'fine_label' the hidden fine class.

Determinism: batch (epoch e, step s) of process p is a pure function of
(seed, e, s, p): the epoch's permutation comes from
`default_rng([seed, 0, e, p])`, the augmentation from
`default_rng([seed, 1, e, s, p])`, the low-data subset from
`default_rng([seed, 2])`.
"""

import math
from typing import NamedTuple

import jax
import numpy as np

from maxl_jax.data import groupings, readers, sources
from maxl_jax.data.batches import AUGMENTATIONS, Batch, EvalData, TrainIterator
from maxl_jax.data.info import DatasetInfo
from maxl_jax.data.spec import DataSpec
from maxl_jax.data.splits import (
  even_share,
  meta_split,
  subset_indices,
)
from maxl_jax.errors import UsageError

__all__ = [
  'AUGMENTATIONS',
  'Batch',
  'Datasets',
  'EvalData',
  'SplitArrays',
  'TrainIterator',
  'get_datasets',
  'load_test_split',
]


def _check_config(spec: DataSpec, process_index, process_count, device_count):
  """Raises UsageError for every bad `config.data` value, before loading."""
  if not 0 <= process_index < process_count:
    raise UsageError(
      f'process_index {process_index} not in [0, {process_count}).'
    )
  size = spec.batch_size
  for count, what in ((device_count, 'devices'), (process_count, 'hosts')):
    if size < 1 or size % count:
      raise UsageError(
        f'config.data.batch_size = {size} must be a positive multiple of '
        f'the {count} {what}; set it to e.g. '
        f'{max(1, round(size / count)) * count}.'
      )
  if spec.eval_batch_size < 1:
    raise UsageError(
      f'config.data.eval_batch_size = {spec.eval_batch_size} must be '
      '>= 1.'
    )
  if spec.augment not in AUGMENTATIONS:
    raise UsageError(
      f'config.data.augment = {spec.augment!r}; use one of '
      f'{AUGMENTATIONS}.'
    )
  fraction, per_class = spec.train_fraction, spec.per_class
  if not 0 < fraction <= 1 or per_class < 0:
    raise UsageError(
      f'config.data.train_fraction = {fraction} must be in (0, 1] and '
      f'config.data.per_class = {per_class} must be >= 0.'
    )
  if fraction < 1 and per_class > 0:
    raise UsageError(
      f'Both low-data options are set (config.data.train_fraction = '
      f'{fraction}, config.data.per_class = {per_class}); set only one '
      '(train_fraction=1.0 or per_class=0).'
    )
  if not 0 <= spec.meta_fraction < 1:
    raise UsageError(
      f'config.data.meta_fraction = {spec.meta_fraction} must be in '
      '[0, 1) (0: no held-out meta split).'
    )
  if spec.name in readers.DATASETS:  # Else make_reader says so.
    groupings.label_maps(spec, readers.DATASETS[spec.name][0])


def label_maps(spec: DataSpec, reader) -> groupings.LabelMaps:
  """The hierarchy of `config.data.hierarchy`, or the one the data brought
  (`reader.fine_to_primary`: an .npz's fine labels)."""
  parents = getattr(reader, 'fine_to_primary', None)
  if parents is None:
    return groupings.label_maps(spec, reader.num_classes)
  if spec.hierarchy:
    raise UsageError(
      f'{spec.name}: the data has fine labels (a label hierarchy) '
      'and config.data.hierarchy is set too; give only one.'
    )
  fine = np.arange(len(parents), dtype=np.int64)
  return groupings.LabelMaps(np.asarray(parents, np.int64), fine)


# config.data.balance: the classes a low-data subset and the held-out split
# keep in proportion. auto: fine for digit_pairs (the positive control,
# whose pairs are its point), primary for every other dataset.
BALANCES = ('auto', 'primary', 'fine')


def balance_labels(spec: DataSpec, maps: groupings.LabelMaps) -> np.ndarray:
  """Stored label -> the class that subsets balance (config.data.balance).

  Raises:
    UsageError: an unknown value, or 'fine' without a label hierarchy.
  """
  balance = spec.balance
  if balance not in BALANCES:
    raise UsageError(
      f'config.data.balance = {balance!r}; use one of {list(BALANCES)}.'
    )
  if balance == 'auto':
    balance = 'fine' if spec.name == 'digit_pairs' else 'primary'
  if balance == 'primary':
    return maps.primary_of
  if maps.fine_of is None:
    raise UsageError(
      f"config.data.balance = 'fine' needs fine classes, and "
      f'{spec.name} has no label hierarchy as configured: set '
      '--config.data.hierarchy, or --config.data.balance=primary.'
    )
  return maps.fine_of


def eval_batch_size(size: int, device_count: int, process_count: int) -> int:
  """`size` rounded up to a multiple of the devices and hosts.

  Evaluation masks padded examples, so a larger batch changes nothing but
  the padding.
  """
  step = math.lcm(device_count, process_count)
  return -(-size // step) * step


def _load_share(reader, split, process_index, process_count, subset=None):
  """This process's share of `split` (of `subset` indices if given).

  Returns:
    (images uint8 [n, 32, 32, C], labels [n], global indices [n], global n).
  """
  if subset is None and process_count == 1:
    images, labels = reader.load(split)
    return images, labels, np.arange(len(labels)), len(labels)
  if subset is None:
    subset = np.arange(len(reader.labels(split)))
  lo, hi = even_share(len(subset), process_index, process_count)
  if hi == lo:
    raise UsageError(
      f'{len(subset)} {split} examples cannot be shared by '
      f'{process_count} processes; use fewer processes or more data.'
    )
  first, last = int(subset[lo]), int(subset[hi - 1]) + 1
  images, labels = reader.load(split, first, last)
  if len(labels) != last - first:
    raise RuntimeError(
      f'{reader.name} {split}[{first}:{last}] gave {len(labels)} examples; '
      'the prepared dataset changed since its labels were read.'
    )
  keep = subset[lo:hi] - first
  if len(keep) != len(labels):  # A low-data subset: drop the others.
    images, labels = images[keep], labels[keep]
  return images, labels, np.arange(lo, hi), len(subset)


class Datasets(NamedTuple):
  """One process's pipelines of a run."""

  train: TrainIterator
  eval: EvalData
  info: DatasetInfo
  # Batches of the held-out meta split (config.data.meta_fraction > 0).
  meta: TrainIterator | None = None


def get_datasets(
  spec: DataSpec,
  *,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  device_count: int | None = None,
) -> 'Datasets':
  """Loads `spec.name` and builds this process's pipelines.

  Args:
    spec: the dataset and how to serve it.
    seed: the run seed (subset choice, shuffling, augmentation).
    process_index: this process (`jax.process_index()`).
    process_count: number of processes (`jax.process_count()`).
    device_count: global device count; default `jax.device_count()`.

  Returns:
    `Datasets`. Batches hold `batch_size // process_count` rows
    (`eval_batch_size`, `meta_batch_size` likewise).

  Raises:
    UsageError: a bad config value or a dataset that is not available.
  """
  if device_count is None:
    device_count = jax.device_count()
  _check_config(spec, process_index, process_count, device_count)
  reader = sources.make_reader(spec)
  maps = label_maps(spec, reader)
  primary_of, fine_of = maps.primary_of, maps.fine_of
  fraction, per_class = spec.train_fraction, spec.per_class
  balanced = balance_labels(spec, maps)[reader.labels('train')]
  subset, held_out = None, None
  if fraction < 1 or per_class > 0:
    subset = subset_indices(
      balanced, train_fraction=fraction, per_class=per_class, seed=seed
    )
  if spec.meta_fraction > 0:
    pool = subset
    if pool is None:
      pool = np.arange(len(reader.labels('train')))
    kept, held = meta_split(
      balanced[pool],
      fraction=spec.meta_fraction,
      seed=seed,
    )
    subset, held_out = pool[kept], pool[held]

  def iterator(indices, batch_size, stream):
    images, labels, positions, count = _load_share(
      reader, 'train', process_index, process_count, indices
    )
    if count < batch_size:
      what = 'batch_size' if stream == 0 else 'meta_batch_size'
      raise UsageError(
        f'config.data.{what} = {batch_size} exceeds the {count} '
        f'{"training" if stream == 0 else "held-out"} examples; use a '
        'smaller batch.'
      )
    it = TrainIterator(
      images,
      primary_of[labels],
      positions,
      batch_size=batch_size // process_count,
      steps_per_epoch=count // batch_size,
      augment=spec.augment,
      seed=seed,
      process_index=process_index,
      fine_labels=None if fine_of is None else fine_of[labels],
      stream=stream,
    )
    return it, count

  train, num_train = iterator(subset, spec.batch_size, 0)
  meta, num_meta = None, 0
  if held_out is not None:
    meta_batch = spec.meta_batch_size or spec.batch_size
    meta, num_meta = iterator(held_out, meta_batch, 1)
  images, labels, test_index, num_test = _load_share(
    reader, 'test', process_index, process_count
  )
  eval_batch = (
    eval_batch_size(spec.eval_batch_size, device_count, process_count)
    // process_count
  )
  max_share = -(-num_test // process_count)  # Largest process share.
  eval_data = EvalData(
    images,
    primary_of[labels],
    batch_size=eval_batch,
    num_batches=-(-max_share // eval_batch),
    fine_labels=None if fine_of is None else fine_of[labels],
    indices=test_index,
  )
  info = DatasetInfo(
    name=spec.name,
    num_classes=maps.num_primary,
    image_shape=(readers.SIZE, readers.SIZE, reader.channels),
    num_train=num_train,
    num_test=num_test,
    num_meta=num_meta,
    fine_num_classes=maps.num_fine,
    fine_to_primary=maps.fine_to_primary,
  )
  return Datasets(train, eval_data, info, meta)


class SplitArrays(NamedTuple):
  """A whole test split (`load_test_split`)."""

  images: np.ndarray  # uint8 [n, 32, 32, C].
  labels: np.ndarray  # int32 [n] primary classes.
  fine_labels: np.ndarray | None  # int32 [n] fine classes; None: no hierarchy.


def load_test_split(spec: DataSpec) -> SplitArrays:
  """The whole test split, with the fine labels of a label hierarchy.

  For analysing a finished run: the training set is not read.
  """
  reader = sources.make_reader(spec)
  maps = label_maps(spec, reader)
  images, labels = reader.load('test')
  fine = None
  if maps.fine_of is not None:
    fine = maps.fine_of[labels].astype(np.int32)
  return SplitArrays(images, maps.primary_of[labels].astype(np.int32), fine)
