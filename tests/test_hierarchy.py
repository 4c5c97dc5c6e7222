"""Hierarchy psi: validation, offsets, masks and baseline hierarchies."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxl_jax import hierarchy
from maxl_jax.errors import UsageError

psis = st.lists(st.integers(1, 7), min_size=1, max_size=12)


@given(psis)
def test_mask_rows_cover_exactly_their_range(psi):
  mask = hierarchy.class_mask(psi)
  offs = hierarchy.offsets(psi)
  assert mask.shape == (len(psi), sum(psi))
  for c, width in enumerate(psi):
    expected = np.zeros(sum(psi), bool)
    expected[offs[c] : offs[c] + width] = True
    np.testing.assert_array_equal(mask[c], expected)
  np.testing.assert_array_equal(mask.sum(0), 1)  # Each aux class: one owner.
  np.testing.assert_array_equal(hierarchy.aux_owner(psi), mask.argmax(0))


@pytest.mark.parametrize(
  'psi,num_classes,named',
  [
    ([2, 0, 3], None, 'psi[1] = 0'),
    ([2, -1], None, 'psi[1] = -1'),
    ([2, 1.5], None, 'psi[1] = 1.5'),
    ([], None, '[]'),
    ([[1, 2]], None, '[[1, 2]]'),
    ([3, 3, 3], 10, '3 entries but the dataset has 10'),
  ],
)
def test_invalid_psi_names_the_problem(psi, num_classes, named):
  with pytest.raises(ValueError, match=__import__('re').escape(named)):
    hierarchy.validate_psi(psi, num_classes)


@given(st.integers(1, 20), st.integers(0, 60), st.integers(0, 2**31))
def test_random_psi_is_well_balanced(num_classes, extra, seed):
  total = num_classes + extra
  psi = hierarchy.random_psi(num_classes, total, np.random.default_rng(seed))
  assert psi.sum() == total
  assert psi.max() - psi.min() <= 1


def test_random_psi_needs_one_class_each():
  with pytest.raises(UsageError, match='total K = 3'):
    hierarchy.random_psi(5, 3, np.random.default_rng(0))


def test_psi_from_label_map_and_aux_index():
  child_to_parent = np.array([2, 0, 2, 1, 0, 2])
  psi = hierarchy.psi_from_label_map(child_to_parent, 3)
  np.testing.assert_array_equal(psi, [2, 1, 3])
  index = hierarchy.child_to_aux_index(child_to_parent)
  assert sorted(index.tolist()) == list(range(6))
  mask = hierarchy.class_mask(psi)
  for child, parent in enumerate(child_to_parent):
    assert mask[parent, index[child]]


def test_psi_from_label_map_rejects_empty_parent():
  with pytest.raises(UsageError, match=r'\[1\]'):
    hierarchy.psi_from_label_map([0, 0, 2], 3)


def test_balanced_psi():
  np.testing.assert_array_equal(hierarchy.balanced_psi(4, 3), [3, 3, 3, 3])
  assert hierarchy.num_aux([3, 3, 3, 3]) == 12
