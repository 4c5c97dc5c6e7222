"""soft_human, the label source registered as one module and one entry:
its targets by hand, its ε checked, its registry entry (labels.SOURCES)."""

import jax.numpy as jnp
import numpy as np
import pytest

from maxl_jax import hierarchy, labels
from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError
from maxl_jax.labels.fixed import human_source
from maxl_jax.labels.soft_human import soft_human_source

FINE_TO_PRIMARY = np.array([0, 1, 0, 1, 1])  # psi = (2, 3).


def test_soft_human_targets_by_hand():
  """(1 - ε) one-hot + ε / psi[y] inside the class's range, rows sum to 1."""
  source = soft_human_source(FINE_TO_PRIMARY, 2, smoothing=0.4)
  batch = {'label': jnp.array([0, 1]), 'fine_label': jnp.array([2, 3])}
  targets = np.asarray(
    source.targets({}, None, None, batch, problem=None), np.float64
  )
  aux = hierarchy.child_to_aux_index(FINE_TO_PRIMARY)
  expected = np.zeros((2, 5))
  expected[0, :2] = 0.4 / 2
  expected[1, 2:] = 0.4 / 3
  expected[0, aux[2]] += 0.6
  expected[1, aux[3]] += 0.6
  np.testing.assert_allclose(targets, expected, rtol=1e-6)
  hard = human_source(FINE_TO_PRIMARY, 2).targets({}, None, None, batch,
                                                  problem=None)  # fmt: skip
  np.testing.assert_array_equal(np.asarray(hard).max(axis=1), [1.0, 1.0])


def _info():
  return DatasetInfo(
    'toy',
    2,
    (32, 32, 1),
    num_train=5,
    num_test=5,
    fine_to_primary=FINE_TO_PRIMARY,
    fine_num_classes=5,
  )


def test_the_entry_builds_it_from_the_fine_labels_with_its_eps():
  entry = labels.SOURCES['soft_human']
  assert entry.psi == 'fine' and entry.options == ('soft_human_eps',)
  assert not entry.generator
  source = labels.make_label_source(
    'soft_human', _info(), psi_per_class=3, seed=0, soft_human_eps=0.25
  )
  assert source.smoothing == 0.25
  np.testing.assert_array_equal(source.psi, [2, 3])
  for bad in (0.0, 1.5):
    with pytest.raises(UsageError, match='soft_human_eps'):
      labels.make_label_source(
        'soft_human', _info(), psi_per_class=3, seed=0, soft_human_eps=bad
      )
