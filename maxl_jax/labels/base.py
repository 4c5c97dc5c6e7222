"""The label-source interface: where the θ1 step gets its auxiliary targets.

The θ1 step asks its label source for targets `[N, K]` (or None for the
Single baseline) and never knows which source it is using. A source's state
(e.g. K-Means centroids) lives in `MaxlState.label_state`, so checkpoints
hold it; `abstract_state` gives its shapes without any data, so a run can be
restored without recomputing it.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LabelState = Any  # A pytree of arrays.


@dataclasses.dataclass(frozen=True)
class TrainingImages:
  """This process's share of the training set, as stored (not augmented).

  Attributes:
    images: uint8 [n, 32, 32, C].
    labels: int [n] primary classes.
    indices: int [n] global example indices (`batch['index']`).
  """

  images: np.ndarray
  labels: np.ndarray
  indices: np.ndarray


@dataclasses.dataclass(frozen=True)
class LabelSource:
  """Base: no auxiliary task (the Single baseline).

  Attributes:
    psi: the hierarchy [P], or None without an auxiliary task.
    learns: True when θ2 exists and is trained by meta steps.
    generates: True when the targets come from a label generator g(θ2)
      (maxl and its controls; `frozen` generates but does not learn).
  """

  psi: np.ndarray | None = None
  learns: bool = False
  generates: bool = False

  @property
  def num_aux(self) -> int:
    """K, the number of auxiliary classes (0 without an auxiliary task)."""
    return 0 if self.psi is None else int(np.sum(self.psi))

  def abstract_state(self) -> LabelState:
    """Shapes and dtypes of `init_state`'s result (no data needed)."""
    return {}

  def init_state(self, images: TrainingImages) -> LabelState:
    """The initial `label_state` from the training images."""
    del images
    return {}

  def targets(self, label_state, theta2, model_state2, batch, *, problem):
    """Auxiliary targets [N, K] for `batch` (no gradient), or None."""
    del label_state, theta2, model_state2, batch, problem
    return None

  def test_targets(self, label_state, theta2, model_state2, batch, *, problem):
    """Targets [N, K] for a test batch, to score what the labels know.

    Deterministic per image (no batch statistics) and unweighted;
    `batch['index']` is the position in the test split. Default: `targets`.
    """
    return self.targets(
      label_state, theta2, model_state2, batch, problem=problem
    )

  def refresh(self, label_state, step: int, images: TrainingImages):
    """Host-side update after 0-based step `step`; default: none."""
    del step, images
    return label_state


def one_hot(aux_class, num_aux):
  """[N] auxiliary classes -> float32 [N, K] one-hot targets."""
  return jax.nn.one_hot(aux_class, num_aux, dtype=jnp.float32)


def masked_targets_ok(targets, labels, mask) -> jax.Array:
  """True when every target puts mass only inside its class's range."""
  outside = ~jnp.asarray(mask)[labels]
  return jnp.all(jnp.where(outside, targets, 0.0) == 0.0)
