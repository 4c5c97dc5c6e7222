"""AuxiLearn's loss combiner on given auxiliary tasks: the tasks and L_T.

A multi-task network (`networks.models.MultiHeadNet`: a primary head and one
head per given auxiliary task) trains θ on

  L_T(θ, φ) = mean_n CE_primary(n) + mean_n c(ℓ_n(θ); φ),

with ℓ_n [T] the example's auxiliary cross-entropies and c a
`loss_combiner.make_combiner` form (None: Single, no auxiliary loss). φ
learns by the implicit hypergradient of the primary cross-entropy on a
held-out batch (DESIGN §2e; the steps are in `steps.py`).

Given tasks (`TASKS`): 'coarse', Fashion-MNIST's 4 groups (helpful), and
'random', a fixed random class in 0..9 per training image (harmful).
CIFAR-100's coarser levels would be one more entry, a map of
`batch['fine_label']` (not implemented).
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from maxl_jax import loss_combiner

Batch = dict[str, jax.Array]
_RANDOM_SALT = 0xC0A5  # Apart from labels.fixed.RandomSource's stream.


@dataclasses.dataclass(frozen=True)
class AuxTask:
  """K_t classes; `labels(batch, seed) -> [N] int32` (jittable); datasets
  it is defined on (() = any)."""

  num_classes: int
  labels: Callable[[Batch, int], jax.Array]
  datasets: tuple[str, ...] = ()


# Fashion-MNIST class -> group: tops (T-shirt, pullover, coat, shirt) 0,
# trousers and dresses 1, footwear (sandal, sneaker, ankle boot) 2, bags 3.
FASHION_COARSE = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2], np.int32)


def random_labels(seed: int, index: jax.Array, num_classes: int = 10):
  """A fixed uniform class per image: [N] int32, a function of (seed, index).

  `index` is the image's position in the (low-data) training set, so the
  label follows the image through shuffling and is the same every epoch.
  """
  key = jax.random.fold_in(jax.random.key(seed), _RANDOM_SALT)
  keys = jax.vmap(jax.random.fold_in, (None, 0))(key, index)
  return jax.vmap(lambda k: jax.random.randint(k, (), 0, num_classes))(keys)


TASKS = {
  'coarse': AuxTask(
    4, lambda b, _: jnp.asarray(FASHION_COARSE)[b['label']], ('fashion_mnist',)
  ),
  'random': AuxTask(10, lambda b, seed: random_labels(seed, b['index'])),
}


@dataclasses.dataclass(frozen=True)
class CombinerProblem:
  """What the combiner's losses need: the network's apply function, the
  tasks by name, the combiner c (None: no auxiliary loss) and the seed."""

  # `networks.functional.make_apply` of a MultiHeadNet, Linen or NNX.
  apply: Callable[..., Any]
  tasks: dict[str, AuxTask]
  combine: Callable[..., jax.Array] | None
  seed: int


def task_losses(problem: CombinerProblem, theta, model_state, batch):
  """Training mode: (primary logits [N, P], primary CE [N], auxiliary CEs
  ℓ [N, T], new model state)."""
  (primary, aux), new_state = problem.apply(
    theta, model_state, batch['image'], True
  )
  ce = optax.softmax_cross_entropy_with_integer_labels
  ell = [
    ce(logits, task.labels(batch, problem.seed))
    for task, logits in zip(problem.tasks.values(), aux, strict=True)
  ]
  ell = jnp.stack(ell, -1) if ell else jnp.zeros((primary.shape[0], 0))
  return primary, ce(primary, batch['label']), ell, new_state


def combined_loss(problem: CombinerProblem, theta, phi, model_state, batch):
  """L_T(θ, φ) -> (scalar, (new model state, values)).

  Values: loss (L_T), loss_pri, loss_aux (the combined loss), loss_<task>
  (its mean CE) and accuracy (primary, on this batch).
  """
  logits, primary, ell, new_state = task_losses(
    problem, theta, model_state, batch
  )
  loss_pri, loss_aux = jnp.mean(primary), jnp.zeros(())
  if problem.combine is not None:
    loss_aux = loss_combiner.combined_aux_loss(problem.combine, phi, ell)
  values = {
    'loss': loss_pri + loss_aux,
    'loss_pri': loss_pri,
    'loss_aux': loss_aux,
    'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
  }
  values.update(
    {f'loss_{n}': ell[:, t].mean() for t, n in enumerate(problem.tasks)}
  )
  return loss_pri + loss_aux, (new_state, values)


def held_out_loss(problem: CombinerProblem, theta, model_state, batch):
  """L_A(θ): the mean primary CE (training mode) on a held-out batch."""
  _, primary, _, _ = task_losses(problem, theta, model_state, batch)
  return jnp.mean(primary)


def metric_names(problem: CombinerProblem) -> tuple[str, ...]:
  """The names of `combined_loss`'s values."""
  tasks = tuple(f'loss_{n}' for n in problem.tasks)
  return ('loss', 'loss_pri', 'loss_aux', 'accuracy', *tasks)


def batch_task_weights(
  problem: CombinerProblem, theta, model_state, phi, batch
):
  """{task: its `loss_combiner.task_weights` at this batch's losses}."""
  _, _, ell, _ = task_losses(problem, theta, model_state, batch)
  weights = loss_combiner.task_weights(problem.combine, phi, ell)
  return dict(zip(problem.tasks, weights, strict=True))
