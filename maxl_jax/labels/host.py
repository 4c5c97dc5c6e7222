"""Host-side placement for label sources that refresh on the host
(K-Means): means over processes, arrays to numpy and back, seeds."""

import jax
import numpy as np
from jax.experimental import multihost_utils


def process_mean(tree):
  """Mean of `tree` over processes (identity with a single process)."""
  if jax.process_count() == 1:
    return tree
  stacked = multihost_utils.process_allgather(tree)  # [processes, ...].
  return jax.tree.map(lambda x: np.mean(x, axis=0), stacked)


def host(tree):
  """Arrays (replicated global ones too) -> numpy, on every process."""

  def one(x):
    if isinstance(x, jax.Array):
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)

  return jax.tree.map(one, tree)


def like(new: np.ndarray, old):
  """`new` placed as `old` is (a replicated global array stays one)."""
  if not isinstance(old, jax.Array):
    return new
  new = np.asarray(new, dtype=old.dtype)
  return jax.make_array_from_callback(
    new.shape, old.sharding, lambda index: new[index]
  )


def random_state(seed: int, salt: int, *more: int) -> int:
  """An int seed for scikit-learn from the run seed and counters."""
  entropy = [int(seed) % (1 << 64), salt, *more]
  return int(np.random.default_rng(entropy).integers(1 << 31))
