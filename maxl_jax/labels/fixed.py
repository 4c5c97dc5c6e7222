"""Label sources with fixed targets: Random, Human and Uniform.

random   a fixed random auxiliary class per image inside its class's range,
         for a random well-balanced psi (DESIGN §4).
human    the label hierarchy's hidden fine labels (config.data.hierarchy,
         e.g. CIFAR-100's levels or Fashion-MNIST's classes under pairs).
uniform  the uniform distribution over the psi[y] auxiliary classes of the
         primary label y: a label-smoothing-like task that learns nothing,
         the ablation that asks whether MAXL's generated labels beat
         fixed soft targets.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from maxl_jax import hierarchy
from maxl_jax.labels.base import LabelSource, one_hot


@dataclasses.dataclass(frozen=True)
class RandomSource(LabelSource):
  """A fixed random auxiliary class for each training image (one-hot).

  The class is a pure function of (seed, image index, primary label), so it
  follows the image through shuffling and augmentation, is the same in every
  epoch and needs no table (nothing to gather across hosts).
  """

  seed: int = 0

  def targets(self, label_state, theta2, model_state2, batch, *, problem):
    psi = jnp.asarray(self.psi)
    offs = jnp.asarray(hierarchy.offsets(self.psi))
    key = jax.random.fold_in(jax.random.key(self.seed), 0x5A17)
    labels = batch['label']

    def draw(index, label):
      return jax.random.randint(
        jax.random.fold_in(key, index), (), 0, psi[label]
      )

    within = jax.vmap(draw)(batch['index'], labels)
    return one_hot(offs[labels] + within, self.num_aux)


@dataclasses.dataclass(frozen=True)
class HumanSource(LabelSource):
  """The hierarchy's fine labels (`batch['fine_label']`) as auxiliary classes.

  Attributes:
    aux_index: [num_fine] position of each fine class in psi order.
  """

  aux_index: np.ndarray | None = None

  def targets(self, label_state, theta2, model_state2, batch, *, problem):
    aux_class = jnp.asarray(self.aux_index)[batch['fine_label']]
    return one_hot(aux_class, self.num_aux)


def human_source(fine_to_primary: np.ndarray, num_primary: int) -> HumanSource:
  """psi and the class index from the fine classes' primary classes."""
  return HumanSource(
    psi=hierarchy.psi_from_label_map(fine_to_primary, num_primary),
    aux_index=hierarchy.child_to_aux_index(fine_to_primary),
  )


def uniform_rows(psi, labels):
  """[N, K]: 1 / psi[y] on the psi[y] auxiliary classes of each label y."""
  mask = jnp.asarray(hierarchy.class_mask(psi), jnp.float32)
  rows = mask[labels]
  return rows / jnp.sum(rows, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class UniformSource(LabelSource):
  """Uniform soft targets over the primary class's psi[y] auxiliary classes."""

  def targets(self, label_state, theta2, model_state2, batch, *, problem):
    return uniform_rows(self.psi, batch['label'])


def build_random(info, psi, *, seed, psi_choice, random_aux_classes: int = 0):
  """Random labels inside `psi`'s ranges; with psi_choice 'balanced' a
  random balanced psi of `random_aux_classes` classes in all (0: psi's)."""
  if psi_choice == 'balanced':
    total = random_aux_classes or int(psi.sum())
    rng = np.random.default_rng(seed)
    psi = hierarchy.random_psi(info.num_classes, total, rng)
  return RandomSource(psi=psi, seed=seed)


def build_human(info, psi, *, seed, psi_choice):
  """The dataset's fine labels (its hierarchy's psi; the rest unused)."""
  del psi, seed, psi_choice
  return human_source(info.fine_to_primary, info.num_classes)


def build_uniform(info, psi, *, seed, psi_choice):
  """Uniform rows over `psi` (the rest unused)."""
  del info, seed, psi_choice
  return UniformSource(psi=psi)
