"""soft_human: the hierarchy's fine labels smoothed towards uniform.

`(1 - ε) onehot + ε / psi[y]` over the class's auxiliary classes (ε =
config.baseline.soft_human_eps): the true content at about the softness
of learnt labels, so that content and hardness can be told apart
(DESIGN §6). Registered in `labels.SOURCES`.
"""

import dataclasses

import numpy as np

from maxl_jax.errors import UsageError
from maxl_jax.labels.fixed import HumanSource, human_source, uniform_rows


@dataclasses.dataclass(frozen=True)
class SoftHumanSource(HumanSource):
  """`HumanSource`'s one-hot rows mixed with uniform rows by `smoothing`."""

  smoothing: float = 0.5

  def targets(self, label_state, theta2, model_state2, batch, *, problem):
    hard = super().targets(label_state, theta2, model_state2, batch,
                           problem=problem)  # fmt: skip
    return (1 - self.smoothing) * hard + self.smoothing * uniform_rows(
      self.psi, batch['label']
    )


def soft_human_source(
  fine_to_primary: np.ndarray, num_primary: int, smoothing: float
) -> SoftHumanSource:
  """psi and the class index from the fine classes' primary classes, as
  `human_source`, with ε = `smoothing`."""
  human = human_source(fine_to_primary, num_primary)
  return SoftHumanSource(
    psi=human.psi, aux_index=human.aux_index, smoothing=smoothing
  )


def build(info, psi, *, seed, psi_choice, soft_human_eps: float = 0.5):
  """The source for the dataset `info` (its fine labels; `psi`, `seed` and
  `psi_choice` unused). Raises UsageError unless ε is in (0, 1]."""
  del psi, seed, psi_choice  # The hierarchy's psi; nothing random.
  if not 0 < soft_human_eps <= 1:
    raise UsageError(
      f'config.baseline.soft_human_eps = {soft_human_eps!r} must be in '
      '(0, 1] for method=soft_human (0 is human; 1 is uniform).'
    )
  return soft_human_source(
    info.fine_to_primary, info.num_classes, soft_human_eps
  )
