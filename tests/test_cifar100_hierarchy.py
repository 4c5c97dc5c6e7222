"""CIFAR-100's four label levels: maxl_jax/data/cifar100_hierarchy.py."""

import numpy as np
import pytest
from data_loading import load, make_config

from maxl_jax.data import cifar100_hierarchy
from maxl_jax.errors import UsageError

pytestmark = pytest.mark.usefixtures('no_gcs')  # conftest.py.

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
