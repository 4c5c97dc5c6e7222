"""AuxiLearn's learned loss combiner on given tasks, Fashion-MNIST at 5%.

COMMAND (one form; `none` is Single, `fixed` weights every task 1):
  python -m experiments.run \
    --config=experiments/configs/combine_fashion.py \
    --workdir=runs/combine/linear/seed0 --config.combiner.form=linear

The evidence study's setting (fashion_low_data.py): 5% of the training set,
class-balanced, 10% of it held out for the hypergradient's primary loss (all
forms hold it out, so all train on the same 2,700 images), ConvNet-4 at half
width, 20 epochs of batch 100, SGD with momentum 0.9 at lr 0.01 for θ. Two
given auxiliary tasks: 'coarse' (4 clothing groups, meant to help) and
'random' (a fixed random class per image: harmful). The learned weights are
in metrics.jsonl (`weight/<task>`) and result.json. Not in the paper.

Measured (seed 0, one run each, final-epoch test accuracy; epoch-to-epoch
noise is ±1-2 points): none (Single) 86.2%, fixed 80.9%, linear 84.4%
(weights coarse 0.34, random 0.49), mlp 84.3% (coarse 1.60, random 1.60,
from 1.90 and 1.96). Both given tasks hurt here, and the linear combiner
lowers 'coarse' most (a guess: its 'tops' group merges the classes that a
small network confuses most). docs/combiner_weights.png; 75-100 s per run
on 2 busy CPU cores.
"""

import ml_collections

from experiments.configs import fashion_low_data


def get_config():
  """Fashion-MNIST 5% (fashion_low_data.py), a held-out split, two tasks."""
  config = fashion_low_data.get_config()
  config.run = 'combiner'
  config.data.meta_fraction = 0.1

  # The loss combiner c(ℓ; φ) (maxl_jax/training/combiner_run.py). The
  # hypergradient's inverse-HVP solver is config.inverse_hvp's (neumann, K = 3,
  # η = 0.1, damping 0.1); config.method, maxl, label_opt, baseline and
  # kmeans are not used (train, checkpoint and log are, as in every run).
  config.combiner = ml_collections.ConfigDict()
  config.combiner.form = 'linear'  # linear | mlp | fixed | none (Single).
  # Given auxiliary tasks, comma-separated: coarse (Fashion-MNIST only) |
  # random.
  config.combiner.tasks = 'coarse,random'
  config.combiner.hidden = 16  # Hidden units of form 'mlp'.
  # A φ step after every k θ steps (AuxiLearn: 20-50); 20 gives 27 φ steps
  # in 20 epochs of 27 θ steps, and costs about 1.4x Single's time.
  config.combiner.meta_every = 20
  # φ's optimiser: sgd (AuxiLearn's, with momentum 0.9) | adam. Adam moves
  # every parameter by about lr per step however small its hypergradient,
  # so the noise of a task that is already fitted (a vanishing gradient)
  # moves its weight as much as a real signal; SGD's steps scale with it.
  config.combiner.optimizer = 'sgd'
  config.combiner.lr = 0.01  # φ's learning rate.
  config.combiner.momentum = 0.9  # sgd only (0 = plain SGD).
  config.combiner.max_grad_norm = 10.0  # Hypergradient clip (0 = none).
  return config
