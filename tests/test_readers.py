"""Per-dataset loaders: maxl_jax/data/readers.py (through the pipeline).

TFDS datasets run under `tfds.testing.mock_data` (nothing is downloaded);
fashion_mnist uses the real Debian IDX files when they are installed, digits
the copy bundled with scikit-learn.
"""

import os
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_loading import load, make_config, take
from PIL import Image

from maxl_jax.data import readers
from maxl_jax.errors import UsageError

pytestmark = pytest.mark.usefixtures('no_gcs')  # conftest.py.

USE_CODE = tfds.testing.MockPolicy.USE_CODE
REAL_NETWORK_PROBE = readers.network_reachable  # conftest patches it.


class TinyImages(tfds.core.GeneratorBasedBuilder):
  """A real (prepared on disk) TFDS dataset: 57 train / 13 test examples.

  Example i is a 28x28x1 image with every pixel i % 256 and label 7i % 10.
  """

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(shape=(28, 28, 1)),
          'label': tfds.features.ClassLabel(num_classes=10),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
      'train': self._generate_examples(57),
      'test': self._generate_examples(13),
    }

  def _generate_examples(self, n):
    for i in range(n):
      image = np.full((28, 28, 1), i % 256, np.uint8)
      yield i, {'image': image, 'label': (7 * i) % 10}


# ------------------------------------------------------------------ TFDS ---


