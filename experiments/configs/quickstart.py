"""Quickstart: Single vs MAXL on scikit-learn's digits, offline, on a CPU.

COMMAND:
  python -m experiments.run --config=experiments/configs/quickstart.py \
    --workdir=/tmp/maxl_quickstart

Trains the Single baseline and MAXL (ConvNet-4, psi = 3 per class, the
paper's schedule) one after the other and prints both test accuracies. The
1,797 digits are 8x8 images upsampled to 32x32; with 1,437 training images
this is a demonstration of the pipeline, not a benchmark of the method.
"""

from experiments.configs import default


def get_config():
  """Digits, ConvNet-4, a few epochs of Single and MAXL."""
  config = default.get_config()
  config.data.name = 'digits'
  config.data.batch_size = 50
  config.data.eval_batch_size = 360
  config.data.augment = 'none'
  config.model.name = 'convnet4'
  config.model.head_hidden = 256
  config.maxl.psi_per_class = 3
  config.primary_opt.lr = 0.01
  config.primary_opt.momentum = 0.9
  config.train.epochs = 10
  config.checkpoint.every_steps = 500
  config.log.progress_every_steps = 20
  config.compare_methods = 'single,maxl'
  return config
