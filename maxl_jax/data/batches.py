"""Batches of in-memory arrays, as numpy: the training iterator
(shuffled, augmented, normalised, infinite over epochs) and the padded
test batches with a mask. No model code and no JAX arrays here.

Determinism: batch (epoch e, step s) of process p is a pure function of
(seed, e, s, p): the epoch's permutation comes from
`default_rng([seed, 0, e, p])`, the augmentation from
`default_rng([seed, 1, e, s, p])` (`pipeline` builds them).
"""

import numpy as np

from maxl_jax.data.images import crop_flip, normalize
from maxl_jax.data.splits import seed_entropy
from maxl_jax.errors import UsageError

Batch = dict[str, np.ndarray]

AUGMENTATIONS = ('crop_flip', 'crop', 'none')
_SHUFFLE, _AUGMENT = 0, 1  # Salts of the seeded streams (splits: 2, 3).


class TrainIterator:
  """Infinite iterator over epochs of this process's training batches.

  `next(it)` gives {'image': float32 [B, 32, 32, C] normalised, 'label':
  int32 [B], 'index': int32 [B] global position in the training set,
  'fine_label': int32 [B] (with a label hierarchy only)}, B = the
  process-local batch. The raw process-local arrays stay available as
  `images` (uint8), `labels`, `indices` and `fine_labels`.
  """

  def __init__(
    self,
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    *,
    batch_size: int,
    steps_per_epoch: int | None = None,
    augment: str = 'crop_flip',
    seed: int = 0,
    process_index: int = 0,
    fine_labels: np.ndarray | None = None,
    stream: int = 0,
  ):
    self.images, self.labels, self.indices = images, labels, indices
    self.fine_labels = fine_labels
    self.batch_size = batch_size
    if steps_per_epoch is None:
      steps_per_epoch = len(labels) // batch_size
    if steps_per_epoch < 1 or steps_per_epoch * batch_size > len(labels):
      raise UsageError(
        f'{steps_per_epoch} steps of batch {batch_size} do not fit in the '
        f'{len(labels)} local training examples; use a smaller '
        'config.data.batch_size.'
      )
    if augment not in AUGMENTATIONS:
      raise UsageError(f'augment = {augment!r}; use one of {AUGMENTATIONS}.')
    self.steps_per_epoch = steps_per_epoch
    self._augment, self._seed = augment, seed_entropy(seed)
    self._process_index = process_index
    # Stream 0: the training set; others (the held-out split) draw apart.
    self._salt = [stream] if stream else []
    self._epoch, self._step = 0, 0
    self._perm_epoch, self._perm = -1, None

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._perm_epoch:  # Cached: one permutation per epoch.
      rng = np.random.default_rng(
        [self._seed, _SHUFFLE, epoch, self._process_index, *self._salt]
      )
      self._perm, self._perm_epoch = rng.permutation(len(self.labels)), epoch
    return self._perm

  def batch(self, epoch: int, step: int) -> Batch:
    """Batch `step` of `epoch`: a pure function of (seed, epoch, step)."""
    rows = self._permutation(epoch)[
      step * self.batch_size : (step + 1) * self.batch_size
    ]
    images = self.images[rows]
    if self._augment in ('crop_flip', 'crop'):
      rng = np.random.default_rng(
        [self._seed, _AUGMENT, epoch, step, self._process_index, *self._salt]
      )
      images = crop_flip(images, rng, flip=self._augment == 'crop_flip')
    batch = {
      'image': normalize(images),
      'label': self.labels[rows].astype(np.int32),
      'index': self.indices[rows].astype(np.int32),
    }
    if self.fine_labels is not None:
      batch['fine_label'] = self.fine_labels[rows].astype(np.int32)
    return batch

  def __iter__(self):
    return self

  def __next__(self) -> Batch:
    batch = self.batch(self._epoch, self._step)
    self._step += 1
    if self._step == self.steps_per_epoch:
      self._epoch, self._step = self._epoch + 1, 0
    return batch

  def get_state(self) -> dict[str, int]:
    """Position of the next batch: {'epoch': e, 'step': s}."""
    return {'epoch': int(self._epoch), 'step': int(self._step)}

  def set_state(self, state: dict[str, int]):
    """Resumes at `state` (from `get_state`): the same batches follow."""
    epoch, step = int(state['epoch']), int(state['step'])
    if epoch < 0 or not 0 <= step < self.steps_per_epoch:
      raise UsageError(
        f'Input pipeline state {dict(state)} does not fit '
        f'{self.steps_per_epoch} steps per epoch; resume with the '
        'config.data.batch_size and dataset settings of the saved run.'
      )
    self._epoch, self._step = epoch, step


class EvalData:
  """Iterable of padded evaluation batches of a fixed size.

  Each batch: {'image': float32 [B, 32, 32, C], 'label': int32 [B], 'mask':
  float32 [B] (1 real, 0 padding), 'index': int32 [B] position in the test
  split (0 for padding), 'fine_label' (with a label hierarchy:
  the hidden fine class, for scoring label recovery)}. Every batch has
  B rows (the last one padded) and every process yields `len(self)` batches.
  """

  def __init__(
    self,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    num_batches: int | None = None,
    fine_labels: np.ndarray | None = None,
    indices: np.ndarray | None = None,
  ):
    self.images, self.labels, self.fine_labels = images, labels, fine_labels
    # Global positions in the test split (batch['index']; default 0..n-1).
    self.indices = np.arange(len(labels)) if indices is None else indices
    self.batch_size = batch_size
    self.num_examples = len(labels)
    self.num_batches = num_batches or -(-self.num_examples // batch_size)

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self):
    size = self.batch_size
    for start in range(0, self.num_batches * size, size):
      rows = slice(start, start + size)
      batch = {
        'image': normalize(_pad(self.images[rows], size)),
        'label': _pad(self.labels[rows], size).astype(np.int32),
        'mask': _pad(np.ones(len(self.labels[rows]), np.float32), size),
        'index': _pad(self.indices[rows], size).astype(np.int32),
      }
      if self.fine_labels is not None:
        fine = _pad(self.fine_labels[rows], size)
        batch['fine_label'] = fine.astype(np.int32)
      yield batch


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  """Zero-pads x along axis 0 to `size` rows."""
  return np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])
