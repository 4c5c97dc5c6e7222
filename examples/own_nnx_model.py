"""Your own Flax NNX model, numpy data and training loop: MAXL vs Single.

`examples/own_model.py` with the networks written in Flax NNX: a trunk of
your own (two conv-BatchNorm blocks) under `nnx_models`' heads, given to
the same library API (`maxl_jax.maxl`, `maxl_jax.single`), the same loop
and data (scikit-learn's 8x8 digits). An NNX module is built with its
weights, so each learner starts from the modules' own weights (`init`'s
key only matters for Linen modules); BatchNorm's running averages live in
the state, as Linen's do.

Run it in full (46 s of CPU time here; it printed Single 98.61%, MAXL
99.44%: 360 test digits show the loop, not MAXL's gain):

  python examples/own_nnx_model.py

Tiny (what the tests run): `python examples/own_nnx_model.py --epochs=1
--steps=2`. `--psi=3` sets the auxiliary classes per primary class.
"""

import argparse

import optax
from flax import nnx
from own_model import load, train

import maxl_jax
from maxl_jax.networks import nnx_models


class Trunk(nnx.Module):
  """Features [N, 64] of [N, 8, 8, 1] images; `train` as a Linen trunk's."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 16, (3, 3), rngs=rngs)
    self.norm1 = nnx.BatchNorm(16, momentum=0.9, rngs=rngs)
    self.conv2 = nnx.Conv(16, 32, (3, 3), rngs=rngs)
    self.norm2 = nnx.BatchNorm(32, momentum=0.9, rngs=rngs)
    self.dense = nnx.Linear(2 * 2 * 32, 64, rngs=rngs)

  def __call__(self, x, train):
    for conv, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2)):
      x = nnx.relu(norm(conv(x), use_running_average=not train))
      x = nnx.max_pool(x, (2, 2), (2, 2))
    return nnx.relu(self.dense(x.reshape(len(x), -1)))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--epochs', type=int, default=15)
  parser.add_argument('--steps', type=int, default=0, help='0 = all')
  parser.add_argument('--psi', type=int, default=3)
  args = parser.parse_args(argv)
  data = load()
  num_primary = 10
  psi = [args.psi] * num_primary  # Any positive ints, one per class.
  k = sum(psi)
  rngs = nnx.Rngs(0)  # The modules' initial weights.
  lr = 0.05
  learners = {
    'single': maxl_jax.single(
      nnx_models.MultiTaskNet(Trunk(rngs), 64, num_primary, 0, rngs=rngs),
      optax.sgd(lr, momentum=0.9),
    ),
    'maxl': maxl_jax.maxl(
      nnx_models.MultiTaskNet(Trunk(rngs), 64, num_primary, k, rngs=rngs),
      nnx_models.LabelGenerator(Trunk(rngs), 64, k, rngs=rngs),
      psi,
      optax.sgd(lr, momentum=0.9),
      optax.adam(1e-3),
      alpha=lr,  # The lookahead's step: θ1's learning rate.
    ),
  }
  results = {}
  for name, learner in learners.items():
    print(name)
    results[name], _ = train(learner, data, args.epochs, args.steps)
  for name, accuracy in results.items():
    print(f'{name} test accuracy: {100 * accuracy:.2f}%')
  return results


if __name__ == '__main__':
  main()
