"""Fashion-MNIST at 5%, half-width ConvNet-4: a low-data setting for a CPU.

COMMAND:
  apt-get install -y dataset-fashion-mnist   # the IDX files, once
  python -m experiments.run --config=experiments/configs/fashion_low_data.py \
    --workdir=/tmp/maxl_fashion_low_data

Fashion-MNIST (real, offline), 5% of the training set, class-balanced
(3,000 images, AuxiLearn's low-data setting), ConvNet-4 at half width
(16-32-64-128: a quarter of the FLOPs; a run takes one to two minutes on 2
CPU cores), 20 epochs of batch 100 (600 θ1 steps), SGD with momentum 0.9 at
lr 0.01 for θ1 of every method. Evaluation on all 10,000 test images every
other epoch. The base of the studies of docs/RESULTS.md, parts 1 and 2
(studies/), and of the loss combiner (combine_fashion.py). Not in the
paper.
"""

from experiments.configs import default


def get_config():
  """Fashion-MNIST 5%, half-width ConvNet-4, 20 epochs."""
  config = default.get_config()
  config.data.name = 'fashion_mnist'
  config.data.augment = 'none'
  config.data.train_fraction = 0.05
  config.data.eval_batch_size = 1000
  config.model.name = 'convnet4'
  config.model.widths = (16, 32, 64, 128)
  config.model.head_hidden = 128
  config.maxl.psi_per_class = 5
  config.primary_opt.lr = 0.01
  config.primary_opt.momentum = 0.9
  config.train.epochs = 20
  config.train.eval_every_epochs = 2
  config.checkpoint.every_steps = 10_000  # Epoch ends only.
  config.log.progress_every_steps = 100
  config.log.tensorboard = False  # The analysis reads metrics.jsonl.
  return config
