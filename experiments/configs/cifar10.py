"""CIFAR-10, VGG-16, psi = 5 (paper Table 1: Single 92.77%, MAXL 93.49%).

COMMAND:
  python -m experiments.run --config=experiments/configs/cifar10.py \
    --workdir=/tmp/maxl_cifar10
"""

from experiments.configs import default


def get_config():
  """CIFAR-10 with crop+flip, VGG-16 (the default backbone)."""
  config = default.get_config()
  config.data.name = 'cifar10'
  config.maxl.psi_per_class = 5
  return config
