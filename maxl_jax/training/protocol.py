"""What the loop needs of a run (`Run`) and of its state (`State`).

The floor under the kinds of run: `maxl_run.MaxlRun` and
`combiner_run.CombinerRun` implement `Run`, `contract` builds one from a
config (its `KINDS`), `loop` trains any. This module imports neither the
runs nor the networks, so that any of them can name it.
"""

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax
import optax

from maxl_jax.data.info import DatasetInfo
from maxl_jax.training.schedule import Schedule


@runtime_checkable
class State(Protocol):
  """What the loop reads of every kind's state (a pytree).

  Attributes:
    step1: θ1's update count (θ1's learning rate at it is logged as `lr`).
    theta1: the multi-task network's parameters (their overview is logged).
  """

  step1: jax.Array
  theta1: Any


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

  def create_state(self, label_state) -> State:
    """Step 0's state from the seed and the given label state."""

  def state_shapes(self) -> State:
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
