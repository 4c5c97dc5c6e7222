"""`DatasetInfo`: what building a run needs to know about its dataset.

Shapes, class counts and the label hierarchy, without the images: a run is
built from a config and a `DatasetInfo` alone (`training.assembly`), and the
info travels in every checkpoint so that a run can be rebuilt from its
workdir without loading the training set.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about the dataset, as configured."""

  name: str
  num_classes: int  # Primary classes (at primary_level for cifar100).
  image_shape: tuple[int, int, int]  # (32, 32, C).
  num_train: int  # Global, after any low-data subset.
  num_test: int
  num_meta: int = 0  # Held-out meta split (config.data.meta_fraction).
  aux_num_classes: int = 0  # Classes at aux_level (cifar100), else 0.
  # [aux_num_classes] parent primary class of each aux-level class (cifar100).
  aux_to_primary: np.ndarray | None = None

  def to_json(self) -> dict:
    """A JSON-able dict (`from_json` inverts it)."""
    out = dataclasses.asdict(self)
    out['image_shape'] = list(self.image_shape)
    if self.aux_to_primary is not None:
      out['aux_to_primary'] = np.asarray(self.aux_to_primary).tolist()
    return out

  @classmethod
  def from_json(cls, fields: dict) -> 'DatasetInfo':
    fields = dict(fields)
    fields['image_shape'] = tuple(fields['image_shape'])
    if fields.get('aux_to_primary') is not None:
      fields['aux_to_primary'] = np.asarray(fields['aux_to_primary'], np.int64)
    return cls(**fields)
