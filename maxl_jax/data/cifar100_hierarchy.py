"""The CIFAR-100 four-level label hierarchy {3, 10, 20, 100} (DESIGN §4).

Level 100 is the fine label, level 20 the coarse label ("superclass") of the
original release, whose label indices TFDS keeps. Levels 10 and 3 are the
groupings of the original MAXL code: coarse -> 10 and 10 -> 3. Every map is a
plain numpy array indexed by the finer class.
"""

import numpy as np

from maxl_jax.errors import UsageError

LEVELS = (3, 10, 20, 100)

# Fine class names, in label order (alphabetical, as in the original release).
FINE_NAMES = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle',
    'bicycle', 'bottle', 'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel',
    'can', 'castle', 'caterpillar', 'cattle', 'chair', 'chimpanzee', 'clock',
    'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur',
    'dolphin', 'elephant', 'flatfish', 'forest', 'fox', 'girl', 'hamster',
    'house', 'kangaroo', 'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion',
    'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain',
    'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree',
    'pear', 'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy',
    'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket',
    'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail',
    'snake', 'spider', 'squirrel', 'streetcar', 'sunflower', 'sweet_pepper',
    'table', 'tank', 'telephone', 'television', 'tiger', 'tractor', 'train',
    'trout', 'tulip', 'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf',
    'woman', 'worm',
)  # fmt: skip

# Coarse class names, in label order.
COARSE_NAMES = (
    'aquatic_mammals', 'fish', 'flowers', 'food_containers',
    'fruit_and_vegetables', 'household_electrical_devices',
    'household_furniture', 'insects', 'large_carnivores',
    'large_man-made_outdoor_things', 'large_natural_outdoor_scenes',
    'large_omnivores_and_herbivores', 'medium_mammals',
    'non-insect_invertebrates', 'people', 'reptiles', 'small_mammals', 'trees',
    'vehicles_1', 'vehicles_2',
)  # fmt: skip

# Coarse label of each fine label (the original release's superclasses).
FINE_TO_COARSE = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
], dtype=np.int64)  # fmt: skip

# Level-10 class of each coarse class (original MAXL code).
COARSE_TO_10 = np.array(
  [1, 2, 5, 6, 5, 6, 6, 3, 0, 7, 8, 0, 1, 3, 4, 0, 2, 5, 9, 9],
  dtype=np.int64,
)
# Level-3 class of each level-10 class (original MAXL code).
TEN_TO_3 = np.array([0, 0, 0, 0, 0, 1, 2, 2, 2, 2], dtype=np.int64)


def _check_level(level: int) -> int:
  if level not in LEVELS:
    raise UsageError(
      f'CIFAR-100 hierarchy level {level!r} does not exist; use one of '
      f'{LEVELS} (config.data.primary_level / config.data.aux_level).'
    )
  return int(level)


def level_of_fine(level: int) -> np.ndarray:
  """The class at `level` of every fine class: int64 [100], values < level."""
  level = _check_level(level)
  coarse = FINE_TO_COARSE
  return {
    100: np.arange(100, dtype=np.int64),
    20: coarse.copy(),
    10: COARSE_TO_10[coarse],
    3: TEN_TO_3[COARSE_TO_10[coarse]],
  }[level]


def level_map(child_level: int, parent_level: int) -> np.ndarray:
  """Parent (at `parent_level`) of each class at `child_level`: [child_level].

  Raises:
    UsageError: a level is not in LEVELS or `child_level <= parent_level`.
  """
  child_level = _check_level(child_level)
  parent_level = _check_level(parent_level)
  if child_level <= parent_level:
    raise UsageError(
      f'CIFAR-100 auxiliary level {child_level} must be finer than the '
      f'primary level {parent_level}; set config.data.aux_level to a level '
      f'in {LEVELS} greater than config.data.primary_level.'
    )
  parents = np.zeros(child_level, dtype=np.int64)
  parents[level_of_fine(child_level)] = level_of_fine(parent_level)
  return parents
