"""MAXL's networks on a trunk: heads, f and g, builders and apply adapters.

A trunk (`trunks.py`: `ConvNet4`, `VGG16`, `ResNet32`, or any user module
with the same call signature) maps images [N, H, W, C] to features [N, D].
`MultiTaskNet` puts a primary and an auxiliary head on a trunk,
`LabelGenerator` one auxiliary head (plain logits: the mask softmax lives in
`losses.py`), `MultiHeadNet` (the loss combiner's) a primary head and one
head per given auxiliary task. The trunk is a module attribute, so its
parameters are the subtree 'trunk' of the network's params. `build_*` make
them from a `ModelSpec`.

Initialisation as the original code: Xavier-uniform dense kernels, zero
biases (the trunks': `trunks.py`). Parameters are float32; `dtype` (the
compute dtype) sets activations and matmuls; logits are returned in the
wider of float32 and the compute dtype.

Other code calls networks only through `make_apply(module)`, with params and
model state (non-param collections such as 'batch_stats') as plain pytrees.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from maxl_jax.errors import UsageError
from maxl_jax.networks import layers, trunks
from maxl_jax.networks.trunks import Dtype

Params = Any
ModelState = dict[str, Any]  # Non-param collections, e.g. {'batch_stats'}.

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros
# float64 needs JAX's x64 mode (JAX_ENABLE_X64=1); its parameters are float64
# too (`init_variables`): exact references, e.g. the data-parallel tests.
COMPUTE_DTYPES = {
  'float32': jnp.float32,
  'bfloat16': jnp.bfloat16,
  'float64': jnp.float64,
}


class Head(nn.Module):
  """Dense(hidden) + ReLU + Dense(num_out), or one Dense if hidden == 0."""

  num_out: int
  hidden: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    """[N, D] features -> [N, num_out] logits, at least float32."""
    dense = functools.partial(
      nn.Dense, dtype=self.dtype, kernel_init=_xavier, bias_init=_zeros
    )
    if self.hidden:
      h = nn.relu(dense(self.hidden)(h))
    logits = dense(self.num_out)(h)
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


class MultiTaskNet(nn.Module):
  """f(theta1): a shared trunk with a primary and an auxiliary head.

  Attributes:
    trunk: any module with `trunk(x, train) -> [N, D]`; its params are the
      subtree 'trunk'.
    num_primary: P, primary classes.
    num_aux: K, auxiliary classes; 0 makes a single-task network.
    head_hidden: hidden units of each head (0 = one Dense layer).
    dtype: compute dtype of the heads.
  """

  trunk: nn.Module
  num_primary: int
  num_aux: int
  head_hidden: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, x: jax.Array, train: bool
  ) -> tuple[jax.Array, jax.Array | None]:
    """Returns (primary [N, P], aux [N, K]) logits; aux is None if K == 0."""
    h = self.trunk(x, train)
    primary = Head(
      self.num_primary, self.head_hidden, self.dtype, name='primary_head'
    )(h)
    if not self.num_aux:
      return primary, None
    aux = Head(self.num_aux, self.head_hidden, self.dtype, name='aux_head')(h)
    return primary, aux


class MultiHeadNet(nn.Module):
  """A trunk, a primary head and one head per given auxiliary task (the
  loss combiner's network, DESIGN §2e).

  Attributes:
    trunk: any module with `trunk(x, train) -> [N, D]`.
    num_primary: P, primary classes.
    aux_classes: K_t, the classes of each auxiliary task (() = none).
    head_hidden: hidden units of each head (0 = one Dense layer).
    dtype: compute dtype of the heads.
  """

  trunk: nn.Module
  num_primary: int
  aux_classes: tuple[int, ...]
  head_hidden: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, x: jax.Array, train: bool
  ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Returns (primary [N, P], ([N, K_t] for each task)) logits."""
    h = self.trunk(x, train)
    primary = Head(
      self.num_primary, self.head_hidden, self.dtype, name='primary_head'
    )(h)
    aux = tuple(
      Head(k, self.head_hidden, self.dtype, name=f'aux_head_{t}')(h)
      for t, k in enumerate(self.aux_classes)
    )
    return primary, aux


class LabelGenerator(nn.Module):
  """g(theta2): a trunk with one K-way head; unmasked logits [N, K].

  With `example_weights`, one more output unit, `weight_head` (a Dense(1) on
  the trunk's features beside the label head), gives each example the logit
  of its auxiliary-loss weight `w_n = sigmoid(.)`. Its kernel starts at zero
  and its bias at `logit(init_weight)`, so at initialisation every w_n is
  `init_weight` exactly and the K label logits are MAXL's own (the label
  head and its initialisation are unchanged). 0.9 rather than 0.5: the run
  starts close to MAXL (L_aux and the labels' meta-gradient, both scaled
  by w, at 90%), so what the weights change is what the meta-gradient
  learns, not a halved auxiliary task; the sigmoid's slope there,
  w(1 - w) = 0.09, still lets it learn.

  Attributes:
    trunk: any module with `trunk(x, train) -> [N, D]`.
    num_aux: K, auxiliary classes.
    head_hidden: hidden units of the head (0 = one Dense layer).
    dtype: compute dtype of the head.
    example_weights: also output per-example weight logits [N].
    init_weight: every w_n at initialisation, in (0, 1).
  """

  trunk: nn.Module
  num_aux: int
  head_hidden: int = 0
  dtype: Dtype = jnp.float32
  example_weights: bool = False
  init_weight: float = 0.9

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> Any:
    """[N, H, W, C] images -> [N, K] logits (mask softmax: `losses.py`).

    With `example_weights`: (logits [N, K], weight logits [N]).
    """
    h = self.trunk(x, train)
    head = Head(self.num_aux, self.head_hidden, self.dtype, name='aux_head')
    logits = head(h)
    if not self.example_weights:
      return logits
    bias = math.log(self.init_weight / (1.0 - self.init_weight))
    weight_logits = nn.Dense(
      1,
      dtype=self.dtype,
      kernel_init=_zeros,
      bias_init=nn.initializers.constant(bias),
      name='weight_head',
    )(h)[:, 0]
    return logits, weight_logits.astype(logits.dtype)


def _choice(table: dict[str, Any], key: str, what: str) -> Any:
  if key not in table:
    raise UsageError(
      f'unknown {what} {key!r}; valid choices: {", ".join(table)}.'
    )
  return table[key]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The architecture of a run's networks (f, g, or the combiner's).

  Attributes:
    name: a trunk of `trunks.TRUNKS` (convnet4, vgg16, resnet32).
    head_hidden: hidden units of each head's FC layer (0: one Dense layer).
    conv_impl: one of `layers.CONV_IMPLS`.
    compute_dtype: one of `COMPUTE_DTYPES` (float64 needs JAX's x64 mode).
    widths: the trunk's stage widths; () = the architecture's own.
    remat: one of `trunks.REMAT_MODES`.
  """

  name: str
  head_hidden: int = 0
  conv_impl: str = 'auto'
  compute_dtype: str = 'float32'
  widths: Sequence[int] = ()
  remat: str = 'none'

  def dtype(self) -> Dtype:
    """The compute dtype; float64 only under x64."""
    dtype = _choice(COMPUTE_DTYPES, self.compute_dtype, 'compute dtype')
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
      raise UsageError(
        "compute dtype 'float64' needs JAX's 64-bit mode: set "
        'JAX_ENABLE_X64=1 in the environment.'
      )
    return dtype

  def trunk(self) -> nn.Module:
    """A fresh trunk module of this architecture."""
    trunk_cls = _choice(trunks.TRUNKS, self.name, 'model')
    layers.resolve_impl(self.conv_impl)  # Validates it early.
    extra = {}
    widths = tuple(int(w) for w in self.widths)
    if widths:
      default = getattr(trunk_cls, 'widths', None)
      if default is None or len(widths) != len(default) or min(widths) < 1:
        raise UsageError(
          f'widths {widths}: {self.name} takes '
          + (
            f'{len(default)} positive widths (default {tuple(default)}).'
            if default is not None
            else 'no widths; leave them empty.'
          )
        )
      extra['widths'] = widths
    trunks.remat_policy(self.remat)  # Validates it early.
    if self.remat != 'none':
      extra['remat'] = self.remat
    return trunk_cls(conv_impl=self.conv_impl, dtype=self.dtype(), **extra)


def build_models(
  spec: ModelSpec,
  *,
  num_primary: int,
  num_aux: int,
  example_weights: bool = False,
) -> tuple[MultiTaskNet, LabelGenerator]:
  """(multi-task network f, label generator g) of the architecture `spec`.

  Args:
    spec: the architecture.
    num_primary: P, primary classes.
    num_aux: K = sum(psi), auxiliary classes.
    example_weights: g also outputs per-example weight logits.

  Returns:
    Two modules with separate trunks of the same architecture.
  """
  dtype, hidden = spec.dtype(), spec.head_hidden
  f = MultiTaskNet(spec.trunk(), num_primary, num_aux, hidden, dtype)
  g = LabelGenerator(spec.trunk(), num_aux, hidden, dtype, example_weights)
  return f, g


def build_single(spec: ModelSpec, *, num_primary: int) -> MultiTaskNet:
  """Single-task network: a `MultiTaskNet` with num_aux=0 (aux is None)."""
  f, _ = build_models(spec, num_primary=num_primary, num_aux=0)
  return f


def build_multi_head(
  spec: ModelSpec, *, num_primary: int, aux_classes: Sequence[int]
) -> MultiHeadNet:
  """The loss combiner's `MultiHeadNet` of the architecture `spec`."""
  return MultiHeadNet(
    spec.trunk(),
    num_primary,
    tuple(aux_classes),
    spec.head_hidden,
    spec.dtype(),
  )


def init_variables(
  module: nn.Module, rng: jax.Array, image_shape: Sequence[int]
) -> tuple[Params, ModelState]:
  """Initialises `module` on a zero batch.

  Args:
    module: a network called as `module(x, train)`.
    rng: a `jax.random.key`.
    image_shape: [H, W, C] of one image.

  Returns:
    (params, model_state): plain dicts; model_state holds the non-param
    collections ({'batch_stats': ...} with BatchNorm, else {}).
  """
  x = jnp.zeros((1, *image_shape), jnp.float32)
  variables = jax.jit(module.init, static_argnums=2)(rng, x, False)
  variables = dict(variables)
  if getattr(module, 'dtype', None) == jnp.float64:  # Parameters too.
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), variables)
  params = variables.pop('params')
  return params, variables


ApplyFn = Callable[
  [Params, ModelState, jax.Array, bool], tuple[Any, ModelState]
]


def make_apply(module: nn.Module) -> ApplyFn:
  """`apply(params, model_state, images, train) -> (outputs, model_state)`.

  With train=True, BatchNorm normalises with batch statistics and the
  returned model_state holds the updated running averages; with
  train=False, running averages are used and model_state is returned as
  given. Works for modules without BatchNorm (model_state == {}). `train`
  must be a Python bool (static under jit).
  """

  def apply(params, model_state, images, train):
    variables = {'params': params, **model_state}
    if train and model_state:
      outputs, new_state = module.apply(
        variables, images, train, mutable=list(model_state)
      )
      return outputs, dict(new_state)
    return module.apply(variables, images, train), model_state

  return apply
