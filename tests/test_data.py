"""Tests of the input pipeline: maxl_jax.data (pipeline, readers, levels).

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
from PIL import Image

from experiments.configs import default
from maxl_jax.data import cifar100_hierarchy, images, pipeline, readers, splits
from maxl_jax.errors import UsageError

USE_CODE = tfds.testing.MockPolicy.USE_CODE
REAL_NETWORK_PROBE = readers.network_reachable  # conftest patches it.

# The CIFAR-100 superclasses as listed on the dataset's web page, by name:
# an independent statement of the fine -> coarse table.
SUPERCLASSES = {
  'aquatic_mammals': 'beaver dolphin otter seal whale',
  'fish': 'aquarium_fish flatfish ray shark trout',
  'flowers': 'orchid poppy rose sunflower tulip',
  'food_containers': 'bottle bowl can cup plate',
  'fruit_and_vegetables': 'apple mushroom orange pear sweet_pepper',
  'household_electrical_devices': 'clock keyboard lamp telephone television',
  'household_furniture': 'bed chair couch table wardrobe',
  'insects': 'bee beetle butterfly caterpillar cockroach',
  'large_carnivores': 'bear leopard lion tiger wolf',
  'large_man-made_outdoor_things': 'bridge castle house road skyscraper',
  'large_natural_outdoor_scenes': 'cloud forest mountain plain sea',
  'large_omnivores_and_herbivores': 'camel cattle chimpanzee elephant kangaroo',
  'medium_mammals': 'fox porcupine possum raccoon skunk',
  'non-insect_invertebrates': 'crab lobster snail spider worm',
  'people': 'baby boy girl man woman',
  'reptiles': 'crocodile dinosaur lizard snake turtle',
  'small_mammals': 'hamster mouse rabbit shrew squirrel',
  'trees': 'maple_tree oak_tree palm_tree pine_tree willow_tree',
  'vehicles_1': 'bicycle bus motorcycle pickup_truck train',
  'vehicles_2': 'lawn_mower rocket streetcar tank tractor',
}


@pytest.fixture(autouse=True)
def _no_gcs():
  """Keeps TFDS off the network (GCS metadata look-ups) in every test."""
  with tfds.testing.disable_gcs_access():
    yield


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


def make_config(name='digits', **overrides):
  config = default.get_config().data
  config.name, config.batch_size, config.eval_batch_size = name, 100, 16
  config.update(overrides)
  return config


def load(config, seed=0, device_count=1, **kwargs):
  """(train, eval, info) of `pipeline.get_datasets`."""
  return pipeline.get_datasets(
    config, seed=seed, device_count=device_count, **kwargs
  )[:3]


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


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


# ---------------------------------------------------- CIFAR-100 hierarchy ---


def test_cifar100_levels_have_the_right_class_counts():
  for level in cifar100_hierarchy.LEVELS:
    of_fine = cifar100_hierarchy.level_of_fine(level)
    assert of_fine.shape == (100,)
    np.testing.assert_array_equal(np.unique(of_fine), np.arange(level))
  coarse = cifar100_hierarchy.level_of_fine(20)
  np.testing.assert_array_equal(np.bincount(coarse), np.full(20, 5))


def test_cifar100_levels_nest():
  levels = {k: cifar100_hierarchy.level_of_fine(k) for k in (3, 10, 20, 100)}
  np.testing.assert_array_equal(
    levels[10], cifar100_hierarchy.COARSE_TO_10[levels[20]]
  )
  np.testing.assert_array_equal(
    levels[3], cifar100_hierarchy.TEN_TO_3[levels[10]]
  )
  for child in (10, 20, 100):
    for parent in (p for p in levels if p < child):
      parents = cifar100_hierarchy.level_map(child, parent)
      assert parents.shape == (child,)
      # One parent per class: the level-`parent` class of all its members.
      np.testing.assert_array_equal(parents[levels[child]], levels[parent])


def test_cifar100_fine_to_coarse_matches_the_published_superclasses():
  names = cifar100_hierarchy.FINE_NAMES
  assert list(names) == sorted(names) and len(names) == 100
  assert len(cifar100_hierarchy.COARSE_NAMES) == 20
  for coarse, members in SUPERCLASSES.items():
    c = cifar100_hierarchy.COARSE_NAMES.index(coarse)
    fine = [names.index(m) for m in members.split()]
    assert set(np.flatnonzero(cifar100_hierarchy.FINE_TO_COARSE == c)) == set(
      fine
    ), coarse


def test_cifar100_bad_levels_raise():
  with pytest.raises(UsageError, match='aux_level'):
    load(make_config('cifar100', primary_level=20, aux_level=10))
  with pytest.raises(UsageError, match='level 50'):
    cifar100_hierarchy.level_of_fine(50)


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


def test_hierarchy_regroups_labels_and_keeps_the_fine_ones():
  """digits, halves: label = digit // 5, fine_label = the digit."""
  plain = pipeline.get_datasets(make_config(), seed=0, device_count=1)
  config = make_config(hierarchy='halves', meta_fraction=0.1)
  data = pipeline.get_datasets(config, seed=0, device_count=1)
  assert (data.info.num_classes, data.info.fine_num_classes) == (2, 10)
  np.testing.assert_array_equal(data.info.fine_to_primary, [0] * 5 + [1] * 5)
  for it in (data.train, data.meta):
    np.testing.assert_array_equal(it.labels, it.fine_labels // 5)
    batch = it.batch(0, 1)
    np.testing.assert_array_equal(batch['label'], batch['fine_label'] // 5)
    assert batch['fine_label'].dtype == np.int32
  # The same images, in the same order, with the same fine labels.
  np.testing.assert_array_equal(data.eval.images, plain.eval.images)
  np.testing.assert_array_equal(data.eval.fine_labels, plain.eval.labels)
  for batch in data.eval:
    assert batch['fine_label'].dtype == np.int32
    real = batch['mask'] > 0
    np.testing.assert_array_equal(
      batch['label'][real], batch['fine_label'][real] // 5
    )
  test = pipeline.load_test_split(config)
  np.testing.assert_array_equal(test.fine_labels, plain.eval.labels)
  np.testing.assert_array_equal(test.labels, plain.eval.labels // 5)
  images, labels, fine = pipeline.load_test_split(make_config())
  assert fine is None and not any('fine_label' in b for b in plain.eval)
  np.testing.assert_array_equal(labels, plain.eval.labels)


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


# ------------------------------------------------------ Low-data subsets ---


def test_subset_is_deterministic_balanced_and_seeded():
  labels = np.repeat(np.arange(5), [40, 50, 60, 70, 80])
  pick = splits.subset_indices
  a = pick(labels, train_fraction=1.0, per_class=7, seed=3)
  np.testing.assert_array_equal(np.bincount(labels[a]), np.full(5, 7))
  np.testing.assert_array_equal(
    a, pick(labels, train_fraction=1.0, per_class=7, seed=3)
  )
  assert not np.array_equal(
    a, pick(labels, train_fraction=1.0, per_class=7, seed=4)
  )
  b = pick(labels, train_fraction=0.1, per_class=0, seed=3)
  np.testing.assert_array_equal(np.bincount(labels[b]), [4, 5, 6, 7, 8])
  assert np.unique(b).size == b.size


def test_low_data_options_through_get_datasets():
  train, eval_data, info = load(make_config(per_class=20), seed=5)
  assert info.num_train == 200 and info.num_test == 360
  np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 20))
  np.testing.assert_array_equal(train.indices, np.arange(200))
  other, _, _ = load(make_config(per_class=20), seed=6)
  assert not np.array_equal(train.images, other.images)
  half, _, info = load(make_config(train_fraction=0.5))
  assert abs(info.num_train - 1437 / 2) <= 10


# -------------------------------------------------------------- Iterator ---


def test_set_state_resumes_with_identical_batches():
  config = make_config()
  train, _, _ = load(config)
  assert train.steps_per_epoch == 14
  take(train, 10)
  state = train.get_state()
  assert state == {'epoch': 0, 'step': 10}
  expected = take(train, 20)  # Crosses into epoch 2.
  resumed, _, _ = load(config)
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 20), expected)
  assert resumed.get_state() == train.get_state() == {'epoch': 2, 'step': 2}


