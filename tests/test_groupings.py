"""Tests of label hierarchies over datasets: maxl_jax/data/groupings.py.

Named groupings against hand-written maps, explicit lists, CIFAR-100's
levels through the same mechanism, one helpful UsageError per bad grouping,
DatasetInfo's fine-label fields, and Human on digits through the entry point.
(tests/test_hierarchy.py tests psi itself, maxl_jax/hierarchy.py.)
"""

import json

import entry_point as ep
import numpy as np
import pytest

from maxl_jax.data import cifar100_hierarchy, groupings
from maxl_jax.data.info import DatasetInfo
from maxl_jax.data.spec import DataSpec
from maxl_jax.errors import UsageError

LEVELS = cifar100_hierarchy.LEVELS

# dataset, name: the coarse class of each class 0..9, written out by hand.
EXPECTED = {
  # T-shirt+Shirt, Trouser+Dress, Pullover+Coat, Sandal+Sneaker, Bag+Boot.
  ('fashion_mnist', 'pairs'): [0, 1, 2, 1, 2, 3, 0, 3, 4, 4],
  # Tops (T-shirt, Pullover, Coat, Shirt), Trouser+Dress, shoes, Bag.
  ('fashion_mnist', 'types'): [0, 1, 0, 1, 0, 2, 0, 2, 3, 2],
  ('fashion_mnist', 'parity'): [0, 1, 0, 1, 0, 1, 0, 1, 0, 1],
  ('mnist', 'parity'): [0, 1, 0, 1, 0, 1, 0, 1, 0, 1],
  ('mnist', 'halves'): [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
  ('digits', 'parity'): [0, 1, 0, 1, 0, 1, 0, 1, 0, 1],
  ('digits', 'halves'): [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
  # Vehicles (airplane, automobile, ship, truck), then animals.
  ('cifar10', 'animals_vehicles'): [0, 0, 1, 1, 1, 1, 1, 1, 0, 0],
}


def data_config(name='digits', hierarchy='', **levels):
  return DataSpec(
    name=name,
    hierarchy=hierarchy,
    primary_level=levels.get('primary', 20),
    aux_level=levels.get('aux', 100),
  )


def test_every_named_grouping_is_tested():
  named = {(d, n) for d, groups in groupings.NAMED.items() for n in groups}
  # digit_pairs' 25 classes: tests/test_synthetic.py.
  assert named == set(EXPECTED) | {('digit_pairs', 'parity')}


@pytest.mark.parametrize('dataset, name', sorted(EXPECTED))
def test_named_grouping_maps_to_its_coarse_classes(dataset, name):
  maps = groupings.label_maps(data_config(dataset, name), 10)
  np.testing.assert_array_equal(maps.primary_of, EXPECTED[dataset, name])
  np.testing.assert_array_equal(maps.fine_of, np.arange(10))  # Identity.
  np.testing.assert_array_equal(maps.fine_to_primary, EXPECTED[dataset, name])
  assert maps.num_primary == max(EXPECTED[dataset, name]) + 1
  assert maps.num_fine == 10


def test_fashion_pairs_join_the_named_classes():
  pairs = groupings.parse('pairs', 'fashion_mnist', 10)
  for a, b in [(0, 6), (1, 3), (2, 4), (5, 7), (8, 9)]:
    assert pairs[a] == pairs[b]
  assert np.unique(pairs).size == 5
  types = groupings.parse('types', 'fashion_mnist', 10)
  assert types[0] == types[2] == types[4] == types[6]  # Tops.
  assert types[5] == types[7] == types[9] != types[8]  # Shoes, not the bag.


@pytest.mark.parametrize(
  'spec',
  [
    '0,1,2,1,2,3,0,3,4,4',
    ' 0, 1, 2, 1, 2, 3, 0, 3, 4, 4 ',
    '[0,1,2,1,2,3,0,3,4,4]',
    (0, 1, 2, 1, 2, 3, 0, 3, 4, 4),
  ],
)
def test_explicit_list(spec):
  maps = groupings.label_maps(data_config('svhn_cropped', spec), 10)
  np.testing.assert_array_equal(maps.primary_of, [0, 1, 2, 1, 2, 3, 0, 3, 4, 4])
  np.testing.assert_array_equal(maps.fine_of, np.arange(10))
  assert (maps.num_primary, maps.num_fine) == (5, 10)


def test_explicit_list_keeps_its_numbering():
  coarse = groupings.parse('1,1,0,0,2', 'toy', 5)  # Not first-appearance.
  np.testing.assert_array_equal(coarse, [1, 1, 0, 0, 2])


def test_no_hierarchy_by_default():
  for name in ('digits', 'fashion_mnist', 'svhn_cropped'):
    maps = groupings.label_maps(data_config(name), 10)
    np.testing.assert_array_equal(maps.primary_of, np.arange(10))
    assert maps.fine_of is None and maps.fine_to_primary is None
    assert (maps.num_primary, maps.num_fine) == (10, 0)


@pytest.mark.parametrize(
  'primary, aux', [(a, b) for a in LEVELS for b in LEVELS if a < b]
)
def test_cifar100_levels_are_the_default_hierarchy(primary, aux):
  config = data_config('cifar100', primary=primary, aux=aux)
  maps = groupings.label_maps(config, 100)
  np.testing.assert_array_equal(
    maps.primary_of, cifar100_hierarchy.level_of_fine(primary)
  )
  np.testing.assert_array_equal(
    maps.fine_of, cifar100_hierarchy.level_of_fine(aux)
  )
  np.testing.assert_array_equal(
    maps.fine_to_primary, cifar100_hierarchy.level_map(aux, primary)
  )
  assert (maps.num_primary, maps.num_fine) == (primary, aux)


def test_cifar100_with_a_grouping_regroups_the_fine_labels():
  coarse = ','.join(str(c) for c in cifar100_hierarchy.level_of_fine(10))
  maps = groupings.label_maps(data_config('cifar100', coarse), 100)
  np.testing.assert_array_equal(
    maps.primary_of, cifar100_hierarchy.level_of_fine(10)
  )
  np.testing.assert_array_equal(maps.fine_of, np.arange(100))


# spec on digits (10 classes) or another dataset: parts of the message.
BAD = {
  'too_short': ('digits', '0,1', ['2 coarse ids', 'digits has 10 classes']),
  'too_long': ('digits', ','.join(['0', '1'] * 6), ['12 coarse ids']),
  'out_of_range': (
    'digits',
    '0,1,2,1,2,3,0,3,4,10',
    ['class 9 has coarse id 10', 'outside 0..9'],
  ),
  'negative': ('digits', '0,1,-1,1,0,1,0,1,0,1', ['class 2', '-1']),
  'missing_class': (
    'digits',
    '0,1,2,1,2,3,0,3,5,5',
    ['no class has coarse id 4', 'none skipped'],
  ),
  'one_class': ('digits', '0,0,0,0,0,0,0,0,0,0', ['at least 2']),
  'not_an_int': ('digits', '0,1,a', ["'a' is not an int"]),
  'unknown_name': (
    'digits',
    'pairs',
    ["no grouping named 'pairs'", "['parity', 'halves']", 'list of 10'],
  ),
  'unknown_fashion_name': (
    'fashion_mnist',
    'halves',
    ["['pairs', 'types', 'parity']"],
  ),
  'no_named_groupings': (
    'svhn_cropped',
    'parity',
    ['svhn_cropped has no named groupings', 'list of 10 coarse ids'],
  ),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_grouping_raises_a_helpful_usage_error(case):
  dataset, spec, parts = BAD[case]
  with pytest.raises(UsageError) as error:
    groupings.label_maps(data_config(dataset, spec), 10)
  message = str(error.value)
  assert message.startswith(f'config.data.hierarchy={spec!r}'), message
  for part in parts:
    assert part in message, message


def test_cifar100_levels_that_do_not_nest_raise():
  with pytest.raises(UsageError, match='finer'):
    groupings.label_maps(data_config('cifar100', primary=20, aux=10), 100)


def test_dataset_info_json_round_trip_and_old_keys():
  info = DatasetInfo(
    'digits',
    2,
    (32, 32, 1),
    1437,
    360,
    fine_num_classes=10,
    fine_to_primary=np.array(EXPECTED['digits', 'halves']),
  )
  fields = json.loads(json.dumps(info.to_json()))
  assert fields['fine_to_primary'] == EXPECTED['digits', 'halves']
  again = DatasetInfo.from_json(fields)
  np.testing.assert_array_equal(again.fine_to_primary, info.fine_to_primary)
  assert again.fine_num_classes == 10 and again.image_shape == (32, 32, 1)
  fields['aux_num_classes'] = fields.pop('fine_num_classes')  # Older runs.
  fields['aux_to_primary'] = fields.pop('fine_to_primary')
  old = DatasetInfo.from_json(fields)
  assert old.fine_num_classes == 10
  np.testing.assert_array_equal(old.fine_to_primary, info.fine_to_primary)


def test_human_on_digits_parity_through_the_entry_point(tmp_path):
  proc = ep.run(
    *ep.TINY,
    '--config.data.hierarchy=parity',
    '--config.method=human',
    '--config.train.epochs=1',
    f'--workdir={tmp_path}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / 'result.json').read_text())
  assert result['method'] == 'human' and result['steps'] == 3
  info = json.loads((tmp_path / 'dataset.json').read_text())
  assert (info['num_classes'], info['fine_num_classes']) == (2, 10)
  assert info['fine_to_primary'] == EXPECTED['digits', 'parity']
