"""Many seeds as one program: `jax.vmap` over a Learner's init and updates.

A result on one seed is an anecdote. Here N seeds of MAXL on your own
model (that of `own_model.py`: a two-conv net with BatchNorm) train
together: `jax.vmap(learner.init)` makes N states stacked along a leading
axis, and `jax.jit(jax.vmap(update))` advances all of them in one call,
each seed on its own initialisation and its own order of the data. It
prints each seed's test accuracy, their mean and a 95% confidence
interval (Student's t over the seeds). Seed s computes what a run of seed
s alone computes (the test checks it), so the seeds stay independent.

When it pays. On an accelerator a small network leaves most of the device
idle, so N seeds in one program should cost about what one costs (not
measured here). On a CPU it need not pay at all: on a 2-core CPU, 8
seeds of a half-width ConvNet-4 as one vmapped program gave 0.85x the
throughput of 8 separate runs one after the other, and 16 seeds 0.68x,
because the seeds' convolutions are memory-bound and stacking them only
makes the working set larger. There, run seeds as separate processes
(`python -m experiments.sweep`) instead.

Run it in full (8 seeds; about a minute on a 2-core CPU):

  python examples/many_seeds.py

Tiny (what the tests run): `python examples/many_seeds.py --seeds=3
--epochs=1 --steps=2`. The model, data and schedule (each epoch a θ1
pass, then a θ2 pass) are those of `own_model.py` (run from the
repository root, or copy both files).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from own_model import Generator, TwoHeads, load
from scipy import stats

import maxl_jax


def learner(psi, lr=0.05):
  """MAXL on the two-conv net of own_model.py."""
  k = sum(psi)
  return maxl_jax.maxl(
    TwoHeads(len(psi), k),
    Generator(k),
    psi,
    optax.sgd(lr, momentum=0.9),
    optax.adam(1e-3),
    alpha=lr,  # The lookahead's step: θ1's learning rate.
  )


def train(learner, data, seeds, epochs, steps, batch_size=64):
  """All `seeds` in one program: returns (test accuracies [S], states).

  The states are stacked: every leaf has a leading axis of len(seeds).
  """
  x_train, y_train, x_test, y_test = data
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
  states = jax.vmap(lambda key: learner.init(key, x_train.shape[1:]))(keys)
  # One compiled program advances every seed; the batches carry the seed
  # axis too ([S, B, ...]), so each seed sees its own order of the data.
  theta1_update = jax.jit(jax.vmap(learner.theta1_update), donate_argnums=0)
  theta2_update = jax.jit(jax.vmap(learner.theta2_update), donate_argnums=0)
  per_epoch = len(x_train) // batch_size
  steps = min(steps, per_epoch) if steps else per_epoch
  rngs = [np.random.default_rng(seed) for seed in seeds]
  for epoch in range(epochs):
    orders = [
      rng.permutation(len(x_train))[: steps * batch_size] for rng in rngs
    ]
    ids = np.stack(orders).reshape(len(seeds), steps, batch_size)
    batches = [
      {'image': x_train[ids[:, i]], 'label': y_train[ids[:, i]]}
      for i in range(steps)
    ]
    for batch in batches:  # θ1 pass, every seed at once.
      states, m = theta1_update(states, batch)
    for batch in batches:  # θ2 pass: each g by its own meta-gradient.
      states, _ = theta2_update(states, batch)
    losses = ' '.join(f'{v:.3f}' for v in np.asarray(m['loss_pri']))
    print(f'  epoch {epoch + 1}: loss_pri per seed {losses}')
  # The test set is shared: in_axes None broadcasts it to every seed.
  evaluate = jax.jit(jax.vmap(learner.evaluate, in_axes=(0, None)))
  sums = evaluate(states, {'image': x_test, 'label': y_test})
  return np.asarray(sums['correct'] / sums['count']), states


def mean_and_ci(values, level=0.95):
  """(mean, half-width of its `level` confidence interval): Student's t."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return float(values.mean()), float('nan')
  sem = values.std(ddof=1) / np.sqrt(len(values))
  return float(values.mean()), float(
    stats.t.ppf(0.5 + level / 2, len(values) - 1) * sem
  )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--seeds', type=int, default=8)
  parser.add_argument('--epochs', type=int, default=15)
  parser.add_argument('--steps', type=int, default=0, help='0 = all')
  parser.add_argument('--psi', type=int, default=3)
  args = parser.parse_args(argv)
  seeds = list(range(args.seeds))
  accuracies, states = train(
    learner([args.psi] * 10), load(), seeds, args.epochs, args.steps
  )
  for seed, accuracy in zip(seeds, accuracies, strict=True):
    print(f'seed {seed}: test accuracy {100 * accuracy:.2f}%')
  mean, ci = mean_and_ci(accuracies)
  print(
    f'mean test accuracy over {len(seeds)} seeds: {100 * mean:.2f}% '
    f'± {100 * ci:.2f} (95% CI)'
  )
  return {
    'accuracies': accuracies.tolist(),
    'mean': mean,
    'ci95': ci,
    'states': states,  # Stacked: a leading axis of len(seeds).
  }


if __name__ == '__main__':
  main()
