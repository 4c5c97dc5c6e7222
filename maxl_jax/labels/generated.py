"""MAXL's label source: the label-generation network g(x, y; θ2)."""

import dataclasses

import jax

from maxl_jax.labels.base import LabelSource
from maxl_jax.problem import generated_labels


@dataclasses.dataclass(frozen=True)
class GeneratedSource(LabelSource):
  """Soft labels from g with the mask softmax; θ2 learns by meta steps."""

  learns: bool = True

  def targets(self, label_state, theta2, state2, batch, *, problem):
    probs, _ = generated_labels(problem, theta2, state2, batch)
    return jax.lax.stop_gradient(probs)
