"""ImageNet 32x32, VGG-16, psi = 5 (paper Table 1: Single 46.67%, MAXL 47.02%).

COMMAND:
  python -m experiments.run --config=experiments/configs/imagenet32.py \
    --workdir=/tmp/maxl_imagenet32

TFDS `imagenet_resized/32x32` needs a manual download of the ImageNet
archives (see the TFDS catalogue); the 1.28M training images take ~3.9 GB of
host memory per host.
"""

from experiments.configs import default


def get_config():
  """1,000 classes, K = 5,000 auxiliary classes."""
  config = default.get_config()
  config.data.name = 'imagenet_resized/32x32'
  config.maxl.psi_per_class = 5
  config.train.epochs = 40
  config.primary_opt.decay_every_epochs = 10
  config.label_opt.decay_every_epochs = 10
  return config
