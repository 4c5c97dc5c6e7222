"""digit_pairs, the seeded positive control (maxl_jax/data/synthetic.py)."""

import numpy as np

from maxl_jax.data import groupings, readers, synthetic


def test_pairs_are_balanced_fixed_and_drawn_from_their_own_split():
  data = synthetic.load_digit_pairs()
  again = synthetic.load_digit_pairs()
  digits = readers.load_digits()
  for split, per_class in synthetic.PER_CLASS.items():
    images, labels = data[split]
    assert images.shape == (25 * per_class, 32, 32, 1)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels), [per_class] * 25)
    np.testing.assert_array_equal(images, again[split][0])  # Seeded.
    # Each half is an 8x8 digit of its own split, upsampled 2x, whose
    # class is the pair's left (right) digit; the border rows are black.
    source = {
      d.tobytes(): y
      for d, y in zip(digits[split][0][:, ::4, ::4, 0], digits[split][1],
                      strict=True)
    }  # fmt: skip
    for image, label in zip(images[:50], labels[:50], strict=True):
      assert not image[:8].any() and not image[24:].any()
      left, right = image[8:24:2, 0:16:2, 0], image[8:24:2, 16:32:2, 0]
      np.testing.assert_array_equal(
        image[8:24, :16, 0], left.repeat(2, 0).repeat(2, 1)
      )
      assert source[left.tobytes()] == label // 5
      assert source[right.tobytes()] == label % 5


def test_parity_hierarchy_is_the_parity_of_the_sum():
  coarse = groupings.parse('parity', 'digit_pairs', 25)
  np.testing.assert_array_equal(
    coarse, [(k // 5 + k % 5) % 2 for k in range(25)]
  )
  assert readers.DATASETS['digit_pairs'][:2] == (25, 1)
