"""Per-dataset loaders: every dataset as uint8 numpy images at 32x32.

A `Reader` reads one split (`'train'` or `'test'`) of one dataset into memory,
whole or as a contiguous range of examples, and brings it to 32x32 once, at
load time. The built-in datasets are `DATASETS`: TFDS's (`TfdsReader`),
Fashion-MNIST's IDX files (`load_fashion_mnist`), CINIC-10's image folder
(`FolderReader`), scikit-learn's digits (`load_digits`) and digit_pairs
(`synthetic`, two digits side by side, a positive control for label
hierarchies); each reader says how its images come to 32x32.

Labels are int64; for cifar100 they are the fine labels (see
`cifar100_hierarchy` for the coarser levels). A user's own data (an .npz,
an image folder, tfds:NAME) is read by `user_data.py`; `make_reader` is the
one entry for both.
"""

import concurrent.futures
import functools
import gzip
import math
import os
import socket

import numpy as np
from absl import logging
from etils import epy
from PIL import Image

from maxl_jax.data import cifar100_hierarchy, synthetic
from maxl_jax.data.reader_base import Arrays, Reader
from maxl_jax.data.synthetic import load_digits  # noqa: F401 - a dataset.
from maxl_jax.errors import UsageError

# Imported on first use (~4 s and ~0.6 GB): only TFDS datasets and resizing
# need them, not the offline Fashion-MNIST, digits or synthetic data.
# TensorFlow is optional (setup.cfg's extras).
with epy.lazy_imports(
  error_callback='TFDS datasets and resizing images to 32x32 need '
  'TensorFlow: pip install "maxl_jax[tensorflow]".'
):
  import tensorflow as tf
  import tensorflow_datasets as tfds


@functools.cache
def _tf_off_accelerators():
  """Keeps TensorFlow off the accelerators (JAX owns them); call before
  TensorFlow's first operation."""
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF already initialised its devices elsewhere.
    pass


SIZE = 32
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
CINIC10_URL = 'https://github.com/BayesWatch/cinic-10'
CHUNK = 1024  # Examples per tf.data batch (TFDS), per area-resize (arrays).


def area_resize(images):
  """Area-resizes [..., h, w, C] images to uint8 [..., 32, 32, C] (TF)."""
  _tf_off_accelerators()
  images = tf.image.resize(images, (SIZE, SIZE), method='area')
  return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)


def read_images(files: list[str], channels: int) -> np.ndarray:
  """Image files as uint8 [n, 32, 32, channels], area-resized, 8 threads."""
  mode = 'L' if channels == 1 else 'RGB'

  def read(path):
    with Image.open(path) as image:
      image = np.asarray(image.convert(mode), np.uint8)
    image = image.reshape(*image.shape[:2], channels)
    if image.shape[:2] != (SIZE, SIZE):
      image = area_resize(image).numpy()
    return image

  images = np.empty((len(files), SIZE, SIZE, channels), np.uint8)
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for i, image in enumerate(pool.map(read, files)):
      images[i] = image
  return images


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
  """Whether `host` resolves within `timeout_s` (offline: fails at once);
  without it an offline download retries each file for minutes."""
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
  _tf_off_accelerators()
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
  """A TFDS image dataset: 28x28 (mnist) zero-padded, 32x32 as is, any size
  area-resized with `resize` (tfds:NAME). A video dataset (ucf101, split 1):
  `video_frames` evenly spaced frames per clip (1: the middle), resized."""

  def __init__(
    self,
    name,
    *,
    num_classes,
    channels,
    spec,
    video=False,
    label_key='label',
    resize=False,
  ):
    self.name, self.num_classes, self.channels = name, num_classes, channels
    self._video, self._label_key, self._area = video, label_key, resize
    self._frames = int(spec.video_frames) if video else 1
    if self._frames < 1:
      raise UsageError(
        f'config.data.video_frames = {self._frames}: must be >= 1 (frames '
        'taken per video clip).'
      )
    self.builder = prepared_builder(
      name, spec.data_dir, spec.download
    )

  def labels(self, split: str) -> np.ndarray:
    key = self._label_key
    decoders = tfds.decode.PartialDecoding({key: True})
    ds = self.builder.as_dataset(split=split, decoders=decoders)
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
      image = area_resize(tf.ensure_shape(image, [k, None, None, 3]))
    elif self._area:  # Any other size (tfds:NAME): area-resized.
      image = area_resize(ex['image'])[None]
    else:  # Zero-pads centred (mnist 28x28), 32x32 images stay as they are.
      image = tf.image.resize_with_crop_or_pad(ex['image'], SIZE, SIZE)[None]
    out = {'image': image, 'label': tf.fill([k], ex[self._label_key])}
    if 'coarse_label' in ex:
      out['coarse_label'] = tf.fill([k], ex['coarse_label'])
    return out

  def load(self, split: str, start: int = 0, stop: int | None = None) -> Arrays:
    k = self._frames
    if stop is None:
      tfds_split, info = split, self.builder.info.splits
      capacity = info[split].num_examples * k if split in info else None
    else:
      first, last = start // k, math.ceil(stop / k)  # Clips holding them.
      tfds_split, capacity = f'{split}[{first}:{last}]', (last - first) * k
      start, stop = start - first * k, stop - first * k
    decoders = {'video': tfds.decode.SkipDecoding()} if self._video else None
    ds = self.builder.as_dataset(split=tfds_split, decoders=decoders)
    ds = ds.map(self._to_images, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.unbatch().batch(CHUNK).prefetch(1)
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
  """Fashion-MNIST's IDX files: 60,000 / 10,000 images, zero-padded to 32."""
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
    ph, pw = SIZE - images.shape[1], SIZE - images.shape[2]  # Centred pads.
    pads = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
    splits[split] = (np.pad(images, pads)[..., None], labels.astype(np.int64))
  return splits


class FolderReader(Reader):
  """An image-folder release, `root/<split>/<class>/*.png` (CINIC-10)."""

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
    return read_images(files, self.channels), labels


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
