"""The combiner's given tasks: maxl_jax/combiner_problem.py.

(Its losses and steps run in test_combine.py and test_loss_combiner.py.)
"""

import jax.numpy as jnp
import numpy as np

from maxl_jax import combiner_problem


def test_coarse_task_is_the_stated_grouping():
  groups = {0: (0, 2, 4, 6), 1: (1, 3), 2: (5, 7, 9), 3: (8,)}
  expected = np.zeros(10, np.int32)
  for group, classes in groups.items():
    expected[list(classes)] = group
  task = combiner_problem.TASKS['coarse']
  got = task.labels({'label': jnp.arange(10)}, 0)
  np.testing.assert_array_equal(got, expected)
  assert task.num_classes == 4


def test_random_task_is_fixed_per_index_and_uniform():
  index = jnp.arange(10_000, dtype=jnp.int32)
  labels = np.asarray(combiner_problem.random_labels(0, index))
  np.testing.assert_array_equal(
    combiner_problem.random_labels(0, index), labels
  )
  perm = np.random.default_rng(0).permutation(10_000)  # Order-free.
  np.testing.assert_array_equal(
    combiner_problem.random_labels(0, index[perm]), labels[perm]
  )
  counts = np.bincount(labels, minlength=10)
  assert counts.size == 10 and np.all(np.abs(counts - 1000) < 120), counts
  other = np.asarray(combiner_problem.random_labels(1, index))
  assert np.mean(other == labels) < 0.15  # Another seed, other labels.
