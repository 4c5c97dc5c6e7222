"""The training state of a method: what trains, and nothing else.

`MaxlState` holds θ1 and θ2 with their model states (BatchNorm statistics)
and optimiser states, the step counts and the label source's state;
`CombinerState` the same for AuxiLearn's loss combiner, whose second
parameters are the combiner φ. Steps map a state and a batch to a new state
and that step's metrics (`steps.py`); summing metrics over an epoch and the
non-finite guard belong to the training loop (`training/carry.py`).
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from maxl_jax.networks import functional


def _zero():
  return jnp.zeros((), jnp.int32)


@flax.struct.dataclass
class MaxlState:
  """MAXL's state, or a baseline's (θ2 = {}): a pytree."""

  step1: jnp.ndarray  # θ1 updates: drives θ1's schedule and α.
  step2: jnp.ndarray  # θ2 updates.
  theta1: Any
  model_state1: Any
  opt_state1: optax.OptState  # State of θ1's optimiser.
  theta2: Any
  model_state2: Any
  opt_state2: optax.OptState  # State of θ2's optimiser.
  label_state: Any  # The label source's (e.g. K-Means centroids).


@flax.struct.dataclass
class CombinerState:
  """AuxiLearn's loss combiner: the multi-head network θ1 and φ."""

  step1: jnp.ndarray  # θ1 updates.
  step2: jnp.ndarray  # φ updates.
  theta1: Any
  model_state1: Any
  opt_state1: optax.OptState
  phi: Any
  opt_state_phi: optax.OptState


def initial_state(
  theta1, model_state1, theta2, model_state2, tx1, tx2, label_state
) -> MaxlState:
  """Step 0 from given parameters and model states (θ2 may be {})."""
  return MaxlState(
    step1=_zero(),
    step2=_zero(),
    theta1=theta1,
    model_state1=model_state1,
    opt_state1=tx1.init(theta1),
    theta2=theta2,
    model_state2=model_state2,
    opt_state2=tx2.init(theta2),
    label_state=label_state,
  )


def initial_combiner_state(theta1, model_state1, phi, tx1, tx2):
  """Step 0 of a loss-combiner run."""
  return CombinerState(
    step1=_zero(),
    step2=_zero(),
    theta1=theta1,
    model_state1=model_state1,
    opt_state1=tx1.init(theta1),
    phi=phi,
    opt_state_phi=tx2.init(phi),
  )


def create_state(rng, f, g, tx1, tx2, image_shape, label_state) -> MaxlState:
  """Initial state: θ1 from `f`, θ2 from `g` (None: no generator), Linen
  or NNX modules (`networks.functional`); `rng` is split in two, one for
  each (an NNX module brings its own weights)."""
  rng1, rng2 = jax.random.split(rng)
  theta1, model_state1 = functional.init_variables(f, rng1, image_shape)
  theta2, model_state2 = {}, {}
  if g is not None:
    theta2, model_state2 = functional.init_variables(g, rng2, image_shape)
  return initial_state(
    theta1, model_state1, theta2, model_state2, tx1, tx2, label_state
  )