@pytest.mark.parametrize(
  'name, channels, num_classes, frames',
  [
    ('mnist', 1, 10, 1),
    ('svhn_cropped', 3, 10, 1),
    ('cifar10', 3, 10, 1),
    ('cifar100', 3, 20, 1),
    ('imagenet_resized/32x32', 3, 1000, 1),
    ('ucf101', 3, 101, 2),
  ],
)
def test_tfds_pipeline_on_mock_data(name, channels, num_classes, frames):
  n = 3 if name == 'ucf101' else 23
  config = make_config(
    name, batch_size=4, eval_batch_size=5, video_frames=frames
  )
  with tfds.testing.mock_data(num_examples=n, policy=USE_CODE):
    train, eval_data, info = load(config)
  n *= frames  # ucf101: every clip gives `frames` images.
  assert info.image_shape == (32, 32, channels)
  assert (info.num_classes, info.num_train, info.num_test) == (
      num_classes, n, n,
  )  # fmt: skip
  assert train.images.dtype == np.uint8
  assert train.steps_per_epoch == n // 4
  batches = take(train, train.steps_per_epoch)
  for batch in batches:
    assert batch['image'].shape == (4, 32, 32, channels)
    assert batch['image'].dtype == np.float32
    assert batch['label'].dtype == batch['index'].dtype == np.int32
    assert 0 <= batch['label'].min() <= batch['label'].max() < num_classes
  indices = np.concatenate([b['index'] for b in batches])
  assert np.unique(indices).size == indices.size  # No repeat in an epoch.
  assert 0 <= indices.min() and indices.max() < n
  eval_batches = list(eval_data)
  assert len(eval_batches) == len(eval_data) == -(-n // 5)
  assert all(b['image'].shape == (5, 32, 32, channels) for b in eval_batches)
  assert sum(b['mask'].sum() for b in eval_batches) == n
  if name == 'cifar100':  # fine_label: fine class, child of the coarse one.
    assert info.fine_num_classes == 100
    for batch in batches + eval_batches:
      real = batch.get('mask', np.ones(4)) > 0  # Padding rows are all 0.
      np.testing.assert_array_equal(
        info.fine_to_primary[batch['fine_label'][real]], batch['label'][real]
      )
  else:  # No hierarchy by default: no fine labels.
    assert info.fine_num_classes == 0 and info.fine_to_primary is None
    assert not any('fine_label' in b for b in batches + eval_batches)


def test_mnist_is_zero_padded_to_32():
  with tfds.testing.mock_data(num_examples=10, policy=USE_CODE):
    train, _, _ = load(make_config('mnist', batch_size=5))
  border = np.ones((32, 32), bool)
  border[2:30, 2:30] = False
  assert not train.images[:, border].any()
  assert train.images[:, 2:30, 2:30].any()


@pytest.fixture(scope='module')
def tiny_images_dir(tmp_path_factory):
  """A data_dir holding the prepared TinyImages dataset (real TFRecords)."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  with tfds.testing.disable_gcs_access():
    TinyImages(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
  return data_dir


@pytest.mark.parametrize('per_class', [0, 3])
def test_tfds_multi_host_reads_disjoint_shares(tiny_images_dir, per_class):
  config = make_config(
    'tiny_images',
    data_dir=tiny_images_dir,
    download=False,
    batch_size=6,
    eval_batch_size=4,
    per_class=per_class,
  )
  with mock.patch.dict(readers.DATASETS, tiny_images=(10, 1, 'tfds')):
    whole, whole_eval, info = load(config)
    shares = [load(config, process_index=p, process_count=2) for p in (0, 1)]
  assert info.num_train == (30 if per_class else 57)
  # Pixel value = original example id, label = 7 id % 10: images and labels
  # stay paired, and a subset keeps 3 examples of every class.
  ids = whole.images[:, 16, 16, 0].astype(int)
  np.testing.assert_array_equal(whole.labels, (7 * ids) % 10)
  assert not whole.images[:, :2].any()  # Zero-padded 28 -> 32.
  if per_class:
    np.testing.assert_array_equal(np.bincount(whole.labels), np.full(10, 3))
  indices = np.concatenate([s[0].indices for s in shares])
  np.testing.assert_array_equal(np.sort(indices), np.arange(info.num_train))
  for train, eval_data, share_info in shares:
    assert share_info == info
    np.testing.assert_array_equal(train.images, whole.images[train.indices])
    np.testing.assert_array_equal(train.labels, whole.labels[train.indices])
    assert next(train)['image'].shape == (3, 32, 32, 1)
    assert len(eval_data) == 4  # ceil(ceil(13 / 2) / (4 / 2)), on both.
  eval_labels = np.concatenate([s[1].labels for s in shares])
  np.testing.assert_array_equal(eval_labels, whole_eval.labels)


def test_tfds_not_prepared_without_download(tmp_path):
  config = make_config('cifar10', data_dir=str(tmp_path), download=False)
  with pytest.raises(UsageError, match='not prepared') as error:
    load(config)
  assert str(tmp_path) in str(error.value)
  assert "tfds.load('cifar10'" in str(error.value)


def test_tfds_failed_download_is_a_usage_error(tmp_path):
  config = make_config('mnist', data_dir=str(tmp_path), download=True)
  failure = OSError('no network')
  with (
    mock.patch.object(
      tfds.core.DatasetBuilder, 'download_and_prepare', side_effect=failure
    ),
  ):
    with pytest.raises(UsageError, match='not prepared') as error:
      load(config)
  assert error.value.__cause__ is failure


def test_tfds_offline_fails_at_once_with_how_to_prepare(tmp_path):
  """No network: no download attempt (its retries take minutes)."""
  config = make_config('svhn_cropped', data_dir=str(tmp_path), download=True)
  with (
    mock.patch.object(readers, 'network_reachable', return_value=False),
    mock.patch.object(
      tfds.core.DatasetBuilder, 'download_and_prepare'
    ) as download,
  ):
    with pytest.raises(UsageError, match='no network') as error:
      load(config)
  download.assert_not_called()
  assert "tfds.load('svhn_cropped'" in str(error.value)


def test_network_probe_fails_fast_for_an_unresolvable_host():
  start = time.monotonic()
  assert not REAL_NETWORK_PROBE('no-such-host.invalid', timeout_s=5)
  assert time.monotonic() - start < 6


# ----------------------------------------------------------- Local data ---


@pytest.mark.skipif(
  not os.path.isdir(readers.FASHION_MNIST_DIR),
  reason='dataset-fashion-mnist (Debian package) is not installed',
)
def test_fashion_mnist_loads_the_real_files():
  train, eval_data, info = load(make_config('fashion_mnist'))
  assert (info.num_train, info.num_test) == (60000, 10000)
  assert train.images.shape == (60000, 32, 32, 1)
  np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 6000))
  assert eval_data.num_examples == 10000
  assert not train.images[:, :2].any()  # Zero padding 28 -> 32.
  assert 50 < train.images.mean() < 100  # Real pictures, not blanks.


def test_fashion_mnist_missing_files(tmp_path):
  config = make_config('fashion_mnist', local_dir=str(tmp_path))
  with pytest.raises(UsageError, match='dataset-fashion-mnist') as error:
    load(config)
  assert str(tmp_path) in str(error.value)


def test_digits_split_is_fixed_and_stratified():
  first = load(make_config('digits'), seed=0)
  second = load(make_config('digits'), seed=1)
  assert (first[2].num_train, first[2].num_test) == (1437, 360)
  for a, b in zip(first[:2], second[:2], strict=True):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
  counts = np.bincount(first[1].labels)
  assert counts.min() >= 35 and counts.max() <= 37
  assert first[0].images.max() == 255


def _write_folder(root, sizes):
  for split in ('train', 'valid', 'test'):
    for label, cls in enumerate(['airplane', 'automobile', 'bird'] + list(
        'defghij'
    )):  # fmt: skip
      os.makedirs(root / split / cls)
      for i, size in enumerate(sizes):
        image = np.full((size, size, 3), 10 * label + i, np.uint8)
        Image.fromarray(image).save(root / split / cls / f'{i}.png')


def test_cinic10_image_folder(tmp_path):
  _write_folder(tmp_path, sizes=(32, 32, 40))
  config = make_config('cinic10', local_dir=str(tmp_path), batch_size=10)
  train, eval_data, info = load(config)
  assert (info.num_train, info.num_test, info.num_classes) == (30, 30, 10)
  np.testing.assert_array_equal(train.labels, np.repeat(np.arange(10), 3))
  expected = 10 * train.labels + np.tile(np.arange(3), 10)
  np.testing.assert_array_equal(train.images[:, 5, 7, 2], expected)
  assert eval_data.images.shape == (30, 32, 32, 3)


def test_cinic10_missing_dir(tmp_path):
  config = make_config('cinic10', local_dir=str(tmp_path / 'nope'))
  with pytest.raises(UsageError, match='local_dir') as error:
    load(config)
  assert readers.CINIC10_URL in str(error.value)
