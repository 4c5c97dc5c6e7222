"""Convolution and max-pool layers with a selectable implementation.

`conv_impl` picks how a convolution and a max-pool are computed; parameters
are the same whatever the choice, so a checkpoint moves between them:

- 'xla': `lax.conv_general_dilated` (as `nn.Conv`) and `nn.max_pool`.
- 'im2col': the kh*kw shifted views of the zero-padded input concatenated on
  the channel axis, then ONE matmul with the kernel reshaped to
  [kh*kw*Cin, Cout]; the max-pool with window == stride as a reshape to
  [N, H/2, 2, W/2, 2, C] and a max. On XLA:CPU (jaxlib 0.10.2) a VGG-16
  training step is ~4x faster this way: XLA:CPU's convolutions are slow
  (pathologically so on 2x2 inputs with padding 1), and so is the backward of
  `nn.max_pool` (select-and-scatter).
- 'auto': 'im2col' when `jax.default_backend() == 'cpu'`, else 'xla'.

Gradients of the max-pool: the reshape pool is a chain of selects, so the
whole cotangent of a window goes to its first maximum, as `nn.max_pool`'s
select-and-scatter does. (A plain `jnp.max` would divide the cotangent by the
number of elements equal to the maximum; inside the meta-gradient's
second-order graph XLA may recompute those elements in different fusions,
find none equal, and divide by zero: NaN.)
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from maxl_jax.errors import UsageError

CONV_IMPLS = ('xla', 'im2col', 'auto')

_NHWC_SPECS = ('NHWC', 'HWIO', 'NHWC')


def resolve_impl(conv_impl: str) -> str:
  """Returns 'xla' or 'im2col' for a `conv_impl` of CONV_IMPLS."""
  if conv_impl not in CONV_IMPLS:
    raise UsageError(
      f'unknown conv_impl {conv_impl!r}; valid choices: '
      f'{", ".join(CONV_IMPLS)}.'
    )
  if conv_impl == 'auto':
    return 'im2col' if jax.default_backend() == 'cpu' else 'xla'
  return conv_impl


def _is_one(seq: Sequence[int] | None) -> bool:
  return seq is None or all(s == 1 for s in seq)


def im2col_conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  precision: Any = None,
  preferred_element_type: Any = None,
) -> jax.Array:
  """Drop-in for `lax.conv_general_dilated`: 2-D convolution as one matmul.

  Handles NHWC inputs with HWIO kernels (as `nn.Conv` passes them), any
  kernel size, strides and padding. Dilated or grouped convolutions and
  other layouts fall back to `lax.conv_general_dilated`.

  Args:
    lhs: [N, H, W, Cin] input.
    rhs: [kh, kw, Cin, Cout] kernel.
    window_strides: (sh, sw).
    padding: 'SAME', 'VALID' or [(lo, hi), (lo, hi)].
    lhs_dilation: as `lax.conv_general_dilated`.
    rhs_dilation: as `lax.conv_general_dilated`.
    dimension_numbers: as `lax.conv_general_dilated`.
    feature_group_count: as `lax.conv_general_dilated`.
    batch_group_count: as `lax.conv_general_dilated`.
    precision: precision of the matmul.
    preferred_element_type: accumulation/output type of the matmul.

  Returns:
    [N, Ho, Wo, Cout] output, equal to `lax.conv_general_dilated`'s.
  """
  supported = (
    lhs.ndim == 4
    and _is_one(lhs_dilation)
    and _is_one(rhs_dilation)
    and feature_group_count == 1
    and batch_group_count == 1
    and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC_SPECS)
  )
  if not supported:
    return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
    )
  n, h, w, cin = lhs.shape
  kh, kw, _, cout = rhs.shape
  sh, sw = window_strides
  if isinstance(padding, str):
    padding = lax.padtype_to_pads((h, w), (kh, kw), (sh, sw), padding)
  (pt, pb), (pl, pr) = padding
  x = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho = (h + pt + pb - kh) // sh + 1
  wo = (w + pl + pr - kw) // sw + 1
  views = [
    x[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
    for i in range(kh)
    for j in range(kw)
  ]
  patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
  # Contract the LAST axis of the left operand: contracting a leading axis
  # (e.g. patches laid out [K, N*H*W]) is ~2x slower on XLA:CPU.
  return lax.dot_general(
    patches,
    rhs.reshape(kh * kw * cin, cout),
    (((3,), (0,)), ((), ())),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


def conv(
  features: int,
  kernel_size: Sequence[int] = (3, 3),
  *,
  conv_impl: str = 'auto',
  **kwargs: Any,
) -> nn.Conv:
  """An `nn.Conv` computed by `conv_impl` (one of CONV_IMPLS).

  The result IS an `nn.Conv` (its auto-name is 'Conv_<i>', its parameters are
  'kernel' [kh, kw, Cin, Cout] and 'bias' [Cout]), so parameters, their
  initialisation and dtype handling are identical for every `conv_impl`.

  Args:
    features: number of output channels Cout.
    kernel_size: (kh, kw).
    conv_impl: 'xla' | 'im2col' | 'auto'.
    **kwargs: any other `nn.Conv` argument (strides, padding, use_bias,
      dtype, kernel_init, name, ...).

  Returns:
    The `nn.Conv` module.
  """
  if resolve_impl(conv_impl) == 'im2col':
    kwargs['conv_general_dilated'] = im2col_conv_general_dilated
  return nn.Conv(features, tuple(kernel_size), **kwargs)


def max_pool(
  x: jax.Array,
  window_shape: Sequence[int] = (2, 2),
  strides: Sequence[int] | None = None,
  padding: str = 'VALID',
  *,
  conv_impl: str = 'auto',
) -> jax.Array:
  """Max-pool of [N, H, W, C] inputs, as `nn.max_pool`.

  With 'im2col' and non-overlapping windows (strides == window_shape, VALID
  padding: trailing rows/columns that do not fill a window are dropped) it
  is a reshape to [N, H/kh, kh, W/kw, kw, C] and a max; other settings use
  `nn.max_pool`. See the module docstring for gradients at ties.

  Args:
    x: [N, H, W, C] input.
    window_shape: (kh, kw).
    strides: (sh, sw); None means window_shape (the default 2x2/2 pool).
    padding: 'VALID', 'SAME' or explicit pads, as `nn.max_pool`.
    conv_impl: 'xla' | 'im2col' | 'auto'.

  Returns:
    [N, H // kh, W // kw, C] for non-overlapping VALID windows.
  """
  window_shape = tuple(window_shape)
  strides = window_shape if strides is None else tuple(strides)
  reshape_ok = x.ndim == 4 and strides == window_shape and padding == 'VALID'
  if resolve_impl(conv_impl) == 'xla' or not reshape_ok:
    return nn.max_pool(x, window_shape, strides, padding)
  n, h, w, c = x.shape
  kh, kw = window_shape
  ho, wo = h // kh, w // kw
  x = x[:, : ho * kh, : wo * kw, :].reshape(n, ho, kh, wo, kw, c)
  views = [x[:, :, i, :, j, :] for i in range(kh) for j in range(kw)]
  best = views[0]
  for view in views[1:]:  # A select chain: the first maximum wins.
    best = jnp.where(lax.stop_gradient(view > best), view, best)
  return best