def test_batches_depend_on_the_seed_only():
  a = take(load(make_config(), seed=1)[0], 16)
  assert_batches_equal(a, take(load(make_config(), seed=1)[0], 16))
  b = take(load(make_config(), seed=2)[0], 16)
  assert not np.array_equal(a[0]['index'], b[0]['index'])
  assert not np.array_equal(a[0]['index'], a[14]['index'])  # New epoch.


def test_no_augmentation_is_normalised_raw_images():
  train, _, _ = load(make_config(augment='none'))
  batch = next(train)
  raw = train.images[batch['index']]
  np.testing.assert_array_equal(batch['image'], images.normalize(raw))
  np.testing.assert_array_equal(batch['label'], train.labels[batch['index']])
  np.testing.assert_allclose(images.normalize(np.array([0, 255], np.uint8)), [
      -2.5, 2.5,
  ], rtol=1e-6)  # fmt: skip


def test_crop_flip_gives_a_crop_of_the_padded_image():
  train, _, _ = load(make_config(augment='crop_flip'))
  batch = next(train)
  raw = train.images[batch['index']]
  assert not np.array_equal(batch['image'], images.normalize(raw))
  padded = np.pad(raw, ((0, 0), (4, 4), (4, 4), (0, 0)))
  flips = 0
  for image, original in zip(batch['image'], padded, strict=True):
    candidates = [
        (f, images.normalize(c[:, ::-1] if f else c))
        for f in (0, 1)
        for c in (original[y : y + 32, x : x + 32] for y in range(9)
                  for x in range(9))
    ]  # fmt: skip
    matches = [f for f, c in candidates if np.array_equal(image, c)]
    assert matches, 'augmented image is not a crop/flip of its source'
    flips += min(matches)
  assert 20 < flips < 80  # About half the images flipped.


