"""The `Reader` interface: one dataset, read one split at a time into
memory (`readers` has the built-in ones, `user_data` and `image_folder`
a user's own)."""

import abc

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray]  # images uint8 [n, 32, 32, C], labels.


class Reader(abc.ABC):
  """One dataset: `labels(split)` and `load(split, start, stop)`.

  `fine_to_primary`: when not None, the stored labels are the fine classes
  of a label hierarchy given with the data, and this [num_classes] array
  maps each to its primary class.
  """

  name: str
  num_classes: int
  channels: int
  fine_to_primary: np.ndarray | None = None

  @abc.abstractmethod
  def labels(self, split: str) -> np.ndarray:
    """All labels of `split` in example order: int64 [n]."""

  @abc.abstractmethod
  def load(self, split: str, start: int = 0, stop: int | None = None) -> Arrays:
    """Examples `[start, stop)` of `split` (all if stop is None)."""
