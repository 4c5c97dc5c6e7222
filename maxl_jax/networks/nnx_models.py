"""MAXL's networks written in Flax NNX: heads, f, g and a ConvNet-4 trunk.

The NNX counterparts of `models.py`'s `Head`, `MultiTaskNet`,
`LabelGenerator` and `MultiHeadNet` and of `trunks.ConvNet4`, with the same
call (`net(images, train)`), outputs, layers and initialisation, for the
library API (`maxl_jax.maxl(f, g, ...)` takes Linen or NNX modules:
`functional.py`). An NNX trunk is any `nnx.Module` called as
`trunk(images, train) -> [N, D]`; NNX layers need their input sizes, so
the heads take D (`feature_size` computes it without running the trunk).

The parameters correspond one to one: Linen's auto-named `Dense_<i>`,
`Conv_<i>` and `BatchNorm_<i>` are the `layers[i]`, `convs[i]` and
`norms[i]` here, and the named submodules ('trunk', 'primary_head',
'aux_head', 'aux_head_<t>', 'weight_head') keep their names, so Linen
weights can be copied in (tests/test_nnx.py does).
"""

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Dtype = Any

_xavier = nnx.initializers.xavier_uniform()
_zeros = nnx.initializers.zeros_init()


def feature_size(trunk: nnx.Module, image_shape: Sequence[int]) -> int:
  """D, the features per image of `trunk` on [H, W, C] images (traced
  shapes only: nothing is computed, nothing changes)."""
  graphdef, state = nnx.split(trunk)

  def features(state):
    x = jnp.zeros((1, *image_shape), jnp.float32)
    return nnx.merge(graphdef, state)(x, False)

  return int(jax.eval_shape(features, state).shape[-1])


def _dense(num_in, num_out, dtype, param_dtype, rngs, **init):
  return nnx.Linear(
    num_in,
    num_out,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=init.get('kernel_init', _xavier),
    bias_init=init.get('bias_init', _zeros),
    rngs=rngs,
  )


