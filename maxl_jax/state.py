"""`MaxlState`: everything a run needs to continue, as one pytree.

θ1 and θ2 with their model states (BatchNorm statistics) and optimiser
states, the label source's state, the step counters, the running metric sums
of the current epoch and the non-finite guard. A checkpoint of this object
(plus the data iterator's position) resumes a run bitwise. A loss-combiner
run (`combine`) keeps its network in θ1 and the combiner φ in θ2.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from maxl_jax import step_metrics as metrics
from maxl_jax.networks import models


@flax.struct.dataclass
class MaxlState:
  """Training state (a pytree; functions and optimisers are not in it)."""

  step: jnp.ndarray  # Batches consumed since the start (both schedules).
  step1: jnp.ndarray  # θ1 updates: drives θ1's schedule and α.
  step2: jnp.ndarray  # θ2 updates.
  theta1: Any
  model_state1: Any
  opt_state1: optax.OptState  # State of θ1's optimiser (`Run.tx1`).
  theta2: Any
  model_state2: Any
  opt_state2: optax.OptState  # State of θ2's optimiser (`Run.tx2`).
  label_state: Any
  sums: dict[str, jnp.ndarray]  # `metrics.zero_sums` (MAXL's).
  guard: dict[str, Any]  # `metrics.zero_guard`.


def initial_state(
  theta1,
  model_state1,
  theta2,
  model_state2,
  tx1,
  tx2,
  label_state,
  num_aux: int,
  aux_weight: bool = False,
  sums: metrics.Sums | None = None,
) -> MaxlState:
  """Step 0 from given parameters and model states (θ2 may be {}).

  `aux_weight`: g outputs per-example weights (their metric is summed).
  `sums`: the metric sums, if not MAXL's (`metrics.zero_sums`).
  """
  zero = lambda: jnp.zeros((), jnp.int32)  # noqa: E731 - distinct buffers.
  return MaxlState(
    step=zero(),
    step1=zero(),
    step2=zero(),
    theta1=theta1,
    model_state1=model_state1,
    opt_state1=tx1.init(theta1),
    theta2=theta2,
    model_state2=model_state2,
    opt_state2=tx2.init(theta2),
    label_state=label_state,
    sums=metrics.zero_sums(num_aux, aux_weight) if sums is None else sums,
    guard=metrics.zero_guard(),
  )


def create_state(rng, f, g, tx1, tx2, image_shape, label_state):
  """Initial state: θ1 from `f`, θ2 from `g` (None: no generator)."""
  rng1, rng2 = jax.random.split(rng)
  theta1, model_state1 = models.init_variables(f, rng1, image_shape)
  if g is None:
    theta2, model_state2, num_aux = {}, {}, getattr(f, 'num_aux', 0)
  else:
    theta2, model_state2 = models.init_variables(g, rng2, image_shape)
    num_aux = g.num_aux
  aux_weight = getattr(g, 'example_weights', False)
  return initial_state(
    theta1,
    model_state1,
    theta2,
    model_state2,
    tx1,
    tx2,
    label_state,
    num_aux,
    aux_weight,
  )
