"""`DataSpec`: what the data layer reads, as one typed record.

The run builder makes it from the config's data group once
(`DataSpec(**config.data)`, `training.loop`); the data layer takes it and
nothing of the config. The defaults are the config's
(experiments/configs/default.py documents each field; a test holds the two
equal).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """A dataset and how to serve it.

  Attributes:
    name: a dataset of `readers.DATASETS`, 'arrays', 'folder' or 'tfds:NAME'.
    data_dir: TFDS data_dir ('' = TFDS's default).
    local_dir: an image-folder or IDX directory (cinic10, fashion_mnist).
    batch_size: the global training batch.
    eval_batch_size: the global evaluation batch.
    augment: 'crop_flip' | 'crop' (no flip) | 'none'.
    train_fraction: a class-balanced fraction of the training set.
    per_class: or N training images per class (0 = all).
    balance: the classes the low-data subsets keep in proportion:
      'primary' | 'fine' | 'auto'.
    meta_fraction: the held-out share for the meta objective (0 = none).
    meta_batch_size: the held-out batch (0 = batch_size).
    primary_level, aux_level: CIFAR-100's levels (primary, fine).
    hierarchy: a label grouping: '' (the dataset's own), a name of
      `groupings.NAMED` or one coarse id per class, comma-separated.
    download: prepare a missing TFDS dataset (False: say how, and stop).
    video_frames: ucf101's frames per clip.
    path: your own data's .npz file or folder.
    test_fraction: a folder without train/ and test/: the test share.
    label_key: a TFDS dataset's label feature.
  """

  name: str = 'cifar100'
  data_dir: str = ''
  local_dir: str = ''
  batch_size: int = 100
  eval_batch_size: int = 500
  augment: str = 'crop_flip'
  train_fraction: float = 1.0
  per_class: int = 0
  balance: str = 'auto'
  meta_fraction: float = 0.0
  meta_batch_size: int = 0
  primary_level: int = 20
  aux_level: int = 100
  hierarchy: str = ''
  download: bool = True
  video_frames: int = 1
  path: str = ''
  test_fraction: float = 0.2
  label_key: str = 'label'