class Head(nnx.Module):
  """Dense(hidden) + ReLU + Dense(num_out), or one Dense if hidden == 0
  (`layers[0]`, `layers[1]`: Linen's `Dense_0`, `Dense_1`)."""

  def __init__(
    self,
    num_features: int,
    num_out: int,
    hidden: int = 0,
    *,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    sizes = (num_features, *([hidden] if hidden else []), num_out)
    self.layers = nnx.List(
      _dense(a, b, dtype, param_dtype, rngs)
      for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    )

  def __call__(self, h: jax.Array) -> jax.Array:
    """[N, D] features -> [N, num_out] logits, at least float32."""
    for layer in self.layers[:-1]:
      h = nnx.relu(layer(h))
    logits = self.layers[-1](h)
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def _head(num_features, head_hidden, dtype, param_dtype, rngs, num_out):
  """A `Head` of `num_out` outputs, as the networks below build theirs."""
  return Head(
    num_features,
    num_out,
    head_hidden,
    dtype=dtype,
    param_dtype=param_dtype,
    rngs=rngs,
  )


class MultiTaskNet(nnx.Module):
  """f(θ1): a trunk with a primary and an auxiliary head
  (`models.MultiTaskNet`).

  Args:
    trunk: any NNX module with `trunk(x, train) -> [N, D]`.
    num_features: D (`feature_size(trunk, image_shape)`).
    num_primary: P, primary classes.
    num_aux: K, auxiliary classes; 0 makes a single-task network.
    head_hidden: hidden units of each head (0 = one Dense layer).
    dtype: compute dtype of the heads; param_dtype: their parameters'.
    rngs: the heads' initialisation.
  """

  def __init__(
    self,
    trunk: nnx.Module,
    num_features: int,
    num_primary: int,
    num_aux: int,
    head_hidden: int = 0,
    *,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    head = functools.partial(
      _head, num_features, head_hidden, dtype, param_dtype, rngs
    )
    self.trunk = trunk
    self.primary_head = head(num_primary)
    self.aux_head = head(num_aux) if num_aux else None

  def __call__(
    self, x: jax.Array, train: bool
  ) -> tuple[jax.Array, jax.Array | None]:
    """Returns (primary [N, P], aux [N, K]) logits; aux is None if K == 0."""
    h = self.trunk(x, train)
    aux = self.aux_head(h) if self.aux_head is not None else None
    return self.primary_head(h), aux


class MultiHeadNet(nnx.Module):
  """A trunk, a primary head and one head per given auxiliary task, the
  loss combiner's network (`models.MultiHeadNet`); arguments as
  `MultiTaskNet`'s, with `aux_classes` (K_t of each task) for `num_aux`."""

  def __init__(
    self,
    trunk: nnx.Module,
    num_features: int,
    num_primary: int,
    aux_classes: Sequence[int],
    head_hidden: int = 0,
    *,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    head = functools.partial(
      _head, num_features, head_hidden, dtype, param_dtype, rngs
    )
    self.trunk = trunk
    self.primary_head = head(num_primary)
    for t, k in enumerate(aux_classes):
      setattr(self, f'aux_head_{t}', head(k))
    self.num_tasks = len(aux_classes)

  def __call__(
    self, x: jax.Array, train: bool
  ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Returns (primary [N, P], ([N, K_t] for each task)) logits."""
    h = self.trunk(x, train)
    aux = tuple(
      getattr(self, f'aux_head_{t}')(h) for t in range(self.num_tasks)
    )
    return self.primary_head(h), aux


class LabelGenerator(nnx.Module):
  """g(θ2): a trunk with one K-way head; unmasked logits [N, K]
  (`models.LabelGenerator`, whose docstring explains `example_weights`).

  Args:
    trunk: any NNX module with `trunk(x, train) -> [N, D]`.
    num_features: D (`feature_size(trunk, image_shape)`).
    num_aux: K, auxiliary classes.
    head_hidden: hidden units of the head (0 = one Dense layer).
    example_weights: also output per-example weight logits [N].
    init_weight: every w_n at initialisation, in (0, 1).
    dtype: compute dtype of the heads; param_dtype: their parameters'.
    rngs: the heads' initialisation.
  """

  def __init__(
    self,
    trunk: nnx.Module,
    num_features: int,
    num_aux: int,
    head_hidden: int = 0,
    *,
    example_weights: bool = False,
    init_weight: float = 0.9,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.trunk = trunk
    self.aux_head = Head(
      num_features,
      num_aux,
      head_hidden,
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
    )
    bias = math.log(init_weight / (1.0 - init_weight))
    self.weight_head = (
      _dense(
        num_features,
        1,
        dtype,
        param_dtype,
        rngs,
        kernel_init=_zeros,
        bias_init=nnx.initializers.constant(bias),
      )
      if example_weights
      else None
    )

  def __call__(self, x: jax.Array, train: bool) -> Any:
    """[N, H, W, C] images -> [N, K] logits (mask softmax: `losses.py`).

    With `example_weights`: (logits [N, K], weight logits [N]).
    """
    h = self.trunk(x, train)
    logits = self.aux_head(h)
    if self.weight_head is None:
      return logits
    return logits, self.weight_head(h)[:, 0].astype(logits.dtype)


class ConvNet4(nnx.Module):
  """len(widths) x [conv3x3, BatchNorm, ReLU, 2x2 max-pool], flattened:
  `trunks.ConvNet4` (conv_impl 'xla', remat 'none') in NNX.

  Xavier-uniform kernels and zero biases; BatchNorm momentum 0.9, eps 1e-5
  (`trunks.py`). `convs[i]`, `norms[i]`: Linen's `Conv_<i>`, `BatchNorm_<i>`.

  Args:
    in_channels: C of the [N, H, W, C] images.
    widths: output channels of the convolutions (ConvNet-4: four).
    dtype: compute dtype; param_dtype: the parameters'.
    rngs: the initialisation.
  """

  def __init__(
    self,
    in_channels: int,
    widths: Sequence[int] = (32, 64, 128, 256),
    *,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    sizes = (in_channels, *widths)
    self.convs = nnx.List(
      nnx.Conv(
        a,
        b,
        (3, 3),
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=_xavier,
        bias_init=_zeros,
        rngs=rngs,
      )
      for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    )
    self.norms = nnx.List(
      nnx.BatchNorm(
        width,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
      )
      for width in widths
    )

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[N, H, W, C] images -> [N, D] features."""
    for conv, norm in zip(self.convs, self.norms, strict=True):
      x = nnx.relu(norm(conv(x), use_running_average=not train))
      x = nnx.max_pool(x, (2, 2), (2, 2))
    return x.reshape(x.shape[0], -1)
