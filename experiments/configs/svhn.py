"""SVHN, ConvNet-4, psi = 5 (paper Table 1: Single 94.05%, MAXL 94.59%).

COMMAND:
  python -m experiments.run --config=experiments/configs/svhn.py \
    --workdir=/tmp/maxl_svhn
"""

from experiments.configs import default


def get_config():
  """TFDS `svhn_cropped` (32x32 digits: no flips, no crops)."""
  config = default.get_config()
  config.data.name = 'svhn_cropped'
  config.data.augment = 'none'
  config.model.name = 'convnet4'
  config.model.head_hidden = 256
  config.maxl.psi_per_class = 5
  return config
