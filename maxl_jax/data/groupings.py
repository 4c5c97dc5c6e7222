"""Label hierarchies: coarse primary classes over stored labels (DESIGN §6).

`config.data.hierarchy` regroups the classes a dataset stores into coarse
primary classes; the stored labels then become hidden *fine* classes (the
Human source's targets and the ground truth of label recovery). It is

  ''      the dataset's default: CIFAR-100's levels (`data.primary_level`,
          `data.aux_level`, `cifar100_hierarchy`), none for the others
          (primary = stored labels, no fine labels);
  a name  a grouping of `NAMED` for that dataset;
  ints    one coarse id per stored class, comma-separated
          ('0,1,2,1,2,3,0,3,4,4'), numbered 0..P-1 with none skipped.

Whatever its form, a hierarchy ends as two maps over the stored labels
(`LabelMaps`): the primary class and the fine class of each. For a grouping
the fine class is the stored label itself. Named groupings number their
coarse classes in the order listed, which is the order of first appearance:
coarse class 0 holds stored class 0, the next new group gets 1, and so on.

Only numpy: building a run (`training.maxl_run`) imports this.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from maxl_jax.data import cifar100_hierarchy, synthetic
from maxl_jax.errors import UsageError

# dataset -> name -> groups of stored classes; coarse class c = groups[c].
NAMED = {
  'fashion_mnist': {
    # T-shirt+Shirt, Trouser+Dress, Pullover+Coat, Sandal+Sneaker,
    # Bag+Ankle boot.
    'pairs': ((0, 6), (1, 3), (2, 4), (5, 7), (8, 9)),
    # Tops, trousers and dresses, shoes, bags.
    'types': ((0, 2, 4, 6), (1, 3), (5, 7, 9), (8,)),
    'parity': ((0, 2, 4, 6, 8), (1, 3, 5, 7, 9)),
  },
  'mnist': {
    'parity': ((0, 2, 4, 6, 8), (1, 3, 5, 7, 9)),
    'halves': ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)),
  },
  'cifar10': {
    # Vehicles (airplane, automobile, ship, truck), animals.
    'animals_vehicles': ((0, 1, 8, 9), (2, 3, 4, 5, 6, 7)),
  },
}
NAMED['digits'] = NAMED['mnist']
# The parity of a + b over the 25 pairs (a, b) of `synthetic.digit_pairs`.
NAMED['digit_pairs'] = {'parity': synthetic.parity_groups()}


@dataclasses.dataclass(frozen=True)
class LabelMaps:
  """A hierarchy as two maps over the stored labels.

  Attributes:
    primary_of: int64 [num_stored], the primary class of each stored label.
    fine_of: int64 [num_stored], the fine class of each stored label; None
      without fine labels (no hierarchy).
  """

  primary_of: np.ndarray
  fine_of: np.ndarray | None = None

  @property
  def num_primary(self) -> int:
    return int(self.primary_of.max()) + 1

  @property
  def num_fine(self) -> int:
    """Number of fine classes; 0 without fine labels."""
    return 0 if self.fine_of is None else int(self.fine_of.max()) + 1

  @property
  def fine_to_primary(self) -> np.ndarray | None:
    """int64 [num_fine], the primary class of each fine class (or None)."""
    if self.fine_of is None:
      return None
    parents = np.zeros(self.num_fine, np.int64)
    parents[self.fine_of] = self.primary_of
    return parents


def names(dataset: str) -> tuple[str, ...]:
  """The named groupings of `dataset` (possibly none)."""
  return tuple(NAMED.get(dataset, {}))


def from_groups(groups: Sequence[Sequence[int]], num_classes: int):
  """Coarse id of each of `num_classes` classes: int64 [num_classes].

  Class k gets coarse id c when k is in `groups[c]`; every class must be in
  exactly one group.
  """
  coarse = np.full(num_classes, -1, np.int64)
  for c, members in enumerate(groups):
    for k in members:
      if not 0 <= k < num_classes or coarse[k] >= 0:
        raise ValueError(f'groups {groups} do not partition {num_classes}.')
      coarse[k] = c
  if np.any(coarse < 0):
    raise ValueError(f'groups {groups} miss classes of {num_classes}.')
  return coarse


def check_grouping(
  coarse_of: Sequence[int],
  num_classes: int,
  *,
  dataset: str = 'the dataset',
  what: str = 'the grouping',
) -> np.ndarray:
  """Checks one coarse id per class; returns them as int64 [num_classes].

  Raises:
    UsageError: an id that is not an int or is outside [0, num_classes), a
      wrong length, a coarse class skipped, or a single coarse class. `what`
      names the input in the message.
  """
  coarse_of = list(coarse_of)
  for k, c in enumerate(coarse_of):
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
      raise UsageError(
        f'{what}: the coarse id of class {k}, {c!r}, is not an int; give '
        'ints 0, 1, 2, ..., one per class.'
      )
    if not 0 <= c < num_classes:
      raise UsageError(
        f'{what}: class {k} has coarse id {c}, outside 0..{num_classes - 1};'
        ' number the coarse classes 0, 1, 2, ... (at most one per class).'
      )
  if len(coarse_of) != num_classes:
    raise UsageError(
      f'{what} gives {len(coarse_of)} coarse ids, but {dataset} has '
      f'{num_classes} classes: give exactly {num_classes}, the coarse class '
      f'of each class 0..{num_classes - 1}, comma-separated.'
    )
  coarse = np.asarray(coarse_of, np.int64)
  used = np.unique(coarse)
  missing = sorted(set(range(used.max() + 1)) - set(used.tolist()))
  if missing:
    raise UsageError(
      f'{what}: no class has coarse id {missing[0]} (ids used: '
      f'{used.tolist()}); number the coarse classes 0..{used.size - 1} '
      'with none skipped.'
    )
  if used.size < 2:
    raise UsageError(
      f'{what} puts every class in one coarse class; a primary task needs '
      'at least 2.'
    )
  return coarse


def _choices(dataset: str, num_classes: int) -> str:
  """What config.data.hierarchy can be for `dataset`, as a phrase."""
  listed = f'one of {list(names(dataset))}, ' if names(dataset) else ''
  return (
    f'{listed}a comma-separated list of {num_classes} coarse ids (one per '
    "class, e.g. 0,1,0,1,...), or '' for the dataset's default"
  )


def parse(spec, dataset: str, num_classes: int) -> np.ndarray | None:
  """The coarse id of each stored class from `spec`, or None for ''.

  Args:
    spec: a name of `NAMED[dataset]`, a comma-separated string of ints, a
      sequence of ints, or '' (no grouping).
    dataset: the dataset's name (`config.data.name`).
    num_classes: the number of classes the dataset stores.

  Raises:
    UsageError: an unknown name, a token that is not an int, or a bad
      grouping (`check_grouping`).
  """
  what = f'config.data.hierarchy={spec!r}'
  check = dict(dataset=dataset, what=what)
  if not isinstance(spec, str):
    return check_grouping(spec, num_classes, **check)
  text = spec.strip()
  if not text:
    return None
  if ',' not in text and not text.lstrip('-').isdigit():  # A name.
    if text in NAMED.get(dataset, {}):
      return from_groups(NAMED[dataset][text], num_classes)
    if names(dataset):
      problem = f'{dataset} has no grouping named {text!r}'
    else:
      problem = f'{dataset} has no named groupings'
    raise UsageError(
      f'{what}: {problem}; use {_choices(dataset, num_classes)}.'
    )
  coarse = []
  for token in text.strip('[]() ').split(','):
    try:
      coarse.append(int(token))
    except ValueError:
      raise UsageError(
        f'{what}: {token.strip()!r} is not an int; use '
        f'{_choices(dataset, num_classes)}.'
      ) from None
  return check_grouping(coarse, num_classes, **check)


def label_maps(spec, num_classes: int) -> LabelMaps:
  """The hierarchy of `spec` (a `DataSpec`) over the stored labels.

  Args:
    spec: name, hierarchy; CIFAR-100's primary_level and aux_level when
      hierarchy is ''.
    num_classes: the number of classes the dataset stores.

  Raises:
    UsageError: a bad hierarchy (see `parse`; CIFAR-100 levels that do not
      exist or do not nest).
  """
  name = spec.name
  coarse = parse(spec.hierarchy, name, num_classes)
  if coarse is not None:  # A grouping: the stored labels are the fine ones.
    return LabelMaps(coarse, np.arange(num_classes, dtype=np.int64))
  if name == 'cifar100':  # Its default: two levels of its own hierarchy.
    primary, aux = int(spec.primary_level), int(spec.aux_level)
    cifar100_hierarchy.level_map(aux, primary)  # Raises if they do not nest.
    return LabelMaps(
      cifar100_hierarchy.level_of_fine(primary),
      cifar100_hierarchy.level_of_fine(aux),
    )
  return LabelMaps(np.arange(num_classes, dtype=np.int64))
