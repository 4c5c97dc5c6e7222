"""The hierarchy psi: which auxiliary classes each primary class owns.

Primary class `c` owns the auxiliary classes `[o_c, o_c + psi[c])` with
`o_c = sum(psi[:c])`, `K = sum(psi)` (DESIGN §1). Everything here is numpy:
hierarchies are static and become compile-time constants of the jitted steps.
"""

from collections.abc import Sequence

import numpy as np

from maxl_jax.errors import UsageError


def validate_psi(psi: Sequence[int], num_classes: int | None = None):
  """Checks psi and returns it as an int64 array [P].

  Raises:
    UsageError (a ValueError) naming the offending value: psi not a non-empty
    1-D sequence of positive ints, or its length not the number of primary
    classes.
  """
  arr = np.asarray(psi)
  if arr.ndim != 1 or arr.size == 0:
    raise UsageError(
      f'psi must be a non-empty 1-D list of ints, got {psi!r}; give one '
      'entry (number of auxiliary classes) per primary class.'
    )
  for c, value in enumerate(arr.tolist()):
    if isinstance(value, bool) or int(value) != value or value < 1:
      raise UsageError(
        f'psi[{c}] = {value!r} is invalid: every entry must be a positive '
        'int (the number of auxiliary classes of that primary class).'
      )
  if num_classes is not None and arr.size != num_classes:
    raise UsageError(
      f'psi has {arr.size} entries but the dataset has {num_classes} '
      f'primary classes; give exactly {num_classes} entries.'
    )
  return arr.astype(np.int64)


def offsets(psi: Sequence[int]) -> np.ndarray:
  """`o_c = sum(psi[:c])`: the first auxiliary class of each class, [P]."""
  psi = validate_psi(psi)
  return np.concatenate([[0], np.cumsum(psi)[:-1]]).astype(np.int64)


def num_aux(psi: Sequence[int]) -> int:
  """`K = sum(psi)`."""
  return int(validate_psi(psi).sum())


def class_mask(psi: Sequence[int]) -> np.ndarray:
  """The [P, K] bool mask: row c is True on `[o_c, o_c + psi[c])`."""
  owner = aux_owner(psi)
  return owner[None, :] == np.arange(len(psi))[:, None]


def aux_owner(psi: Sequence[int]) -> np.ndarray:
  """The primary class that owns each auxiliary class, [K]."""
  psi = validate_psi(psi)
  return np.repeat(np.arange(psi.size), psi)


def balanced_psi(num_classes: int, per_class: int) -> np.ndarray:
  """`psi[c] = per_class` for every one of `num_classes` classes."""
  return validate_psi([per_class] * num_classes)


def random_psi(
  num_classes: int, total: int, rng: np.random.Generator
) -> np.ndarray:
  """A random well-balanced psi with `sum(psi) == total` (Random baseline).

  Every class gets `total // num_classes` auxiliary classes and a random
  subset of `total % num_classes` classes gets one more.
  """
  if total < num_classes:
    raise UsageError(
      f'Random hierarchy: total K = {total} is smaller than the '
      f'{num_classes} primary classes; every class needs at least one.'
    )
  psi = np.full(num_classes, total // num_classes, dtype=np.int64)
  psi[rng.permutation(num_classes)[: total % num_classes]] += 1
  return validate_psi(psi)


def psi_from_label_map(child_to_parent: Sequence[int], num_parents: int):
  """psi[c] = number of child (finer) classes under parent class c.

  Used for the Human baseline: primary classes are the parents, auxiliary
  classes the children (e.g. CIFAR-100 coarse 20 -> fine 100).
  """
  child_to_parent = np.asarray(child_to_parent)
  psi = np.bincount(child_to_parent, minlength=num_parents)
  if psi.size != num_parents or np.any(psi == 0):
    empty = np.flatnonzero(psi == 0).tolist()
    raise UsageError(
      f'label map leaves parent classes {empty} without child classes; '
      'every primary class needs at least one auxiliary class.'
    )
  return validate_psi(psi)


def child_to_aux_index(child_to_parent: Sequence[int]) -> np.ndarray:
  """Position of each child class in the psi ordering of auxiliary classes.

  Children are grouped by parent (in increasing child id within a parent), so
  child `j` of parent `c` lands in `[o_c, o_c + psi[c])`.
  """
  child_to_parent = np.asarray(child_to_parent)
  order = np.lexsort((np.arange(child_to_parent.size), child_to_parent))
  index = np.empty_like(order)
  index[order] = np.arange(order.size)
  return index
