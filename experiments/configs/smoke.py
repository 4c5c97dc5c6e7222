"""Smoke: a tiny MAXL run on scikit-learn's digits, seconds on a CPU.

COMMAND:
  python -m experiments.run --config=experiments/configs/smoke.py \
    --workdir=/tmp/maxl_smoke

2 epochs of 3 θ1 + 3 θ2 steps (batch 16, a ConvNet-4 of widths 8-16-16-32,
heads of 32 units), a checkpoint every 2 steps, what trains g logged on
every θ2 step: the entry-point, resume and analysis tests run it. It checks
the machinery, not the method.
"""

from experiments.configs import quickstart


def get_config():
  """The quickstart, MAXL only, shrunk to 12 steps."""
  config = quickstart.get_config()
  config.compare_methods = ''
  config.method = 'maxl'
  config.data.batch_size = 16
  config.model.widths = (8, 16, 16, 32)  # A small trunk: quick steps.
  config.model.head_hidden = 32
  config.train.epochs = 2
  config.train.steps_per_epoch = 3
  config.checkpoint.every_steps = 2
  config.log.meta_signal_every = 1
  # No TensorBoard event files: TensorFlow is not imported (~7 s of CPU and
  # ~0.4 GB per process); metrics.jsonl is written as always.
  config.log.tensorboard = False
  return config
