"""The loop's cadence: its settings (`LoopOptions`, read from the config
once) and when an epoch's end evaluates and saves, a step reports and
saves (DESIGN §7). Pure functions of the step counts, so that a resumed
run does what the uninterrupted one did at every step."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class LoopOptions:
  """The loop's own settings (from `config.train`, `.checkpoint`, `.log`)."""

  epochs: int
  eval_every_epochs: int
  checkpoint_every_steps: int
  checkpoint_every_epochs: int
  keep_checkpoints: int
  progress_every_steps: int
  drift_images: int = 1000
  tensorboard: bool = True
  meta_signal_every: int = 0  # θ2 steps; 0: what trains g is not logged.

  @classmethod
  def from_config(cls, config) -> 'LoopOptions':
    return cls(
      epochs=config.train.epochs,
      eval_every_epochs=config.train.eval_every_epochs,
      checkpoint_every_steps=config.checkpoint.every_steps,
      checkpoint_every_epochs=config.checkpoint.every_epochs,
      keep_checkpoints=config.checkpoint.keep,
      progress_every_steps=config.log.progress_every_steps,
      drift_images=config.log.drift_images,
      tensorboard=config.log.tensorboard,
      meta_signal_every=config.log.meta_signal_every,
    )


def evaluates(options: LoopOptions, epoch: int, step: int, total: int):
  """Whether the end of `epoch` (0-based) evaluates the test set."""
  return (epoch + 1) % options.eval_every_epochs == 0 or step == total


def checkpoints(options: LoopOptions, epoch: int, step: int, total: int):
  """Whether the end of `epoch` (0-based) saves a checkpoint."""
  return (
    (epoch + 1) % options.checkpoint_every_epochs == 0
    or step % options.checkpoint_every_steps == 0
    or step == total
  )


def reports(options: LoopOptions, step: int) -> bool:
  """Whether global step `step` (1-based, done) logs its progress."""
  return step % options.progress_every_steps == 0


def saves_within_epoch(options: LoopOptions, step: int) -> bool:
  """Whether global step `step` (1-based, not an epoch's end) saves."""
  return step % options.checkpoint_every_steps == 0
