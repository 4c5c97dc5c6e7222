"""Where auxiliary labels come from: one interface for every method.

The θ1 step asks its label source for targets `[N, K]` (or None for the
Single baseline) and never knows which source it is using:

  single  no auxiliary task.
  maxl    the label-generation network g(θ2) with the mask softmax; the only
          source whose parameters are learnt (by meta steps).
  random  a fixed random auxiliary class per image inside its class's range,
          for a random well-balanced psi (DESIGN §4).
  human   the dataset's own finer labels (CIFAR-100 levels).
  kmeans  see `kmeans_source.py`.

A source's state (e.g. centroids) lives in `MaxlState.label_state` so that
checkpoints hold it.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from maxl_jax import hierarchy
from maxl_jax.lookahead import MaxlProblem, generated_labels


@dataclasses.dataclass(frozen=True)
class LabelSource:
  """Base: no auxiliary task (the Single baseline).

  Attributes:
    psi: the hierarchy [P], or None without an auxiliary task.
    learns: True when θ2 exists and is trained by meta steps.
  """

  psi: np.ndarray | None = None
  learns: bool = False

  @property
  def num_aux(self) -> int:
    return 0 if self.psi is None else int(np.sum(self.psi))

  def init_state(self, train_iter) -> Any:
    """Initial `label_state` (a pytree of arrays) from the training data."""
    del train_iter
    return {}

  def targets(self, label_state, theta2, state2, batch):
    """Auxiliary targets [N, K] for `batch` (no gradient), or None."""
    del label_state, theta2, state2, batch
    return None

  def refresh(self, label_state, step: int, train_iter, rng) -> Any:
    """Host-side update between steps (K-Means re-clustering); default none."""
    del step, train_iter, rng
    return label_state


@dataclasses.dataclass(frozen=True)
class MaxlSource(LabelSource):
  """g(x, y; θ2): soft labels from the label-generation network."""

  problem: MaxlProblem | None = None
  learns: bool = True

  def targets(self, label_state, theta2, state2, batch):
    probs, _ = generated_labels(self.problem, theta2, state2, batch)
    return jax.lax.stop_gradient(probs)


def _one_hot(aux_class, num_aux):
  return jax.nn.one_hot(aux_class, num_aux, dtype=jnp.float32)


@dataclasses.dataclass(frozen=True)
class RandomSource(LabelSource):
  """A fixed random auxiliary class for each training image (one-hot).

  The class is a pure function of (seed, image index, primary label), so it
  follows the image through shuffling and augmentation, is the same in every
  epoch and needs no table (nothing to gather across hosts).
  """

  seed: int = 0

  def targets(self, label_state, theta2, state2, batch):
    psi = jnp.asarray(self.psi)
    offs = jnp.asarray(hierarchy.offsets(self.psi))
    key = jax.random.fold_in(jax.random.key(self.seed), 0x5A17)
    labels = batch['label']

    def draw(index, label):
      return jax.random.randint(
        jax.random.fold_in(key, index), (), 0, psi[label]
      )

    within = jax.vmap(draw)(batch['index'], labels)
    return _one_hot(offs[labels] + within, self.num_aux)


@dataclasses.dataclass(frozen=True)
class HumanSource(LabelSource):
  """The dataset's finer labels as auxiliary classes (CIFAR-100 levels).

  Attributes:
    aux_index: [num_fine] position of each finer class in psi order.
  """

  aux_index: np.ndarray | None = None

  def targets(self, label_state, theta2, state2, batch):
    aux_class = jnp.asarray(self.aux_index)[batch['aux_label']]
    return _one_hot(aux_class, self.num_aux)


def human_source(aux_to_primary: np.ndarray, num_primary: int) -> HumanSource:
  """psi and the class index from the finer level's parent map."""
  return HumanSource(
    psi=hierarchy.psi_from_label_map(aux_to_primary, num_primary),
    aux_index=hierarchy.child_to_aux_index(aux_to_primary),
  )


def masked_targets_ok(targets, labels, mask) -> jax.Array:
  """True when every target puts mass only inside its class's range."""
  outside = ~jnp.asarray(mask)[labels]
  return jnp.all(jnp.where(outside, targets, 0.0) == 0.0)
