"""A Linen or an NNX network as the pure functions the core calls.

The core reaches a network only through `(params, model_state)` pytrees
and `apply(params, model_state, images, train) -> (outputs, model_state)`
(`problem.py`). `init_variables` and `make_apply` give these for either
kind of Flax module, called as `module(images, train)`:

- a Linen `nn.Module`: `models.init_variables` and `models.make_apply`,
  unchanged;
- an NNX `nnx.Module`: `nnx.split` into a graph definition, its
  `nnx.Param`s (params) and the rest (model state); `apply` merges them
  into a fresh module inside the traced function, calls it and splits
  what the call changed back out, so the step stays a pure function.

An NNX model state is a dict of plain nested dicts, one per kind of
variable it has: 'batch_stats' (`nnx.BatchStat`: BatchNorm's running
averages, as Linen's collection of that name), 'rngs' (`nnx.RngState`:
the keys and counts of the module's `nnx.Rngs` streams, e.g. Dropout's)
and 'other' (any other variable). As with Linen, a train=True call
returns the updated model state (BatchNorm's averages moved by the
batch's statistics) and a train=False call returns it as given.

Dropout and other randomness of an NNX module: its `nnx.Rngs` streams are
part of the model state, so each train=True forward draws from
(key, count) and returns the count advanced. Every step is then a pure,
reproducible function of the state; forwards from the same model state
(e.g. the meta step's lookahead, whose model state the core discards,
DESIGN §1) draw the same masks. A Linen module gets no rngs, as before.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from maxl_jax.errors import UsageError
from maxl_jax.networks import models

# The NNX model state's groups, in the order `nnx.split` takes them.
_GROUPS = (
  ('batch_stats', nnx.BatchStat),
  ('rngs', nnx.RngState),
  ('other', ...),
)


def is_nnx(module: Any) -> bool:
  """Whether `module` is an NNX module (else it is taken to be Linen)."""
  return isinstance(module, nnx.Module)


def _pure(state: nnx.State) -> dict:
  """A State as nested dicts of arrays (the trees optax and the core see)."""
  return nnx.to_pure_dict(state)


def _split(module: nnx.Module) -> tuple[nnx.GraphDef, dict, dict]:
  """(graph definition, params, model state with its non-empty groups)."""
  graphdef, params, *rest = nnx.split(
    module, nnx.Param, *(kind for _, kind in _GROUPS)
  )
  model_state = {
    name: _pure(state)
    for (name, _), state in zip(_GROUPS, rest, strict=True)
    if state
  }
  return graphdef, _pure(params), model_state


def init_variables(
  module: nn.Module | nnx.Module, rng: jax.Array, image_shape: Sequence[int]
) -> tuple[models.Params, models.ModelState]:
  """(params, model_state) of a Linen or an NNX module.

  A Linen module is initialised on a zero batch with `rng`
  (`models.init_variables`). An NNX module was initialised when it was
  built: this returns copies of its current weights and variables, and
  `rng` and `image_shape` are not used. Copies, so that donating the
  state to a jitted update leaves the module's own arrays alive.
  """
  if not is_nnx(module):
    return models.init_variables(module, rng, image_shape)
  _, params, model_state = _split(module)
  return jax.tree.map(lambda a: a.copy(), (params, model_state))


def make_apply(module: nn.Module | nnx.Module) -> models.ApplyFn:
  """`apply(params, model_state, images, train) -> (outputs, model_state)`
  of a Linen or an NNX module (see the module docstring). `train` must be a
  Python bool (static under jit)."""
  if not is_nnx(module):
    return models.make_apply(module)
  graphdef, _, _ = _split(module)

  def apply(params, model_state, images, train):
    net = nnx.merge(graphdef, params, *model_state.values())
    outputs = net(images, train)
    if not train:
      return outputs, model_state
    _, _, new_state = _split(net)
    if jax.tree.structure(new_state) != jax.tree.structure(model_state):
      raise UsageError(
        'the NNX module created or removed variables when called; '
        'create every variable in its __init__.'
      )
    return outputs, new_state

  return apply
