"""digit_pairs: a seeded positive control for label hierarchies (DESIGN §6).

Every image shows two of scikit-learn's digits 0..4 side by side (each 8x8
digit upsampled 2x to 16x16, on a black 32x32 canvas, rows 8..23). The
stored label is the pair, `5 a + b` (25 classes); the named hierarchy
`parity` makes the primary task the parity of `a + b` (13 even and 12 odd
pairs). The parity of a sum is an XOR of the two digits' parities, which a
network cannot read off either digit alone, while the pair's identity (the
Human auxiliary labels) names both digits: the fine classes carry structure
that the coarse labels do not, by construction.

Pairs are balanced (the same number of each of the 25 pairs), and the
digits of the training pairs come from the training images of `load_digits`'
fixed split, those of the test pairs from its test images, so no test image
shares a drawn digit with a training image. Fixed (seed 0) whatever the run's
seed; the run's seed picks the low-data subset as for every dataset.
"""

import numpy as np

DIGITS = 5  # Digits 0..4 on each side.
NUM_CLASSES = DIGITS * DIGITS
# Pairs per class: 100 * 25 = 2,500 training and 40 * 25 = 1,000 test images.
PER_CLASS = {'train': 100, 'test': 40}


def parity_groups() -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The `parity` hierarchy: (pairs with an even sum, with an odd sum)."""
  pairs = range(NUM_CLASSES)
  return tuple(
    tuple(k for k in pairs if (k // DIGITS + k % DIGITS) % 2 == parity)
    for parity in (0, 1)
  )


def compose(left: np.ndarray, right: np.ndarray) -> np.ndarray:
  """Two batches of 8x8 uint8 digits -> uint8 [n, 32, 32, 1] side by side."""
  n = len(left)
  canvas = np.zeros((n, 32, 32, 1), np.uint8)
  for col, digits in ((0, left), (16, right)):
    canvas[:, 8:24, col : col + 16, 0] = digits.repeat(2, 1).repeat(2, 2)
  return canvas


def load_digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """scikit-learn's 8x8 digits: a fixed stratified 80/20 split (seed 0),
  0..16 scaled to 0..255, each pixel repeated 4x4 (8x8 -> 32x32)."""
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


def load_digit_pairs(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{'train': (images, labels), 'test': ...}: uint8 [n, 32, 32, 1], int64."""
  splits = load_digits()
  rng = np.random.default_rng(seed)
  out = {}
  for split, per_class in PER_CLASS.items():
    images, labels = splits[split]
    small = images[:, ::4, ::4, 0]  # Back to 8x8 (digits repeats each pixel).
    pools = [np.flatnonzero(labels == d) for d in range(DIGITS)]
    pair_labels = np.repeat(np.arange(NUM_CLASSES), per_class)
    rng.shuffle(pair_labels)
    left = [rng.choice(pools[k // DIGITS]) for k in pair_labels]
    right = [rng.choice(pools[k % DIGITS]) for k in pair_labels]
    out[split] = (compose(small[left], small[right]), pair_labels)
  return out
