"""The runner on a user's own data (maxl_jax/data/user_data.py): an .npz of
arrays, an image folder, any TFDS dataset, and ψ per class from the
command line.

Images are constant per example (image i holds one value), so resizing
must keep that value and the order of examples is visible. Bad input is
one `error:` line (exit 2, nothing written) end to end, and a UsageError
that names the problem in process.
"""

import dataclasses
import json
import re

import entry_point as ep
import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_loading import load, make_config
from PIL import Image

from maxl_jax import labels
from maxl_jax.data import sources
from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError

pytestmark = pytest.mark.usefixtures('no_gcs')  # conftest.py.


def _constant_images(values, size, channels=None):
  shape = (len(values), size, size) + ((channels,) if channels else ())
  return np.broadcast_to(
    np.asarray(values, np.uint8).reshape(-1, *[1] * (len(shape) - 1)), shape
  ).copy()


def _npz(path, n_train=40, n_test=12, classes=3, size=20, **extra):
  y_train = np.arange(n_train) % classes
  y_test = np.arange(n_test) % classes
  arrays = dict(
    x_train=_constant_images(np.arange(n_train) * 3 % 256, size),
    y_train=y_train,
    x_test=_constant_images(np.arange(n_test) * 5 % 256, size),
    y_test=y_test,
  )
  arrays.update(extra)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez(path, **arrays)
  return str(path)


def _folder(root, counts, split=None, mode='L', size=20, ext='png'):
  """root[/split]/class_c/i.ext, image i of class c holding 10c + i."""
  base = root / split if split else root
  for c, n in enumerate(counts):
    folder = base / f'class_{c}'
    folder.mkdir(parents=True)
    for i in range(n):
      value = 10 * c + i
      colour = value if mode == 'L' else (value,) * 3
      Image.new(mode, (size, size), colour).save(folder / f'{i:03d}.{ext}')
  return str(root)


# ----------------------------------------------------------- arrays ---


def test_arrays_are_resized_and_keep_their_order(tmp_path):
  path = _npz(tmp_path / 'd.npz')
  train, eval_data, info = load(
    make_config('arrays', path=path, batch_size=8, augment='none')
  )
  assert (info.name, info.num_classes, info.image_shape) == (
    'arrays', 3, (32, 32, 1),
  )  # fmt: skip
  assert (info.num_train, info.num_test) == (40, 12)
  np.testing.assert_array_equal(train.images[:, 5, 7, 0], np.arange(40) * 3)
  assert (train.images == train.images[:, :1, :1]).all()  # Still constant.
  np.testing.assert_array_equal(train.labels, np.arange(40) % 3)
  assert info.fine_to_primary is None


def test_float_colour_arrays_in_unit_range_are_scaled(tmp_path):
  x = np.linspace(0, 1, 6, dtype=np.float32)
  images = np.broadcast_to(x[:, None, None, None], (6, 32, 32, 3)).copy()
  path = tmp_path / 'c.npz'
  np.savez(
    path, x_train=images, y_train=np.arange(6) % 2, x_test=images[:2],
    y_test=np.array([0, 1]), class_names=np.array(['cat', 'dog', 'emu']),
  )  # fmt: skip
  reader = sources.make_reader(make_config('arrays', path=str(path)))
  images, y = reader.load('train')
  assert reader.num_classes == 3 and reader.channels == 3  # class_names.
  np.testing.assert_array_equal(images[:, 0, 0, 0], np.round(x * 255))


