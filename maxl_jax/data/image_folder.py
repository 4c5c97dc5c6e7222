"""data.name=folder: a user's image folder, one sub-folder of images per
class, under train/ and test/ or split by `config.data.test_fraction` (a
fixed seed). Every image is checked as it is listed (`user_data`'s rules:
a user-fixable problem is a `UsageError` naming the file and the fix).
"""

import os

import numpy as np
from PIL import Image

from maxl_jax.data import readers
from maxl_jax.data.readers import Arrays
from maxl_jax.data.user_data import check_path
from maxl_jax.errors import UsageError

SPLIT_SEED = 0  # data.name=folder without train/ and test/: a fixed split.
_GRAY_MODES = ('1', 'L', 'LA', 'I', 'F', 'La')


def _image_mode(path: str) -> str:
  """PIL's mode of the image at `path`; UsageError if it is not one."""
  try:
    with Image.open(path) as image:
      return image.mode
  except Exception:  # PIL raises several kinds for a non-image.
    raise UsageError(
      f'{path} is not an image (PIL cannot read it); keep only images in '
      'the class folders.'
    ) from None


def _visible(folder: str) -> list[str]:
  return sorted(n for n in os.listdir(folder) if not n.startswith('.'))


def _class_folders(root: str) -> list[str]:
  folders = [n for n in _visible(root) if os.path.isdir(os.path.join(root, n))]
  if len(folders) < 2:
    raise UsageError(
      f'{root} has {len(folders)} class folder{"s" * (len(folders) != 1)} '
      f'({", ".join(folders) or "none"}); give one sub-folder of images per '
      'class, at least 2 classes.'
    )
  return folders


def _class_files(folder: str) -> list[str]:
  names = [
    n for n in _visible(folder) if os.path.isfile(os.path.join(folder, n))
  ]
  if not names:
    raise UsageError(f'class folder {folder} holds no images.')
  return [os.path.join(folder, n) for n in names]


class ImageFolderReader(readers.Reader):
  """data.name=folder: `root/<class>/*` (split by `test_fraction`, a fixed
  seed) or `root/train/<class>/*` and `root/test/<class>/*`.

  Any format PIL reads; every image is checked at construction (header
  only): all grayscale or all colour.
  """

  def __init__(self, root: str, test_fraction: float):
    self.name = 'folder'
    check_path(
      root,
      'folder reads an image folder: set --config.data.path=DIR (one '
      'sub-folder of images per class)',
      'directory',
    )
    subdirs = set(_visible(root))
    if {'train', 'test'} <= subdirs:
      self.classes = _class_folders(os.path.join(root, 'train'))
      test_classes = [
        n for n in _visible(os.path.join(root, 'test'))
        if os.path.isdir(os.path.join(root, 'test', n))
      ]  # fmt: skip
      unknown = sorted(set(test_classes) - set(self.classes))
      if unknown:
        raise UsageError(
          f'{root}/test has class folders not in {root}/train: '
          f'{", ".join(unknown)}.'
        )
      self._files = {
        split: self._list(os.path.join(root, split), required=split == 'train')
        for split in ('train', 'test')
      }
      if not len(self._files['test'][0]):
        raise UsageError(f'{root}/test holds no images.')
    else:
      if not 0 < test_fraction < 1:
        raise UsageError(
          f'config.data.test_fraction = {test_fraction} must be in (0, 1) '
          f'({root} has no train/ and test/ folders, so a fraction of each '
          'class is held out for testing).'
        )
      self.classes = _class_folders(root)
      files, labels = self._list(root, required=True)
      self._files = self._split(files, labels, test_fraction)
    self.num_classes = len(self.classes)
    self.channels = self._check_modes()

  def _list(self, base, required):
    files, labels = [], []
    for label, cls in enumerate(self.classes):
      folder = os.path.join(base, cls)
      if not os.path.isdir(folder) and not required:
        continue
      found = _class_files(folder)
      files += found
      labels += [label] * len(found)
    return files, np.asarray(labels, np.int64)

  def _split(self, files, labels, fraction):
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for label in range(len(self.classes)):
      ids = np.flatnonzero(labels == label)
      if len(ids) < 2:
        raise UsageError(
          f'class folder {self.classes[label]} has {len(ids)} image: a '
          'train/test split needs at least 2 per class.'
        )
      ids = rng.permutation(ids)
      n_test = min(max(1, round(fraction * len(ids))), len(ids) - 1)
      test += ids[:n_test].tolist()
      train += ids[n_test:].tolist()
    out = {}
    for split, ids in (('train', sorted(train)), ('test', sorted(test))):
      out[split] = [files[i] for i in ids], labels[ids]
    return out

  def _check_modes(self) -> int:
    first = {}
    for split in ('train', 'test'):
      for path in self._files[split][0]:
        gray = _image_mode(path) in _GRAY_MODES
        first.setdefault(gray, path)
        if len(first) > 1:
          raise UsageError(
            f'the folder mixes grayscale ({first[True]}) and colour '
            f'({first[False]}) images; convert them to one kind.'
          )
    return 1 if True in first else 3

  def labels(self, split: str) -> np.ndarray:
    return self._files[split][1]

  def load(self, split: str, start: int = 0, stop: int | None = None) -> Arrays:
    files, labels = self._files[split]
    files, labels = files[start:stop], labels[start:stop]
    return readers.read_images(files, self.channels), labels
