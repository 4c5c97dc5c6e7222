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
- 'im2col_bf16': 'im2col' with the matmul's operands rounded to bfloat16
  and float32 accumulation and output (as TPUs treat float32 matmuls by
  default); everything else stays float32. On CPUs with AMX or AVX512-BF16
  XLA runs these matmuls ~3x faster; the rounding costs much gradient
  precision in deep BatchNorm nets (README, Benchmarks). Differentiable
  once in reverse mode and in forward mode (jvp): enough for the
  `structured` and `first_order` meta-gradients, not for `unrolled`.
- 'im2col_tiled': 'im2col' with the patches of each convolution built and
  multiplied one batch tile at a time (`lax.map`), each tile under
  `jax.checkpoint`: the backward passes keep the layer's input, not its
  kh*kw-times larger patches, and rebuild one tile's patches at a time.
  Tiles hold at most `PATCH_TILE_BYTES` of patches (layers whose patches
  fit stay one matmul). The same values as 'im2col' up to the summation
  order of the kernel gradient over tiles; on VGG-16 it cuts XLA's
  temporaries of a meta step several-fold (benchmarks/README.md, "Remat").
- 'mixed': per layer, XLA's convolution on inputs of at least
  `XLA_MIN_SIZE` x `XLA_MIN_SIZE`, 'im2col' on smaller ones. XLA:CPU's
  forward convolution is 1.5-12x faster than 'im2col' from 8x8 up (the
  patches of large layers make 'im2col' memory-bound), equal at 4x4, and
  ~80x slower at 2x2 (benchmarks/README.md, "Convolutions").
