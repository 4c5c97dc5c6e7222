"""`DatasetInfo`: what building a run needs to know about its dataset.

Shapes, class counts and the label hierarchy, without the images: a run is
built from a config and a `DatasetInfo` alone (`training.contract`), and the
info travels in every checkpoint so that a run can be rebuilt from its
workdir without loading the training set.
"""

import dataclasses

import numpy as np

# dataset.json keys of older workdirs -> their current names.
_RENAMED = {
  'aux_num_classes': 'fine_num_classes',
  'aux_to_primary': 'fine_to_primary',
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about the dataset, as configured."""

  name: str
  num_classes: int  # Primary classes (coarse ones under a hierarchy).
  image_shape: tuple[int, int, int]  # (32, 32, C).
  num_train: int  # Global, after any low-data subset.
  num_test: int
  num_meta: int = 0  # Held-out meta split (config.data.meta_fraction).
  # Hidden fine classes of the label hierarchy (config.data.hierarchy;
  # DESIGN §6): batch['fine_label'] < fine_num_classes; 0 = no hierarchy.
  fine_num_classes: int = 0
  # [fine_num_classes] primary class of each fine class; None = no hierarchy.
  fine_to_primary: np.ndarray | None = None

  def to_json(self) -> dict:
    """A JSON-able dict (`from_json` inverts it)."""
    out = dataclasses.asdict(self)
    out['image_shape'] = list(self.image_shape)
    if self.fine_to_primary is not None:
      out['fine_to_primary'] = np.asarray(self.fine_to_primary).tolist()
    return out

  @classmethod
  def from_json(cls, fields: dict) -> 'DatasetInfo':
    """Inverts `to_json`; also reads older workdirs' `aux_*` keys."""
    fields = dict(fields)
    for old, new in _RENAMED.items():
      if old in fields:
        fields[new] = fields.pop(old)
    fields['image_shape'] = tuple(fields['image_shape'])
    if fields.get('fine_to_primary') is not None:
      fields['fine_to_primary'] = np.asarray(
        fields['fine_to_primary'], np.int64
      )
    return cls(**fields)
