"""A different number of auxiliary classes per primary class (ψ per class).

MAXL's ψ need not be balanced: here digits 0-4 get one auxiliary class
each (their auxiliary task is trivial) and digits 5-9 four each. After
training, it prints how many of each class's ψ[c] auxiliary classes g
actually uses on the test images (an auxiliary class is used when it is
some image's most probable one), and the test accuracy. The model, data
and loop are those of `own_model.py` (run from the repository root, or
copy both files).

Run it in full (about 20 s on a CPU):

  python examples/own_psi.py

Tiny (what the tests run): `python examples/own_psi.py --epochs=1
--steps=2`. The runner takes a ψ per class too:
`python -m experiments.run ... --config.maxl.psi=1,1,1,1,1,4,4,4,4,4`.
"""

import argparse

import jax
import numpy as np
import optax
from own_model import Generator, TwoHeads, load, train

import maxl_jax


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--epochs', type=int, default=15)
  parser.add_argument('--steps', type=int, default=0, help='0 = all')
  args = parser.parse_args(argv)
  psi = [1] * 5 + [4] * 5
  k = sum(psi)
  data = load()
  learner = maxl_jax.maxl(
    TwoHeads(10, k),
    Generator(k),
    psi,
    optax.sgd(0.05, momentum=0.9),
    optax.adam(1e-3),
    alpha=0.05,
  )
  accuracy, state = train(learner, data, args.epochs, args.steps)
  # g's labels of the test images: the mask softmax over each image's
  # class's ψ[y] auxiliary classes, with BatchNorm's running averages.
  x_test, y_test = data[2], data[3]
  logits, _ = learner.problem.g_apply(
    state.theta2, state.model_state2, x_test, False
  )
  probs = maxl_jax.losses.mask_softmax(logits, y_test, learner.problem.mask)
  chosen = np.asarray(jax.numpy.argmax(probs, -1))
  offsets = maxl_jax.hierarchy.offsets(psi)
  used = []
  for c, (first, size) in enumerate(zip(offsets, psi, strict=True)):
    mine = chosen[y_test == c]
    used.append(int(np.sum(np.isin(np.arange(first, first + size), mine))))
    print(f'digit {c}: psi {size}, g uses {used[-1]} of them')
  print(f'maxl test accuracy: {100 * accuracy:.2f}%')
  return {'psi': psi, 'used': used, 'accuracy': accuracy}


if __name__ == '__main__':
  main()