# ------------------------------------------------- Evaluation, multi-host ---


def test_eval_batch_rounds_up_to_the_devices():
  """Evaluation masks padding, so 10 on 4 devices becomes 12, not an error."""
  assert pipeline.eval_batch_size(10, 4, 1) == 12
  assert pipeline.eval_batch_size(500, 8, 2) == 504
  _, eval_data, _ = load(make_config(eval_batch_size=10), device_count=4)
  batches = list(eval_data)
  assert {b['label'].shape for b in batches} == {(12,)}
  assert sum(b['mask'].sum() for b in batches) == 360  # Every test image.


def test_eval_batches_are_padded_with_mask():
  _, eval_data, _ = load(make_config(eval_batch_size=16))
  batches = list(eval_data)
  assert len(batches) == 23  # ceil(360 / 16).
  assert all(b['label'].shape == (16,) for b in batches)
  np.testing.assert_array_equal(batches[-1]['mask'], np.arange(16) < 8)
  real = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
  np.testing.assert_array_equal(real, eval_data.labels)


def test_multi_host_shares_cover_the_training_set_once():
  whole, _, info = load(make_config(batch_size=10))
  shares = [
    load(make_config(batch_size=10), process_index=p, process_count=2)
    for p in (0, 1)
  ]
  indices = [s[0].indices for s in shares]
  assert not set(indices[0]) & set(indices[1])
  np.testing.assert_array_equal(
    np.sort(np.concatenate(indices)), np.arange(info.num_train)
  )
  for train, eval_data, _ in shares:
    np.testing.assert_array_equal(train.images, whole.images[train.indices])
    assert train.steps_per_epoch == whole.steps_per_epoch
    assert next(train)['image'].shape == (5, 32, 32, 1)
    assert len(eval_data) == 23 and eval_data.batch_size == 8
  assert sum(s[1].num_examples for s in shares) == 360


