"""A dataset's name -> its `Reader`: the built-in datasets (`readers`),
your own (`user_data`: an .npz or any TFDS dataset; `image_folder`) and the
synthetic ones (`synthetic`). The one entry of the data layer's readers.
"""

import functools

from maxl_jax.data import image_folder, readers, synthetic, user_data
from maxl_jax.data.spec import DataSpec
from maxl_jax.errors import UsageError


def make_reader(spec: DataSpec) -> readers.Reader:
  """The `Reader` for `spec.name`.

  Raises:
    UsageError: unknown name, or the dataset is not available locally.
  """
  name = spec.name
  if name == 'arrays':
    return user_data.NpzReader(spec.path)
  if name == 'folder':
    return image_folder.ImageFolderReader(
      spec.path, spec.test_fraction
    )
  if name.startswith('tfds:'):
    return user_data.tfds_reader(spec)
  if name not in readers.DATASETS:
    raise UsageError(
      f'Unknown dataset config.data.name={name!r}; known datasets: '
      f'{", ".join(readers.DATASETS)}, or your own: arrays (an .npz), folder '
      '(an image folder), tfds:NAME.'
    )
  num_classes, channels, kind = readers.DATASETS[name]
  common = dict(num_classes=num_classes, channels=channels)
  if kind.startswith('tfds'):
    return readers.TfdsReader(
      name, spec=spec, video=kind == 'tfds_video', **common
    )
  if kind == 'folder':
    return readers.FolderReader(name, root=spec.local_dir, **common)
  if kind == 'fashion_mnist':
    loader = functools.partial(
      readers.load_fashion_mnist, spec.local_dir
    )
  elif kind == 'digit_pairs':
    loader = synthetic.load_digit_pairs
  else:
    loader = synthetic.load_digits
  return readers.ArrayReader(name, loader=loader, **common)
