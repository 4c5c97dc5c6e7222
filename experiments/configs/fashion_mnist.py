"""Fashion-MNIST, ConvNet-4, psi = 3: real data that works offline.

COMMAND:
  apt-get install -y dataset-fashion-mnist   # the IDX files, once
  python -m experiments.run --config=experiments/configs/fashion_mnist.py \
    --workdir=/tmp/maxl_fashion --config.train.epochs=1

Reads the original IDX files from /usr/share/datasets/fashion-mnist (or
`--config.data.local_dir`). Not in the paper.
"""

from experiments.configs import default


def get_config():
  """Fashion-MNIST 28x28 zero-padded to 32x32, ConvNet-4."""
  config = default.get_config()
  config.data.name = 'fashion_mnist'
  config.data.augment = 'none'
  config.model.name = 'convnet4'
  config.model.head_hidden = 256
  config.maxl.psi_per_class = 3
  config.train.epochs = 20
  return config