def test_arrays_with_fine_labels_give_a_hierarchy(tmp_path):
  # Fine classes 0..5, two under each of the 3 primary classes.
  fine_train = np.arange(40) % 6
  fine_test = np.arange(12) % 6
  parents = np.array([0, 0, 1, 1, 2, 2])
  path = _npz(
    tmp_path / 'h.npz',
    y_train=None,
    y_test=None,
    fine_train=fine_train,
    fine_test=fine_test,
  )
  data = dict(np.load(path))
  np.savez(path, **data, y_train=parents[fine_train], y_test=parents[fine_test])
  train, _, info = load(make_config('arrays', path=path, batch_size=8))
  assert info.num_classes == 3 and info.fine_num_classes == 6
  np.testing.assert_array_equal(info.fine_to_primary, parents)
  batch = next(train)
  np.testing.assert_array_equal(parents[batch['fine_label']], batch['label'])
  source = labels.make_label_source('human', info, psi_per_class=1, seed=0)
  np.testing.assert_array_equal(source.psi, [2, 2, 2])


BAD_ARRAYS = {
  'missing_key': (dict(y_test=None), 'lacks y_test'),
  'mismatched_lengths': (
    dict(y_train=np.zeros(39, int)),
    'x_train has 40 images but y_train has 39 labels',
  ),
  'test_label_outside': (
    dict(y_test=np.full(12, 3)),
    'y_test holds label 3, outside [0, 3)',
  ),
  'label_beyond_class_names': (
    dict(class_names=np.array(['a', 'b'])),
    'y_train holds label 2, outside [0, 2)',
  ),
  'negative_label': (
    dict(y_train=np.arange(40) % 3 - 1),
    'holds label -1',
  ),
  'one_class': (
    dict(y_train=np.zeros(40, int), y_test=np.zeros(12, int)),
    'at least 2',
  ),
  'bad_shape': (dict(x_test=np.zeros((12, 4, 4, 2), np.uint8)), 'C = 1 or 3'),
  'floats_out_of_range': (
    dict(x_test=np.full((12, 8, 8), 300.0)),
    'values in [300, 300]',
  ),
  'fine_only_for_train': (dict(fine_train=np.zeros(40, int)), 'both'),
}


@pytest.mark.parametrize('name', sorted(BAD_ARRAYS))
def test_bad_arrays_are_usage_errors(name, tmp_path):
  extra, expected = BAD_ARRAYS[name]
  path = _npz(tmp_path / 'bad.npz', **extra)
  with pytest.raises(UsageError, match=re.escape(expected)):
    sources.make_reader(make_config('arrays', path=path))


def test_arrays_without_a_readable_file(tmp_path):
  for path, expected in (
    ('', 'set --config.data.path'),
    (str(tmp_path / 'nope.npz'), 'is not a file'),
  ):
    with pytest.raises(UsageError, match=expected):
      sources.make_reader(make_config('arrays', path=path))
  (tmp_path / 'junk.npz').write_text('not a zip')
  with pytest.raises(UsageError, match='not a readable .npz'):
    sources.make_reader(make_config('arrays', path=str(tmp_path / 'junk.npz')))


# ----------------------------------------------------------- folder ---


def test_folder_with_train_and_test_folders(tmp_path):
  _folder(tmp_path, [3, 4], 'train', mode='RGB', ext='jpg', size=40)
  _folder(tmp_path, [2, 1], 'test', mode='RGB', ext='bmp')
  train, eval_data, info = load(
    make_config('folder', path=str(tmp_path), batch_size=2, augment='none')
  )
  assert (info.num_classes, info.image_shape) == (2, (32, 32, 3))
  assert (info.num_train, info.num_test) == (7, 3)
  np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1, 1])
  # JPEG is lossy: within a few levels of 10c + i.
  centre = train.images[:, 16, 16, 0].astype(int)
  np.testing.assert_allclose(centre, [0, 1, 2, 10, 11, 12, 13], atol=3)
  np.testing.assert_array_equal(eval_data.images[:, 0, 0, 1], [0, 1, 10])