# ---------------------------------------------------------------- Errors ---


@pytest.mark.parametrize(
  'overrides, kwargs, match',
  [
    ({'batch_size': 10}, {'device_count': 4}, 'batch_size = 10'),
    ({'eval_batch_size': 0}, {}, 'eval_batch_size'),
    ({'batch_size': 9}, {'process_count': 2}, '2 hosts'),
    ({'batch_size': 2000}, {}, 'exceeds the 1437'),
    ({'name': 'cifar1000'}, {}, 'known datasets: mnist'),
    ({'train_fraction': 0.5, 'per_class': 5}, {}, 'Both low-data'),
    ({'train_fraction': 0.0}, {}, 'train_fraction'),
    ({'per_class': 500}, {}, 'per_class <= '),
    ({'augment': 'mixup'}, {}, 'augment'),
    ({'hierarchy': '0,1'}, {}, 'but digits has 10 classes'),
    ({'hierarchy': 'pairs'}, {}, r"one of \['parity', 'halves'\]"),
    ({'name': 'cifar100', 'primary_level': 20, 'aux_level': 10}, {}, 'finer'),
  ],
)
def test_bad_config_raises_usage_error(overrides, kwargs, match):
  with pytest.raises(UsageError, match=match):
    load(make_config(**overrides), **kwargs)


def test_bad_resume_state_raises():
  train, _, _ = load(make_config())
  with pytest.raises(UsageError, match='steps per epoch'):
    train.set_state({'epoch': 0, 'step': 14})


# ------------------------------------------------------ held-out split ---


@pytest.mark.parametrize('fraction', [0.1, 0.25])
def test_meta_split_is_disjoint_balanced_and_seeded(fraction):
  labels = np.repeat(np.arange(4), [10, 20, 30, 40])
  kept, held = splits.meta_split(labels, fraction=fraction, seed=3)
  assert np.intersect1d(kept, held).size == 0
  np.testing.assert_array_equal(np.union1d(kept, held), np.arange(100))
  np.testing.assert_array_equal(
    np.bincount(labels[held]), [round(fraction * n) for n in (10, 20, 30, 40)]
  )
  again = splits.meta_split(labels, fraction=fraction, seed=3)
  np.testing.assert_array_equal(again[1], held)
  other = splits.meta_split(labels, fraction=fraction, seed=4)
  assert not np.array_equal(other[1], held)
  with pytest.raises(UsageError, match='none to hold out'):
    splits.meta_split(np.array([0, 1, 1]), fraction=0.5, seed=0)


def test_held_out_split_through_get_datasets():
  config = make_config('digits', batch_size=20, meta_fraction=0.2)
  data = pipeline.get_datasets(config, seed=0, device_count=1)
  whole = load(make_config('digits', batch_size=20))[0]
  train, meta = data.train, data.meta
  assert data.info.num_meta == len(meta.labels) == round(0.2 * 1437)
  assert data.info.num_train == len(train.labels) == 1437 - data.info.num_meta
  train_images = {img.tobytes() for img in train.images}
  assert not any(img.tobytes() in train_images for img in meta.images)
  counts = np.bincount(meta.labels, minlength=10)
  np.testing.assert_allclose(counts / counts.sum(), 0.1, atol=0.01)
  both = np.concatenate([train.images, meta.images])
  assert sorted(x.tobytes() for x in both) == sorted(
    x.tobytes() for x in whole.images
  )
  again = pipeline.get_datasets(config, seed=0, device_count=1).meta
  assert_batches_equal([meta.batch(1, 2)], [again.batch(1, 2)])
  assert not np.array_equal(
    meta.batch(0, 0)['label'][:8], train.batch(0, 0)['label'][:8]
  )  # The two streams draw apart.
