"""The trunks of MAXL's networks: ConvNet-4, VGG-16 and ResNet-32.

A trunk (these, or any user module with the same call signature) maps
images [N, H, W, C] to features [N, D]: `trunk(x, train) -> features`;
`models.py` puts the heads on it. `TRUNKS` maps a model name to its
class.

Initialisation as the original code: Xavier-uniform conv kernels, zero
biases, BatchNorm scale 1 and bias 0. BatchNorm uses momentum 0.9 (=
PyTorch's 0.1) and eps 1e-5; its running variance is the biased batch
variance (PyTorch keeps the unbiased one). `dtype` (the compute dtype) sets
activations and matmuls.

Rematerialisation (`remat`, one of `REMAT_MODES`):
'blocks' wraps each block of a trunk (a ConvNet-4 conv-BN-ReLU-pool, a VGG-16
block of 2-3 convolutions and its pool, a ResNet basic block) in
`jax.checkpoint` (flax `nn.remat`, function form, so the parameter tree is
the same as with 'none' and checkpoints move between settings) with policy
`nothing_saveable`: the backward passes keep only each block's input and
recompute the rest. 'blocks_dots' saves the convolutions' matmul outputs
(`dots_with_no_batch_dims_saveable`) and recomputes only the cheap
elementwise work (BatchNorm, ReLU, pool, im2col copies). It applies to every
forward of the trunk (θ1, meta and single steps); values are unchanged, up
to float rounding order (exact in float64, tests/test_remat.py).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from maxl_jax.errors import UsageError
from maxl_jax.networks import layers

Dtype = Any

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros
# Trunk rematerialisation (module docstring): mode -> checkpoint policy.
REMAT_MODES = {
  'none': None,
  'blocks': jax.checkpoint_policies.nothing_saveable,
  'blocks_dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_policy(remat: str):
  """The checkpoint policy of `remat`, one of `REMAT_MODES` (None: none).

  Raises:
    UsageError: `remat` is not one of them.
  """
  if remat not in REMAT_MODES:
    raise UsageError(
      f'unknown remat {remat!r}; valid choices: {", ".join(REMAT_MODES)}.'
    )
  return REMAT_MODES[remat]


def _remat_block(block: Callable, remat: str) -> Callable:
  """`block(module, x) -> y`, checkpointed as `remat` says.

  The function form of `nn.remat` creates the block's layers in the calling
  module's scope, with the names they would have without it.
  """
  policy = remat_policy(remat)
  return block if policy is None else nn.remat(block, policy=policy)


def _batch_norm(train: bool, dtype: Dtype) -> nn.BatchNorm:
  return nn.BatchNorm(
    use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype
  )


def _conv_bn_relu(x, width, train, conv_impl, dtype):
  """conv3x3 (Xavier, zero bias) + BatchNorm + ReLU, inside a compact call."""
  x = layers.conv(
    width,
    (3, 3),
    conv_impl=conv_impl,
    train=train,
    dtype=dtype,
    kernel_init=_xavier,
    bias_init=_zeros,
  )(x)
  return nn.relu(_batch_norm(train, dtype)(x))


class ConvNet4(nn.Module):
  """4 x [conv3x3, BatchNorm, ReLU, 2x2 max-pool]; 32x32 -> [N, 4*widths[-1]].

  Attributes:
    widths: output channels of the four convolutions.
    conv_impl: one of `layers.CONV_IMPLS`.
    dtype: compute dtype.
    remat: one of `REMAT_MODES` (module docstring).
  """

  widths: Sequence[int] = (32, 64, 128, 256)
  conv_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  remat: str = 'none'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[N, H, W, C] images -> [N, D] features."""
    for width in self.widths:

      def block(mdl, x, width=width):
        del mdl  # The layers are created in the caller's scope.
        x = _conv_bn_relu(x, width, train, self.conv_impl, self.dtype)
        return layers.max_pool(x, (2, 2), conv_impl=self.conv_impl, train=train)

      x = _remat_block(block, self.remat)(self, x)
    return x.reshape(x.shape[0], -1)