def test_folder_split_by_test_fraction_is_fixed_and_per_class(tmp_path):
  _folder(tmp_path, [8, 4, 5])
  config = make_config('folder', path=str(tmp_path), test_fraction=0.25)
  first = sources.make_reader(config)
  assert first.channels == 1 and first.num_classes == 3
  test = first.labels('test')
  np.testing.assert_array_equal(np.bincount(test), [2, 1, 1])
  np.testing.assert_array_equal(np.bincount(first.labels('train')), [6, 3, 4])
  train_images, _ = first.load('train')
  test_images, _ = first.load('test')
  values = set(train_images[:, 0, 0, 0]) | set(test_images[:, 0, 0, 0])
  assert len(values) == 17  # Every image in exactly one split.
  again, _ = sources.make_reader(config).load('test')
  np.testing.assert_array_equal(again, test_images)  # The same split.


def _bad_folder(kind, root):
  if kind == 'one_class':
    _folder(root, [3])
  elif kind == 'empty_class':
    _folder(root, [3, 3])
    (root / 'class_2').mkdir()
  elif kind == 'non_image':
    _folder(root, [3, 3])
    (root / 'class_1' / 'notes.txt').write_text('hello')
  elif kind == 'gray_colour_mix':
    _folder(root, [3, 3])
    Image.new('RGB', (8, 8)).save(root / 'class_0' / 'rgb.png')
  elif kind == 'one_image_class':
    _folder(root, [3, 1])
  elif kind == 'test_class_not_in_train':
    _folder(root, [2, 2], 'train')
    _folder(root, [1, 1, 1], 'test')


BAD_FOLDERS = {
  'one_class': 'has 1 class folder (class_0)',
  'empty_class': 'class_2 holds no images',
  'non_image': 'notes.txt is not an image',
  'gray_colour_mix': 'mixes grayscale',
  'one_image_class': 'class_1 has 1 image',
  'test_class_not_in_train': 'class_2',
}


@pytest.mark.parametrize('kind', sorted(BAD_FOLDERS))
def test_bad_folders_are_usage_errors(kind, tmp_path):
  _bad_folder(kind, tmp_path)
  with pytest.raises(UsageError, match=re.escape(BAD_FOLDERS[kind])):
    sources.make_reader(make_config('folder', path=str(tmp_path)))


# ------------------------------------------------------------- TFDS ---


