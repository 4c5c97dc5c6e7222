"""Per-dataset loaders: every dataset as uint8 numpy images at 32x32.

A `Reader` reads one split (`'train'` or `'test'`) of one dataset into memory,
whole or as a contiguous range of examples, and brings it to 32x32 once, at
load time:

- mnist (TFDS): 28x28x1, zero-padded by 2 pixels per side.
- svhn_cropped, cifar10, cifar100, imagenet_resized/32x32 (TFDS): as is.
- ucf101 (TFDS, split 1, 256x256 frames): `video_frames` evenly spaced
  frames per clip (1 = the middle frame), each area-resized to 32x32.
- cinic10 (image folder at `local_dir`): as is (other sizes area-resized).
- fashion_mnist (IDX files at `local_dir`): 28x28x1, zero-padded.
- digits (scikit-learn `load_digits`): 0..16 scaled to 0..255, each pixel
  repeated 4x4 (nearest upsampling 8x8 -> 32x32).

A user's own data (`config.data.path`), every size area-resized to 32x32:

- arrays: an .npz file with x_train, y_train, x_test, y_test (uint8 or
  float images [N, H, W] or [N, H, W, C], C = 1 or 3), optional
  fine_train/fine_test (a label hierarchy) and class_names.
- folder: one sub-folder of images per class, under train/ and test/ or
  split by `config.data.test_fraction` (a fixed seed).
- tfds:NAME: any TFDS image classification dataset with train and test
  splits, its labels at `config.data.label_key`.
- digit_pairs (`synthetic`): two of those digits side by side, a seeded
  positive control for label hierarchies.

Labels are int64; for cifar100 they are the fine labels (see
`cifar100_hierarchy` for the coarser levels).
"""

import abc
import concurrent.futures
import functools
import gzip
import math
import os
import socket

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from maxl_jax.data import cifar100_hierarchy, synthetic
from maxl_jax.errors import UsageError

try:  # Keep TF off the accelerators: JAX owns them.
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TF already initialised its devices elsewhere.
  pass

Arrays = tuple[np.ndarray, np.ndarray]  # images uint8 [n, 32, 32, C], labels.

SIZE = 32
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
CINIC10_URL = 'https://github.com/BayesWatch/cinic-10'
_CHUNK = 1024  # Examples per tf.data batch when reading TFDS.


class Reader(abc.ABC):
  """One dataset: `labels(split)` and `load(split, start, stop)`.

  `fine_to_primary`: when not None, the stored labels are the fine classes
  of a label hierarchy given with the data, and this [num_classes] array
  maps each to its primary class.
  """

  name: str
  num_classes: int
  channels: int
  fine_to_primary: np.ndarray | None = None

  @abc.abstractmethod
  def labels(self, split: str) -> np.ndarray:
    """All labels of `split` in example order: int64 [n]."""

  @abc.abstractmethod
  def load(self, split: str, start: int = 0, stop: int | None = None) -> Arrays:
    """Examples `[start, stop)` of `split` (all if stop is None)."""


def _resize(images):
  """Area-resizes [..., h, w, C] images to uint8 [..., 32, 32, C] (TF)."""
  images = tf.image.resize(images, (SIZE, SIZE), method='area')
  return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)


def _pad_to_32(images: np.ndarray) -> np.ndarray:
  """Zero-pads uint8 [n, 28, 28, C] to [n, 32, 32, C], centred."""
  ph, pw = SIZE - images.shape[1], SIZE - images.shape[2]
  pads = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
  return np.pad(images, pads)


# ------------------------------------------------------------------ TFDS ---


def _not_prepared(name: str, data_dir: str) -> str:
  return (
    f'TFDS dataset {name!r} is not prepared in {data_dir}. On a machine '
    'with internet run `python -c "import tensorflow_datasets as tfds; '
    f"tfds.load('{name}', data_dir='{data_dir}')\"` (or `tfds build "
    f'{name.split("/")[0]} --data_dir={data_dir}`), copy {data_dir} here '
    'and point --config.data.data_dir at it; or set '
    '--config.data.download=true on a machine with internet.'
  )


