"""A user's own data (`config.data.path`), every size area-resized to 32x32.

- arrays: an .npz file with x_train, y_train, x_test, y_test (uint8 or
  float images [N, H, W] or [N, H, W, C], C = 1 or 3), optional
  fine_train/fine_test (a label hierarchy) and class_names (`load_npz`,
  `NpzReader`).
- folder: one sub-folder of images per class, under train/ and test/ or
  split by `config.data.test_fraction` (a fixed seed)
  (`image_folder.ImageFolderReader`).
- tfds:NAME: any TFDS image classification dataset with train and test
  splits, its labels at `config.data.label_key` (`tfds_reader`).

Each is checked as it is read: anything a user can fix is a `UsageError`
that names the file and the fix. `sources.make_reader` is the one entry;
the built-in datasets and the `Reader` interface live in `readers.py`.
"""

import os

import numpy as np

from maxl_jax.data import readers
from maxl_jax.data.readers import Arrays, tfds
from maxl_jax.data.spec import DataSpec
from maxl_jax.errors import UsageError

ARRAY_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')


def check_path(path: str, reads: str, kind: str):
  """UsageError unless `config.data.path` is set and names a `kind` ('file'
  or 'directory'); `reads`: what `config.data.name=...` reads, and how."""
  if not path:
    raise UsageError(f'config.data.name={reads}.')
  if not (os.path.isfile if kind == 'file' else os.path.isdir)(path):
    raise UsageError(f'config.data.path={path!r} is not a {kind}.')


def _resize_all(images: np.ndarray) -> np.ndarray:
  """uint8 [n, h, w, C] -> [n, 32, 32, C], area-resized in chunks."""
  size = readers.SIZE
  if images.shape[1:3] == (size, size):
    return images
  out = np.empty((len(images), size, size, images.shape[3]), np.uint8)
  for i in range(0, len(images), readers.CHUNK):
    chunk = images[i : i + readers.CHUNK]
    out[i : i + readers.CHUNK] = readers.area_resize(chunk).numpy()
  return out


def _as_uint8_images(x: np.ndarray, where: str) -> np.ndarray:
  """[N, H, W] or [N, H, W, C] uint8, int or float images -> uint8 NHWC.

  Floats with a maximum <= 1 are scaled by 255; others must lie in
  [0, 255].
  """
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[3] not in (1, 3):
    raise UsageError(
      f'{where} has shape {list(x.shape)}: give images [N, H, W] '
      '(grayscale) or [N, H, W, C] with C = 1 or 3.'
    )
  if x.dtype == np.uint8:
    return x
  if x.dtype.kind not in 'uif':
    raise UsageError(f'{where} has dtype {x.dtype}: give uint8 or floats.')
  if x.size and not np.all(np.isfinite(x)):
    raise UsageError(f'{where} holds NaN or infinite values.')
  lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
  if x.dtype.kind == 'f' and hi <= 1.0:
    x = x * 255.0
  elif lo < 0 or hi > 255:
    raise UsageError(
      f'{where} has values in [{lo:g}, {hi:g}]: give uint8 images, or '
      'floats in [0, 1] or [0, 255].'
    )
  if lo < 0:
    raise UsageError(f'{where} has negative values ({lo:g}).')
  return np.round(x).astype(np.uint8)


def _int_labels(y: np.ndarray, where: str) -> np.ndarray:
  if y.ndim != 1 or (
    y.dtype.kind not in 'iu'
    and not (y.dtype.kind == 'f' and np.all(y == np.round(y)))
  ):
    raise UsageError(f'{where} must be a 1-D array of integer labels.')
  return y.astype(np.int64)


def _check_range(y, num, where, what):
  bad = y[(y < 0) | (y >= num)]
  if bad.size:
    raise UsageError(
      f'{where} holds label {int(bad[0])}, outside [0, {num}) ({what}).'
    )


def _fine_parents(fine, primary, num_fine, where) -> np.ndarray:
  """[F] the one primary class of each fine class (raises if not one)."""
  parents = np.full(num_fine, -1, np.int64)
  for f, p in zip(fine.tolist(), primary.tolist(), strict=True):
    if parents[f] == -1:
      parents[f] = p
    elif parents[f] != p:
      raise UsageError(
        f'{where}: fine class {f} has examples of primary classes '
        f'{parents[f]} and {p}; each fine class must lie under one.'
      )
  missing = np.flatnonzero(parents < 0)
  if missing.size:
    raise UsageError(
      f'{where}: fine class {int(missing[0])} has no example (fine labels '
      f'must be 0..{num_fine - 1}, each used).'
    )
  return parents


