"""Which training examples a process sees: low-data subsets, held-out split.

Pure functions of the labels and the seed: every process computes the same
choice (`default_rng([seed, salt])`), then keeps its own even share.
"""

import numpy as np

from maxl_jax.errors import UsageError

_SUBSET, _META = 2, 3  # Salts of the seeded streams (pipeline uses 0, 1).


def seed_entropy(seed: int) -> int:
  return int(seed) % (1 << 64)  # SeedSequence wants a non-negative int.


def subset_indices(
  labels: np.ndarray, *, train_fraction: float, per_class: int, seed: int
) -> np.ndarray:
  """A class-balanced low-data subset: sorted int64 indices into `labels`.

  `per_class > 0` keeps `per_class` examples of every class; otherwise
  `train_fraction` keeps `round(train_fraction * n_c)` (at least 1) of the
  `n_c` examples of each class c. The choice depends on `seed` only.
  """
  rng = np.random.default_rng([seed_entropy(seed), _SUBSET])
  chosen = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    keep = per_class or max(1, round(train_fraction * members.size))
    if keep > members.size:
      raise UsageError(
        f'config.data.per_class = {per_class}, but class {c} has only '
        f'{members.size} training examples; use per_class <= {members.size}.'
      )
    chosen.append(rng.permutation(members)[:keep])
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def meta_split(
  labels: np.ndarray, *, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """A class-balanced held-out split: (kept, held out) sorted positions.

  Each class c gives `round(fraction * n_c)` of its `n_c` examples (at least
  one, and at least one stays) to the held-out set; the choice depends on
  `seed` only.
  """
  rng = np.random.default_rng([seed_entropy(seed), _META])
  held = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    if members.size < 2:
      raise UsageError(
        f'config.data.meta_fraction = {fraction}: class {c} has only '
        f'{members.size} training example(s), none to hold out; use more '
        'training data or meta_fraction=0.'
      )
    count = min(max(1, round(fraction * members.size)), members.size - 1)
    held.append(rng.permutation(members)[:count])
  held = np.sort(np.concatenate(held)).astype(np.int64)
  kept = np.setdiff1d(np.arange(len(labels)), held).astype(np.int64)
  return kept, held


def even_share(n: int, process_index: int, process_count: int):
  """`[lo, hi)`: process `process_index`'s contiguous share of n examples."""
  lo = n * process_index // process_count
  return lo, n * (process_index + 1) // process_count
