"""What the loop needs of a run (`Run`), the kinds of run (`KINDS`), and
the checks that every kind shares.

`config.run` names the kind: 'maxl' (MAXL or a baseline of
`config.method`, `maxl_run.MaxlRun`) or 'combiner' (AuxiLearn's loss
combiner on given tasks, `combiner_run.CombinerRun`). `build_run(config,
info)` checks the config (the loop's fields, then the kind's own) and
builds the kind's run from the config and the dataset's description alone:
no data, nothing trained, no TensorFlow. `loop` trains any `Run`,
`restore` rebuilds one from its workdir.
"""

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import optax

from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError
from maxl_jax.networks import layers, models, trunks
from maxl_jax.state import CombinerState, MaxlState
from maxl_jax.training import combiner_run, maxl_run
from maxl_jax.training.config_fields import check_fields
from maxl_jax.training.schedule import Schedule


@runtime_checkable
class Run(Protocol):
  """The static pieces of one run, as the loop uses them.

  Attributes:
    method: the name in result.json ('maxl', 'single', ..., 'combiner').
    seed: the seed of the networks' initialisation.
    info: the dataset's description.
    schedule: the step kind of every global step.
    lr_schedule: θ1's learning rate at θ1 step t (logged as `lr`).
    on_nonfinite: 'stop' | 'skip_step'.
  """

  method: str
  seed: int
  info: DatasetInfo
  schedule: Schedule
  lr_schedule: optax.Schedule
  on_nonfinite: str

  @property
  def held_out(self) -> bool:
    """Whether steps other than 'primary' take a held-out batch too."""

  def scoring(self) -> dict:
    """`loop.evaluate`'s keyword arguments for the label statistics."""

  def init_label_state(self, images) -> Any:
    """The label source's state at step 0 (`labels.TrainingImages`)."""

  def refresh(self, state, step: int, images):
    """The state after global step `step`, its label source refreshed
    (K-Means re-clusters when due); `state` itself where none refreshes."""

  def digested(self, state) -> tuple:
    """The parameters result.json's `params_sha256` digests, in order."""

  def create_state(self, label_state) -> MaxlState | CombinerState:
    """Step 0's state from the seed and the given label state."""

  def state_shapes(self) -> MaxlState | CombinerState:
    """Shapes and dtypes of the state (no data, nothing computed)."""

  def zero_sums(self) -> dict:
    """The loop's metric sums at the start of an epoch (`carry`)."""

  def jit_steps(self, mesh) -> dict:
    """A jitted update per schedule kind (`(carry, *batches) -> carry`;
    optionally `<kind>+signal`, with what trains g), 'eval', optionally
    'probe'."""

  def probe_batch(self, data) -> dict:
    """The fixed batch of the 'probe' step, each epoch."""

  def drift_step(self) -> Callable | None:
    """`(states, batch) -> sums` of the label-drift probe; None: no g."""

  def result_fields(self, final: dict) -> dict:
    """The run's own fields of result.json, from the last evaluation."""


class Kind(NamedTuple):
  """A kind of run: its config checks and its builder (after the checks)."""

  check: Callable[[Any], None]
  build: Callable[[Any, DatasetInfo], Run]


KINDS = {
  'maxl': Kind(maxl_run.check_config, maxl_run.build),
  'combiner': Kind(combiner_run.check_config, combiner_run.build),
}

# The loop's and the networks' fields, checked for every kind of run.
LOOP_CHOICES = {
  'train.on_nonfinite': ('stop', 'skip_step'),
  'model.name': tuple(trunks.TRUNKS),
  'model.conv_impl': layers.CONV_IMPLS,
  'model.compute_dtype': tuple(models.COMPUTE_DTYPES),
  'model.remat': tuple(trunks.REMAT_MODES),
}
LOOP_POSITIVE = (
  'train.epochs',
  'checkpoint.keep',
  'checkpoint.every_steps',
  'checkpoint.every_epochs',
  'log.progress_every_steps',
  'train.eval_every_epochs',
)


def kind_of(config) -> str:
  """`config.run`. A config.json from before the field: 'combiner' when it
  has a combiner group, else 'maxl'."""
  kind = config.run
  if kind not in KINDS:
    raise UsageError(
      f'config.run = {kind!r} is not one of {list(KINDS)}; set '
      '--config.run=<one of them>.'
    )
  return kind


def validate(config):
  """Raises UsageError for a bad config, before any data is loaded."""
  check_fields(config, LOOP_CHOICES, LOOP_POSITIVE)
  KINDS[kind_of(config)].check(config)


def build_run(config, info: DatasetInfo) -> Run:
  """Validates `config` and builds its run for the dataset `info`."""
  validate(config)
  return KINDS[kind_of(config)].build(config, info)
