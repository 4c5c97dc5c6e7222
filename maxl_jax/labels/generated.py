"""MAXL's label source: the label-generation network g(x, y; θ2)."""

import dataclasses

import jax

from maxl_jax import losses
from maxl_jax.labels.base import LabelSource
from maxl_jax.problem import generated_labels, split_generator_outputs


@dataclasses.dataclass(frozen=True)
class GeneratedSource(LabelSource):
  """Soft labels from g with the mask softmax; θ2 learns by meta steps.

  With per-example weights the targets are `w_n g_nk`, as in the lookahead.
  `learns=False` is the `frozen` control: g stays at its initialisation.
  """

  learns: bool = True
  generates: bool = True

  def targets(self, label_state, theta2, model_state2, batch, *, problem):
    labels, _ = generated_labels(problem, theta2, model_state2, batch)
    return jax.lax.stop_gradient(labels.targets)

  def test_targets(self, label_state, theta2, model_state2, batch, *, problem):
    """g's mask-softmax labels `g_nk` with BatchNorm's running averages."""
    outputs, _ = problem.g_apply(theta2, model_state2, batch['image'], False)
    logits, _ = split_generator_outputs(problem, outputs)  # No weights.
    return losses.mask_softmax(logits, batch['label'], problem.mask)


def build(info, psi, *, seed, psi_choice, learns: bool = True):
  """g's labels over `psi` (`learns=False`: the frozen control; the
  dataset, seed and psi_choice unused: g's θ2 comes from the run's seed)."""
  del info, seed, psi_choice
  return GeneratedSource(psi=psi, learns=learns)