- 'auto': on a CPU, 'im2col' for training and 'mixed' for inference
  (`train=False`: evaluation, g's test labels); 'xla' elsewhere. Never
  'im2col_bf16': rounding is a choice, not a hardware default.

Gradients of the max-pool: the reshape pool is a chain of selects, so the
whole cotangent of a window goes to its first maximum, as `nn.max_pool`'s
select-and-scatter does. (A plain `jnp.max` would divide the cotangent by the
number of elements equal to the maximum; inside the meta-gradient's
second-order graph XLA may recompute those elements in different fusions,
find none equal, and divide by zero: NaN.)
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero, linear_call

from maxl_jax.errors import UsageError

CONV_IMPLS = ('xla', 'im2col', 'im2col_bf16', 'im2col_tiled', 'mixed', 'auto')
# 'mixed': the smallest input height and width for XLA's own convolution.
XLA_MIN_SIZE = 4
# 'im2col_tiled': the most bytes of patches one batch tile builds.
PATCH_TILE_BYTES = 32 * 2**20
# What a tile's backward keeps: nothing (its patches and matmul are redone).
TILE_POLICY = jax.checkpoint_policies.nothing_saveable

_NHWC_SPECS = ('NHWC', 'HWIO', 'NHWC')


def resolve_impl(conv_impl: str, train: bool = True) -> str:
  """The implementation of one of CONV_IMPLS ('auto' resolved), for
  training or (`train=False`) inference."""
  if conv_impl not in CONV_IMPLS:
    raise UsageError(
      f'unknown conv_impl {conv_impl!r}; valid choices: '
      f'{", ".join(CONV_IMPLS)}.'
    )
  if conv_impl == 'auto':
    if jax.default_backend() != 'cpu':
      return 'xla'
    return 'im2col' if train else 'mixed'
  return conv_impl


def _bf16_dot(a, b, contracting):
  """A 2-D matmul with bfloat16 operands and float32 accumulation/output."""
  return lax.dot_general(
    a.astype(jnp.bfloat16),
    b.astype(jnp.bfloat16),
    (contracting, ((), ())),
    preferred_element_type=jnp.float32,
  )


@jax.custom_jvp
def bf16_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """`a @ b` ([M, K] @ [K, N]) with bfloat16 operands, float32 result.

  Its derivatives are bfloat16 matmuls as well: the tangent is linear in
  (da, db) through `linear_call`, whose transposes are the two gradient
  matmuls (`ct @ bᵀ`, `aᵀ @ ct`). Left to itself, JAX would transpose the
  float32 cotangent against a bfloat16 operand: a float32 matmul.
  """
  return _bf16_dot(a, b, ((1,), (0,)))


@bf16_matmul.defjvp
def _bf16_matmul_jvp(primals, tangents):
  a, b = primals
  da, db = tangents
  terms = []
  if not isinstance(da, SymbolicZero):
    terms.append(
      linear_call(
        lambda b, da: bf16_matmul(da, b),
        lambda b, ct: _bf16_dot(ct, b, ((1,), (1,))).astype(a.dtype),
        b,
        da,
      )
    )
  if not isinstance(db, SymbolicZero):
    terms.append(
      linear_call(
        lambda a, db: bf16_matmul(a, db),
        lambda a, ct: _bf16_dot(a, ct, ((0,), (0,))).astype(b.dtype),
        a,
        db,
      )
    )
  out = bf16_matmul(a, b)
  return out, sum(terms) if terms else jnp.zeros_like(out)


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
  *,
  bf16_operands: bool = False,
  tile_bytes: int = 0,
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
    bf16_operands: round the patches and kernel to bfloat16 and multiply
      them with `bf16_matmul` (float32 accumulation, output in lhs.dtype).
    tile_bytes: > 0: batch tiles of at most this many bytes of patches,
      each rematerialised (the module docstring's 'im2col_tiled').

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
  if tile_bytes:
    tiles = _batch_tiles(lhs, rhs, window_strides, padding, tile_bytes)
    if tiles > 1:
      one = functools.partial(
        im2col_conv_general_dilated,
        rhs=rhs,
        window_strides=window_strides,
        padding=padding,
        dimension_numbers=_NHWC_SPECS,
        precision=precision,
        preferred_element_type=preferred_element_type,
        bf16_operands=bf16_operands,
      )
      one = jax.checkpoint(one, policy=TILE_POLICY)
      out = lax.map(one, lhs.reshape(tiles, n // tiles, h, w, cin))
      return out.reshape(n, *out.shape[2:])
  (pt, pb), (pl, pr) = padding
  # Patches stay float32 even for bf16 operands: XLA:CPU runs bfloat16
  # slicing, concatenation and col2im ~2x slower than float32's, and it
  # hoists per-view roundings out of the concatenation anyway.
  x = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho = (h + pt + pb - kh) // sh + 1
  wo = (w + pl + pr - kw) // sw + 1
  views = [
    x[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
    for i in range(kh)
    for j in range(kw)
  ]
  patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
  kernel = rhs.reshape(kh * kw * cin, cout)
  if bf16_operands:
    out = bf16_matmul(patches.reshape(n * ho * wo, kh * kw * cin), kernel)
    return out.reshape(n, ho, wo, cout).astype(lhs.dtype)
  # Contract the LAST axis of the left operand: contracting a leading axis
  # (e.g. patches laid out [K, N*H*W]) is ~2x slower on XLA:CPU.
  return lax.dot_general(
    patches,
    kernel,
    (((3,), (0,)), ((), ())),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


def _batch_tiles(lhs, rhs, window_strides, padding, tile_bytes) -> int:
  """The fewest batch tiles (a divisor of N) with <= tile_bytes of patches."""
  n, h, w, cin = lhs.shape
  kh, kw = rhs.shape[:2]
  (pt, pb), (pl, pr) = padding
  ho = (h + pt + pb - kh) // window_strides[0] + 1
  wo = (w + pl + pr - kw) // window_strides[1] + 1
  per_example = ho * wo * kh * kw * cin * lhs.dtype.itemsize
  for tiles in range(1, n + 1):
    if n % tiles == 0 and (n // tiles) * per_example <= tile_bytes:
      return tiles
  return n


def conv(
  features: int,
  kernel_size: Sequence[int] = (3, 3),
  *,
  conv_impl: str = 'auto',
  train: bool = True,
  **kwargs: Any,
) -> nn.Conv:
  """An `nn.Conv` computed by `conv_impl` (one of CONV_IMPLS).

  The result IS an `nn.Conv` (its auto-name is 'Conv_<i>', its parameters are
  'kernel' [kh, kw, Cin, Cout] and 'bias' [Cout]), so parameters, their
  initialisation and dtype handling are identical for every `conv_impl`.

  Args:
    features: number of output channels Cout.
    kernel_size: (kh, kw).
    conv_impl: one of CONV_IMPLS.
    train: whether the network trains ('auto' differs for inference).
    **kwargs: any other `nn.Conv` argument (strides, padding, use_bias,
      dtype, kernel_init, name, ...).

  Returns:
    The `nn.Conv` module.
  """
  impl = resolve_impl(conv_impl, train)
  if impl == 'mixed':
    kwargs['conv_general_dilated'] = mixed_conv_general_dilated
  elif impl != 'xla':
    kwargs['conv_general_dilated'] = functools.partial(
      im2col_conv_general_dilated,
      bf16_operands=impl == 'im2col_bf16',
      tile_bytes=PATCH_TILE_BYTES if impl == 'im2col_tiled' else 0,
    )
  return nn.Conv(features, tuple(kernel_size), **kwargs)


def mixed_conv_general_dilated(lhs, rhs, *args, **kwargs) -> jax.Array:
  """'mixed': `lax.conv_general_dilated` on NHWC inputs of at least
  XLA_MIN_SIZE x XLA_MIN_SIZE, `im2col_conv_general_dilated` otherwise."""
  large = lhs.ndim == 4 and min(lhs.shape[1:3]) >= XLA_MIN_SIZE
  conv_fn = lax.conv_general_dilated if large else im2col_conv_general_dilated
  return conv_fn(lhs, rhs, *args, **kwargs)


def max_pool(
  x: jax.Array,
  window_shape: Sequence[int] = (2, 2),
  strides: Sequence[int] | None = None,
  padding: str = 'VALID',
  *,
  conv_impl: str = 'auto',
  train: bool = True,
) -> jax.Array:
  """Max-pool of [N, H, W, C] inputs, as `nn.max_pool`.

  With an 'im2col' kind of conv_impl and non-overlapping windows (strides ==
  window_shape, VALID padding: trailing rows/columns that do not fill a
  window are dropped) it is a reshape to [N, H/kh, kh, W/kw, kw, C] and a
  max; other settings use `nn.max_pool`. See the module docstring for
  gradients at ties.

  Args:
    x: [N, H, W, C] input.
    window_shape: (kh, kw).
    strides: (sh, sw); None means window_shape (the default 2x2/2 pool).
    padding: 'VALID', 'SAME' or explicit pads, as `nn.max_pool`.
    conv_impl: one of CONV_IMPLS.
    train: whether the network trains ('auto' differs for inference).

  Returns:
    [N, H // kh, W // kw, C] for non-overlapping VALID windows.
  """
  window_shape = tuple(window_shape)
  strides = window_shape if strides is None else tuple(strides)
  reshape_ok = x.ndim == 4 and strides == window_shape and padding == 'VALID'
  if resolve_impl(conv_impl, train) == 'xla' or not reshape_ok:
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
