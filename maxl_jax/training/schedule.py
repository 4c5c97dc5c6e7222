"""Which step runs at each global step: the paper's or the interleaved one.

single       θ1 steps only (no generator).
paper        each epoch: a pass of θ1 steps, then a pass of θ2 steps.
interleaved  a θ1 step on every batch; after every `meta_every` θ1 steps
             the step is a combined one (θ1 and θ2 from one lookahead).
"""

import dataclasses

from maxl_jax.errors import UsageError

NAMES = ('paper', 'interleaved')  # The choices of `config.maxl.schedule`.
PRIMARY, META, INTERLEAVED = 'primary', 'meta', 'interleaved'


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The step kinds of a run.

  Attributes:
    name: 'single' | 'paper' | 'interleaved'.
    steps_per_epoch: θ1 steps per epoch (one pass over the batches).
    meta_every: interleaved: a θ2 update after every `meta_every` θ1 steps.
  """

  name: str
  steps_per_epoch: int
  meta_every: int = 1

  def __post_init__(self):
    if self.name not in ('single', *NAMES):
      raise UsageError(
        f'config.maxl.schedule = {self.name!r}; choose one of {list(NAMES)}.'
      )
    if self.meta_every < 1 or (self.meta_every > 1 and self.name == 'paper'):
      raise UsageError(
        f'config.maxl.meta_every = {self.meta_every}: use 1, or a value '
        '>= 1 with --config.maxl.schedule=interleaved.'
      )

  @property
  def epoch_steps(self) -> int:
    """Global steps per epoch: the paper schedule adds a θ2 pass."""
    if self.name == 'paper':
      return 2 * self.steps_per_epoch
    return self.steps_per_epoch

  def kind(self, step: int) -> str:
    """PRIMARY, META or INTERLEAVED for 0-based global step `step`."""
    if self.name == 'single':
      return PRIMARY
    if self.name == 'paper':
      in_epoch = step % self.epoch_steps
      return PRIMARY if in_epoch < self.steps_per_epoch else META
    return INTERLEAVED if (step + 1) % self.meta_every == 0 else PRIMARY

  def meta_index(self, step: int) -> int:
    """How many θ2 updates come before global step `step` (a θ2 step)."""
    if self.name == 'paper':
      epoch, in_epoch = divmod(step, self.epoch_steps)
      return epoch * self.steps_per_epoch + in_epoch - self.steps_per_epoch
    return (step + 1) // self.meta_every - 1

  def kinds(self) -> tuple[str, ...]:
    """The step kinds this schedule uses."""
    if self.name == 'single':
      return (PRIMARY,)
    if self.name == 'paper':
      return (PRIMARY, META)
    return (PRIMARY, INTERLEAVED) if self.meta_every > 1 else (INTERLEAVED,)
