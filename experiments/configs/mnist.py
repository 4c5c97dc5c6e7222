"""MNIST, ConvNet-4, psi = 3 (paper Table 1: Single 99.57%, MAXL 99.71%).

COMMAND:
  python -m experiments.run --config=experiments/configs/mnist.py \
    --workdir=/tmp/maxl_mnist
"""

from experiments.configs import default


def get_config():
  """MNIST 28x28 zero-padded to 32x32, no augmentation."""
  config = default.get_config()
  config.data.name = 'mnist'
  config.data.augment = 'none'
  config.model.name = 'convnet4'
  config.model.head_hidden = 256
  config.maxl.psi_per_class = 3
  return config