class TinyLabelled(tfds.core.GeneratorBasedBuilder):
  """40x40x3 images with two class labels: 'label' (5) and 'kind' (3)."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(shape=(40, 40, 3)),
          'label': tfds.features.ClassLabel(num_classes=5),
          'kind': tfds.features.ClassLabel(num_classes=3),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
      'train': self._generate_examples(20),
      'test': self._generate_examples(7),
    }

  def _generate_examples(self, n):
    for i in range(n):
      image = np.full((40, 40, 3), 9 * i, np.uint8)
      yield i, {'image': image, 'label': i % 5, 'kind': i % 3}


def test_any_tfds_dataset_by_name_with_its_label_key(tmp_path):
  data_dir = str(tmp_path)
  TinyLabelled(data_dir=data_dir).download_and_prepare(
    download_config=tfds.download.DownloadConfig(try_download_gcs=False)
  )
  config = make_config(
    'tfds:tiny_labelled', data_dir=data_dir, label_key='kind', batch_size=4
  )
  train, eval_data, info = load(config, seed=0)
  assert (info.name, info.num_classes, info.image_shape) == (
    'tfds:tiny_labelled', 3, (32, 32, 3),
  )  # fmt: skip
  assert (info.num_train, info.num_test) == (20, 7)
  order = np.argsort(train.images[:, 0, 0, 0])  # TFDS shuffles its files.
  np.testing.assert_array_equal(train.images[order, 3, 3, 2], 9 * np.arange(20))
  np.testing.assert_array_equal(train.labels[order], np.arange(20) % 3)
  config = dataclasses.replace(config, label_key='nope')
  with pytest.raises(UsageError, match=r"no class label 'nope'.*'kind'"):
    sources.make_reader(config)


def test_tfds_name_on_mock_data():
  mock = tfds.testing.mock_data(
    num_examples=9, policy=tfds.testing.MockPolicy.USE_CODE
  )
  with mock:
    _, _, info = load(make_config('tfds:cifar10', batch_size=3))
  assert (info.num_classes, info.image_shape, info.num_train) == (
    10, (32, 32, 3), 9,
  )  # fmt: skip


# ---------------------------------------------------------------- psi ---


def test_psi_per_class_from_a_string():
  info = DatasetInfo('toy', 3, (32, 32, 1), num_train=9, num_test=3)
  make = lambda method, psi: labels.make_label_source(  # noqa: E731
    method, info, psi_per_class=5, seed=0, psi_choice=psi
  )
  np.testing.assert_array_equal(make('maxl', '5,15, 5').psi, [5, 15, 5])
  np.testing.assert_array_equal(make('uniform', '1,2,3').psi, [1, 2, 3])
  with pytest.raises(UsageError, match='gives 2 values, but toy has 3'):
    make('maxl', '5,15')
  for bad in ('5,0,5', '5,x,5', 'balance'):
    with pytest.raises(UsageError, match='comma-separated list of positive'):
      labels.check_psi_choice(bad)


# ------------------------------------------------------- end to end ---


def test_runner_trains_on_an_npz_with_psi_per_class(tmp_path):
  path = _npz(tmp_path / 'd.npz', n_train=64, n_test=10)
  workdir = tmp_path / 'run'
  proc = ep.run(
    *ep.TINY,
    '--config.data.name=arrays',
    f'--config.data.path={path}',
    '--config.maxl.psi=1,2,3',
    f'--workdir={workdir}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((workdir / 'result.json').read_text())
  assert result['dataset'] == 'arrays' and result['steps'] == ep.TOTAL_STEPS
  rows = (workdir / 'metrics.jsonl').read_text().splitlines()
  assert len(json.loads(rows[-1])['meta/aux_hist']) == 6  # K = 1 + 2 + 3.
  info = json.loads((workdir / 'dataset.json').read_text())
  assert (info['num_classes'], info['num_train']) == (3, 64)


def test_runner_trains_on_an_image_folder(tmp_path):
  root = tmp_path / 'images'
  _folder(root, [20, 20, 20], mode='RGB')
  workdir = tmp_path / 'run'
  proc = ep.run(
    *ep.TINY,
    '--config.data.name=folder',
    f'--config.data.path={root}',
    '--config.method=uniform',
    f'--workdir={workdir}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((workdir / 'result.json').read_text())
  assert result['dataset'] == 'folder' and result['method'] == 'uniform'
  info = json.loads((workdir / 'dataset.json').read_text())
  assert (info['num_train'], info['num_test']) == (48, 12)


@pytest.mark.parametrize(
  'kind, expected',
  [
    ('arrays', 'x_train has 40 images but y_train has 39 labels'),
    ('folder', 'class_2 holds no images'),
    ('psi', 'config.maxl.psi gives 2 values, but arrays has 3'),
  ],
)
def test_bad_user_data_is_one_error_line_and_writes_nothing(
  kind, expected, tmp_path
):
  if kind == 'folder':
    _bad_folder('empty_class', tmp_path / 'i')
    args = ['--config.data.name=folder', f'--config.data.path={tmp_path}/i']
  else:
    extra = {'y_train': np.zeros(39, int)} if kind == 'arrays' else {}
    path = _npz(tmp_path / 'd.npz', **extra)
    args = ['--config.data.name=arrays', f'--config.data.path={path}']
    if kind == 'psi':
      args.append('--config.maxl.psi=1,2')
  workdir = tmp_path / 'run'
  proc = ep.run(*ep.TINY, *args, f'--workdir={workdir}')
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = ep.error_lines(proc.stderr)
  assert expected in line, line
  assert 'Traceback' not in proc.stderr
  assert not workdir.exists()