PROBE_HOST = 'storage.googleapis.com'  # TFDS's own metadata and mirrors.


def network_reachable(host: str = PROBE_HOST, timeout_s: float = 5.0) -> bool:
  """Whether `host` resolves within `timeout_s` (offline: fails at once).

  Without this, an offline download retries each file with backoff for
  minutes before it fails.
  """
  pool = concurrent.futures.ThreadPoolExecutor(1)
  lookup = pool.submit(socket.getaddrinfo, host, 443)
  pool.shutdown(wait=False)
  try:
    return bool(lookup.result(timeout=timeout_s))
  except (OSError, concurrent.futures.TimeoutError):
    return False


def prepared_builder(name: str, data_dir: str, download: bool):
  """The TFDS builder of `name`, prepared (downloaded) if allowed.

  Raises:
    UsageError: the dataset is not prepared and `download` is False, or
      download_and_prepare failed (chained).
  """
  builder = tfds.builder(name, data_dir=data_dir or None)
  if builder.is_prepared():
    return builder
  where = str(builder.data_dir_root)
  if not download:
    raise UsageError(_not_prepared(name, where))
  if not network_reachable():
    raise UsageError(
      f'no network to download it from ({PROBE_HOST} does not resolve). '
      + _not_prepared(name, where)
    )
  try:
    builder.download_and_prepare()
  except Exception as e:  # Any failure here means: prepare it by hand.
    raise UsageError(
      f'download_and_prepare failed ({type(e).__name__}: {e}). '
      + _not_prepared(name, where)
    ) from e
  return builder


def _collect(chunks, capacity: int | None, channels: int) -> dict:
  """Joins numpy chunks {'image', 'label', ...}, preallocating `capacity`."""
  out, n, extra = None, 0, []
  for chunk in chunks:
    if out is None:
      out = {
        k: np.empty((capacity or 0, *v.shape[1:]), v.dtype)
        for k, v in chunk.items()
      }
    m = len(chunk['label'])
    if not extra and n + m <= (capacity or 0):
      for k, v in chunk.items():
        out[k][n : n + m] = v
      n += m
    else:
      extra.append(chunk)
  if out is None:  # No examples at all.
    return {
      'image': np.zeros((0, SIZE, SIZE, channels), np.uint8),
      'label': np.zeros((0,), np.int64),
    }
  if extra:  # Size unknown or wrong (mock data): fall back to concatenating.
    return {
      k: np.concatenate([v[:n]] + [c[k] for c in extra]) for k, v in out.items()
    }
  return {k: v[:n] for k, v in out.items()}


