"""Low-data subsets and the held-out split: maxl_jax/data/splits.py.

(Both through `get_datasets` are in test_pipeline.py.)
"""

import numpy as np
import pytest

from maxl_jax.data import splits
from maxl_jax.errors import UsageError


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