class VGG16(nn.Module):
  """13 x [conv3x3, BatchNorm, ReLU] in 5 blocks, a 2x2 max-pool after each.

  Widths 64-128-256-512-512 with 2, 2, 3, 3, 3 convolutions: 32x32 inputs
  give [N, 512] features.

  Attributes:
    blocks: (width, number of convolutions) of each block.
    conv_impl: one of `layers.CONV_IMPLS`.
    dtype: compute dtype.
    remat: one of `REMAT_MODES` (module docstring).
  """

  blocks: Sequence[tuple[int, int]] = (
    (64, 2),
    (128, 2),
    (256, 3),
    (512, 3),
    (512, 3),
  )
  conv_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  remat: str = 'none'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[N, H, W, C] images -> [N, D] features."""
    for width, depth in self.blocks:

      def block(mdl, x, width=width, depth=depth):
        del mdl  # The layers are created in the caller's scope.
        for _ in range(depth):
          x = _conv_bn_relu(x, width, train, self.conv_impl, self.dtype)
        return layers.max_pool(x, (2, 2), conv_impl=self.conv_impl, train=train)

      x = _remat_block(block, self.remat)(self, x)
    return x.reshape(x.shape[0], -1)


class BasicBlock(nn.Module):
  """ResNet basic block: two conv3x3+BN, shortcut, ReLU.

  The shortcut is the identity, or a 1x1 convolution + BN (projection) when
  the stride or the width changes.
  """

  width: int
  stride: int = 1
  conv_impl: str = 'auto'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[N, H, W, Cin] -> [N, H/stride, W/stride, width]."""
    conv = functools.partial(
      layers.conv,
      conv_impl=self.conv_impl,
      train=train,
      dtype=self.dtype,
      use_bias=False,
      kernel_init=_xavier,
    )
    y = conv(self.width, (3, 3), strides=self.stride)(x)
    y = nn.relu(_batch_norm(train, self.dtype)(y))
    y = conv(self.width, (3, 3))(y)
    y = _batch_norm(train, self.dtype)(y)
    if self.stride != 1 or x.shape[-1] != self.width:
      x = conv(self.width, (1, 1), strides=self.stride, name='proj')(x)
      x = _batch_norm(train, self.dtype)(x)
    return nn.relu(x + y)


class ResNet32(nn.Module):
  """CIFAR ResNet-32: conv3x3(16), 3 stages x 5 basic blocks, global pool.

  Stages of widths 16-32-64; the first block of stages 2 and 3 has stride 2
  and a projection shortcut. 32x32 inputs give [N, 64] features.

  Attributes:
    widths: widths of the three stages.
    blocks_per_stage: basic blocks per stage (5 for ResNet-32).
    conv_impl: one of `layers.CONV_IMPLS`.
    dtype: compute dtype.
    remat: one of `REMAT_MODES` (module docstring).
  """

  widths: Sequence[int] = (16, 32, 64)
  blocks_per_stage: int = 5
  conv_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  remat: str = 'none'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[N, H, W, C] images -> [N, D] features."""
    x = layers.conv(
      self.widths[0],
      (3, 3),
      conv_impl=self.conv_impl,
      train=train,
      dtype=self.dtype,
      use_bias=False,
      kernel_init=_xavier,
    )(x)
    x = nn.relu(_batch_norm(train, self.dtype)(x))
    for stage, width in enumerate(self.widths):
      for block in range(self.blocks_per_stage):
        stride = 2 if stage > 0 and block == 0 else 1

        def basic(mdl, x, width=width, stride=stride):
          del mdl  # BasicBlock_i is created in the caller's scope.
          return BasicBlock(width, stride, self.conv_impl, self.dtype)(x, train)

        x = _remat_block(basic, self.remat)(self, x)
    return jnp.mean(x, axis=(1, 2))


TRUNKS = {'convnet4': ConvNet4, 'vgg16': VGG16, 'resnet32': ResNet32}