class TfdsReader(Reader):
  """A TFDS image dataset (or video dataset, one image per selected frame)."""

  def __init__(
    self,
    name,
    *,
    num_classes,
    channels,
    data_config,
    video=False,
    label_key='label',
    resize=False,
  ):
    self.name, self.num_classes, self.channels = name, num_classes, channels
    self._video, self._label_key, self._area = video, label_key, resize
    self._frames = int(data_config.get('video_frames', 1)) if video else 1
    if self._frames < 1:
      raise UsageError(
        f'config.data.video_frames = {self._frames}: must be >= 1 (frames '
        'taken per video clip).'
      )
    self._builder = prepared_builder(
      name, data_config.data_dir, data_config.get('download', True)
    )

  def labels(self, split: str) -> np.ndarray:
    key = self._label_key
    decoders = tfds.decode.PartialDecoding({key: True})
    ds = self._builder.as_dataset(split=split, decoders=decoders)
    ds = ds.map(lambda ex: ex[key]).batch(1 << 16)
    labels = np.concatenate([np.zeros(0, np.int64), *tfds.as_numpy(ds)])
    return np.repeat(labels.astype(np.int64), self._frames)

  def _to_images(self, ex):
    """One example -> {'image': [k, 32, 32, C] uint8, 'label': [k]}."""
    k = self._frames
    if self._video:
      frames = ex['video']  # [T] encoded frames (decoding skipped).
      t = tf.shape(frames, out_type=tf.int64)[0]
      positions = [(t * (2 * i + 1)) // (2 * k) for i in range(k)]
      image = tf.stack(
        [  # Evenly spaced, centred: k=1 is the middle frame.
          tf.io.decode_image(frames[p], channels=3, expand_animations=False)
          for p in positions
        ]
      )
      image = _resize(tf.ensure_shape(image, [k, None, None, 3]))
    elif self._area:  # Any other size (tfds:NAME): area-resized.
      image = _resize(ex['image'])[None]
    else:  # Zero-pads centred (mnist 28x28), 32x32 images stay as they are.
      image = tf.image.resize_with_crop_or_pad(ex['image'], SIZE, SIZE)[None]
    out = {'image': image, 'label': tf.fill([k], ex[self._label_key])}
    if 'coarse_label' in ex:
      out['coarse_label'] = tf.fill([k], ex['coarse_label'])
    return out

  def load(self, split: str, start: int = 0, stop: int | None = None) -> Arrays:
    k = self._frames
    if stop is None:
      tfds_split, info = split, self._builder.info.splits
      capacity = info[split].num_examples * k if split in info else None
    else:
      first, last = start // k, math.ceil(stop / k)  # Clips holding them.
      tfds_split, capacity = f'{split}[{first}:{last}]', (last - first) * k
      start, stop = start - first * k, stop - first * k
    decoders = {'video': tfds.decode.SkipDecoding()} if self._video else None
    ds = self._builder.as_dataset(split=tfds_split, decoders=decoders)
    ds = ds.map(self._to_images, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.unbatch().batch(_CHUNK).prefetch(1)
    arrays = _collect(tfds.as_numpy(ds), capacity, self.channels)
    images, labels = arrays['image'], arrays['label'].astype(np.int64)
    coarse = arrays.get('coarse_label')
    if coarse is not None and np.any(
      cifar100_hierarchy.FINE_TO_COARSE[labels] != coarse
    ):
      logging.warning(
        'cifar100: TFDS coarse_label disagrees with the standard '
        'fine->coarse table (expected only with mock data); using the table.'
      )
    return images[start:stop], labels[start:stop]


# ------------------------------------------------------------ Local files ---


class ArrayReader(Reader):
  """A small dataset held whole in memory, loaded on first use."""

  def __init__(self, name, *, num_classes, channels, loader):
    self.name, self.num_classes, self.channels = name, num_classes, channels
    self._loader, self._splits = loader, None

  def _split(self, split: str) -> Arrays:
    if self._splits is None:
      self._splits = self._loader()
    return self._splits[split]

  def labels(self, split: str) -> np.ndarray:
    return self._split(split)[1]

  def load(self, split: str, start: int = 0, stop: int | None = None) -> Arrays:
    images, labels = self._split(split)
    return images[start:stop], labels[start:stop]


def _read_idx(path: str) -> np.ndarray:
  """Parses an IDX file (optionally .gz): uint8 array of its shape."""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = f.read()
  magic = int.from_bytes(data[:4], 'big')
  if magic >> 8 != 0x08:  # 0x08: unsigned byte data.
    raise UsageError(f'{path} is not a uint8 IDX file (magic {magic:#x}).')
  ndim = magic & 0xFF
  shape = [
    int.from_bytes(data[4 + 4 * i : 8 + 4 * i], 'big') for i in range(ndim)
  ]
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(local_dir: str = '') -> dict[str, Arrays]:
  """Fashion-MNIST from the original IDX files: 60,000 / 10,000 images."""
  root = local_dir or FASHION_MNIST_DIR
  splits = {}
  for split, prefix in (('train', 'train'), ('test', 't10k')):
    arrays = []
    for kind in ('images-idx3', 'labels-idx1'):
      base = os.path.join(root, f'{prefix}-{kind}-ubyte')
      path = next((p for p in (base + '.gz', base) if os.path.exists(p)), None)
      if path is None:
        raise UsageError(
          f'fashion_mnist: {base}.gz not found. Install the Debian package '
          '(`apt-get install dataset-fashion-mnist`, files in '
          f'{FASHION_MNIST_DIR}) or put the original IDX files in a '
          'directory and set --config.data.local_dir to it.'
        )
      arrays.append(_read_idx(path))
    images, labels = arrays
    splits[split] = (_pad_to_32(images[..., None]), labels.astype(np.int64))
  return splits


def load_digits() -> dict[str, Arrays]:
  """scikit-learn's 8x8 digits: a fixed stratified 80/20 split (seed 0)."""
  from sklearn import datasets, model_selection  # Slow import: only here.

  digits = datasets.load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)
  images = images.repeat(4, axis=1).repeat(4, axis=2)[..., None]
  train, test = model_selection.train_test_split(
      np.arange(len(images)), test_size=0.2, stratify=digits.target,
      random_state=0,
  )  # fmt: skip
  labels = digits.target.astype(np.int64)
  return {
    split: (images[np.sort(ids)], labels[np.sort(ids)])
    for split, ids in (('train', train), ('test', test))
  }


class FolderReader(Reader):
  """An image-folder release: `root/<split>/<class>/*.png` (CINIC-10)."""

  def __init__(self, name, *, root, num_classes, channels=3):
    self.name, self.num_classes, self.channels = name, num_classes, channels
    how = (
      f'Download the image-folder release of {name} ({CINIC10_URL}), '
      'extract it and set --config.data.local_dir to the directory that '
      'holds train/, valid/ and test/.'
    )
    if not root or not os.path.isdir(os.path.join(root, 'train')):
      raise UsageError(f'{name}: no train/ folder in {root!r}. {how}')
    self._root = root
    self.classes = sorted(
        d for d in os.listdir(os.path.join(root, 'train'))
        if os.path.isdir(os.path.join(root, 'train', d))
    )  # fmt: skip
    if len(self.classes) != num_classes:
      raise UsageError(
        f'{name}: {root}/train has {len(self.classes)} class folders, '
        f'expected {num_classes}. {how}'
      )
    self._how, self._cache = how, {}

  def _files(self, split: str) -> tuple[list[str], np.ndarray]:
    """Image paths of `split`, sorted by (class, file name), and labels."""
    if split in self._cache:
      return self._cache[split]
    files, labels = [], []
    for label, cls in enumerate(self.classes):
      folder = os.path.join(self._root, split, cls)
      names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
      names = [n for n in names if n.lower().endswith(('.png', '.jpg'))]
      files += [os.path.join(folder, n) for n in names]
      labels += [label] * len(names)
    if not files:
      raise UsageError(
        f'{self.name}: no images in {self._root}/{split}. {self._how}'
      )
    self._cache[split] = files, np.asarray(labels, np.int64)
    return self._cache[split]

  def labels(self, split: str) -> np.ndarray:
    return self._files(split)[1]

  def load(self, split: str, start: int = 0, stop: int | None = None) -> Arrays:
    files, labels = self._files(split)
    files, labels = files[start:stop], labels[start:stop]

    def read(path):
      with Image.open(path) as image:
        image = np.asarray(image.convert('RGB'), np.uint8)
      if image.shape[:2] != (SIZE, SIZE):
        image = _resize(image).numpy()
      return image

    images = np.empty((len(files), SIZE, SIZE, self.channels), np.uint8)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      for i, image in enumerate(pool.map(read, files)):
        images[i] = image
    return images, labels


# -------------------------------------------------------- A user's data ---

ARRAY_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
SPLIT_SEED = 0  # data.name=folder without train/ and test/: a fixed split.
_GRAY_MODES = ('1', 'L', 'LA', 'I', 'F', 'La')


def _resize_all(images: np.ndarray) -> np.ndarray:
  """uint8 [n, h, w, C] -> [n, 32, 32, C], area-resized in chunks."""
  if images.shape[1:3] == (SIZE, SIZE):
    return images
  out = np.empty((len(images), SIZE, SIZE, images.shape[3]), np.uint8)
  for i in range(0, len(images), _CHUNK):
    out[i : i + _CHUNK] = _resize(images[i : i + _CHUNK]).numpy()
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
  if not path:
    raise UsageError(
      'config.data.name=arrays reads an .npz file: set '
      '--config.data.path=FILE.npz (keys x_train, y_train, x_test, y_test).'
    )
  if not os.path.isfile(path):
    raise UsageError(f'config.data.path={path!r} is not a file.')
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


class NpzReader(ArrayReader):
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


class ImageFolderReader(Reader):
  """data.name=folder: `root/<class>/*` (split by `test_fraction`, a fixed
  seed) or `root/train/<class>/*` and `root/test/<class>/*`.

  Any format PIL reads; every image is checked at construction (header
  only): all grayscale or all colour.
  """

  def __init__(self, root: str, test_fraction: float):
    self.name = 'folder'
    if not root:
      raise UsageError(
        'config.data.name=folder reads an image folder: set '
        '--config.data.path=DIR (one sub-folder of images per class).'
      )
    if not os.path.isdir(root):
      raise UsageError(f'config.data.path={root!r} is not a directory.')
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
    mode = 'L' if self.channels == 1 else 'RGB'

    def read(path):
      with Image.open(path) as image:
        image = np.asarray(image.convert(mode), np.uint8)
      image = image.reshape(*image.shape[:2], self.channels)
      if image.shape[:2] != (SIZE, SIZE):
        image = _resize(image).numpy()
      return image

    images = np.empty((len(files), SIZE, SIZE, self.channels), np.uint8)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      for i, image in enumerate(pool.map(read, files)):
        images[i] = image
    return images, labels


def tfds_reader(data_config) -> TfdsReader:
  """data.name=tfds:NAME: any TFDS image classification dataset."""
  name = data_config.name[len('tfds:') :]
  key = data_config.get('label_key', 'label')
  reader = TfdsReader(
    name,
    num_classes=0,
    channels=0,
    data_config=data_config,
    label_key=key,
    resize=True,
  )
  info = reader._builder.info
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
  reader.name = data_config.name
  reader.num_classes, reader.channels = label.num_classes, image.shape[-1]
  return reader


# --------------------------------------------------------------- Registry ---

# name -> (num_classes, channels, kind).
DATASETS = {
  'mnist': (10, 1, 'tfds'),
  'svhn_cropped': (10, 3, 'tfds'),
  'cifar10': (10, 3, 'tfds'),
  'cifar100': (100, 3, 'tfds'),
  'imagenet_resized/32x32': (1000, 3, 'tfds'),
  'ucf101': (101, 3, 'tfds_video'),
  'cinic10': (10, 3, 'folder'),
  'fashion_mnist': (10, 1, 'fashion_mnist'),
  'digits': (10, 1, 'digits'),
  'digit_pairs': (synthetic.NUM_CLASSES, 1, 'digit_pairs'),
}


def make_reader(data_config) -> Reader:
  """The `Reader` for `data_config.name`.

  Raises:
    UsageError: unknown name, or the dataset is not available locally.
  """
  name = data_config.name
  if name == 'arrays':
    return NpzReader(data_config.get('path', ''))
  if name == 'folder':
    return ImageFolderReader(
      data_config.get('path', ''), data_config.get('test_fraction', 0.2)
    )
  if name.startswith('tfds:'):
    return tfds_reader(data_config)
  if name not in DATASETS:
    raise UsageError(
      f'Unknown dataset config.data.name={name!r}; known datasets: '
      f'{", ".join(DATASETS)}, or your own: arrays (an .npz), folder '
      '(an image folder), tfds:NAME.'
    )
  num_classes, channels, kind = DATASETS[name]
  common = dict(num_classes=num_classes, channels=channels)
  if kind.startswith('tfds'):
    return TfdsReader(
      name, data_config=data_config, video=kind == 'tfds_video', **common
    )
  if kind == 'folder':
    return FolderReader(name, root=data_config.local_dir, **common)
  if kind == 'fashion_mnist':
    loader = functools.partial(load_fashion_mnist, data_config.local_dir)
  elif kind == 'digit_pairs':
    loader = synthetic.load_digit_pairs
  else:
    loader = load_digits
  return ArrayReader(name, loader=loader, **common)