def load_npz(path: str) -> tuple[dict[str, Arrays], int, np.ndarray | None]:
  """An .npz of arrays -> ({split: (images, labels)}, classes, parents).

  With fine_train/fine_test the stored labels are the fine ones and
  `parents` [F] maps them to the primary classes; else parents is None.
  """
  check_path(
    path,
    'arrays reads an .npz file: set --config.data.path=FILE.npz (keys '
    'x_train, y_train, x_test, y_test)',
    'file',
  )
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except Exception as e:  # Any failure to read: not a usable .npz.
    raise UsageError(
      f'{path} is not a readable .npz file ({type(e).__name__}: {e}); '
      'write it with numpy.savez(path, x_train=..., y_train=..., ...).'
    ) from None
  missing = [k for k in ARRAY_KEYS if k not in arrays]
  if missing:
    raise UsageError(
      f'{path} lacks {", ".join(missing)}; it needs {", ".join(ARRAY_KEYS)} '
      f'(it has {", ".join(sorted(arrays)) or "no arrays"}).'
    )
  fine_keys = [k for k in ('fine_train', 'fine_test') if k in arrays]
  if len(fine_keys) == 1:
    raise UsageError(
      f'{path} has {fine_keys[0]} only: give both fine_train and fine_test '
      '(a label hierarchy) or neither.'
    )
  splits, labels, fine = {}, {}, {}
  for split in ('train', 'test'):
    x = _as_uint8_images(arrays[f'x_{split}'], f'{path}: x_{split}')
    y = _int_labels(arrays[f'y_{split}'], f'{path}: y_{split}')
    if len(x) != len(y):
      raise UsageError(
        f'{path}: x_{split} has {len(x)} images but y_{split} has {len(y)} '
        'labels; give one label per image.'
      )
    if not len(x):
      raise UsageError(f'{path}: x_{split} holds no images.')
    if fine_keys:
      fine[split] = _int_labels(arrays[f'fine_{split}'], f'fine_{split}')
      if len(fine[split]) != len(y):
        raise UsageError(
          f'{path}: fine_{split} has {len(fine[split])} labels but '
          f'y_{split} has {len(y)}; give one fine label per image.'
        )
    splits[split], labels[split] = x, y
  if splits['train'].shape[3] != splits['test'].shape[3]:
    raise UsageError(
      f'{path}: x_train has {splits["train"].shape[3]} channels but x_test '
      f'{splits["test"].shape[3]}; give both grayscale or both colour.'
    )
  names = arrays.get('class_names')
  if names is not None:
    num_classes, what = len(names), f'{len(names)} class_names'
  else:
    num_classes = int(labels['train'].max()) + 1
    what = 'y_train defines the classes; give class_names for more'
  for split in ('train', 'test'):
    _check_range(labels[split], num_classes, f'{path}: y_{split}', what)
  if num_classes < 2:
    raise UsageError(
      f'{path}: the labels give {num_classes} class; a classifier needs at '
      'least 2.'
    )
  parents = None
  if fine_keys:
    num_fine = int(max(fine['train'].max(), fine['test'].max())) + 1
    for split in ('train', 'test'):
      _check_range(fine[split], num_fine, f'{path}: fine_{split}', 'fine')
    parents = _fine_parents(
      np.concatenate([fine['train'], fine['test']]),
      np.concatenate([labels['train'], labels['test']]),
      num_fine,
      path,
    )
    if len(np.unique(parents)) != num_classes:
      raise UsageError(
        f'{path}: the fine classes lie under {len(np.unique(parents))} of '
        f'the {num_classes} primary classes; every class needs one.'
      )
    labels = fine
  out = {
    split: (_resize_all(splits[split]), labels[split])
    for split in ('train', 'test')
  }
  return out, num_classes, parents


class NpzReader(readers.ArrayReader):
  """data.name=arrays: an .npz file (`load_npz`), read at construction."""

  def __init__(self, path: str):
    splits, num_primary, parents = load_npz(path)
    super().__init__(
      'arrays',
      num_classes=num_primary if parents is None else len(parents),
      channels=splits['train'][0].shape[3],
      loader=lambda: splits,
    )
    self.fine_to_primary = parents


def tfds_reader(spec: DataSpec) -> readers.TfdsReader:
  """data.name=tfds:NAME: any TFDS image classification dataset."""
  name = spec.name[len('tfds:') :]
  key = spec.label_key
  reader = readers.TfdsReader(
    name,
    num_classes=0,
    channels=0,
    spec=spec,
    label_key=key,
    resize=True,
  )
  info = reader.builder.info
  features = info.features
  label = features[key] if key in features else None
  if not isinstance(label, tfds.features.ClassLabel):
    classes = [k for k, v in features.items()
               if isinstance(v, tfds.features.ClassLabel)]  # fmt: skip
    raise UsageError(
      f'tfds:{name} has no class label {key!r}; set '
      f'--config.data.label_key to one of {classes}.'
    )
  image = features['image'] if 'image' in features else None
  if not isinstance(image, tfds.features.Image) or image.shape[-1] not in (
    1,
    3,
  ):
    raise UsageError(
      f"tfds:{name} needs an 'image' feature of 1 or 3 channels; its "
      f'features are {list(features)}.'
    )
  missing = [s for s in ('train', 'test') if s not in info.splits]
  if info.splits and missing:  # (Mock data has no split metadata.)
    raise UsageError(
      f'tfds:{name} has no {" or ".join(missing)} split (splits: '
      f'{", ".join(info.splits)}).'
    )
  reader.name = spec.name
  reader.num_classes, reader.channels = label.num_classes, image.shape[-1]
  return reader
