"""The K-Means baseline's convolutional autoencoder and its loss.

DESIGN §4: the baseline clusters the latent codes of a small autoencoder
trained on the training images (`labels/kmeans.py`).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class Encoder(nn.Module):
  """[N, 32, 32, C] -> [N, latent_dim]: stride-2 convolutions, then Dense."""

  widths: Sequence[int]
  latent_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width in self.widths:
      x = nn.relu(nn.Conv(width, (3, 3), strides=(2, 2))(x))
    return nn.Dense(self.latent_dim)(x.reshape(x.shape[0], -1))


class Decoder(nn.Module):
  """[N, latent_dim] -> [N, 32, 32, C]: Dense, then (2x upsample, conv)s."""

  widths: Sequence[int]
  channels: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    side = 32 // 2 ** len(self.widths)
    x = nn.relu(nn.Dense(side * side * self.widths[-1])(z))
    x = x.reshape(z.shape[0], side, side, self.widths[-1])
    outs = [*reversed(self.widths[:-1]), self.channels]
    for i, width in enumerate(outs):
      x = x.repeat(2, axis=1).repeat(2, axis=2)  # Nearest 2x upsampling.
      x = nn.Conv(width, (3, 3))(x)
      if i < len(outs) - 1:  # A linear output layer.
        x = nn.relu(x)
    return x


class AutoEncoder(nn.Module):
  """A small convolutional autoencoder; `encode` gives the latent code.

  XLA convolutions (`nn.Conv`): for this network they are faster on CPU than
  `layers`' im2col, whose strided backward is slow.
  """

  widths: Sequence[int] = (16, 32, 64)
  latent_dim: int = 64
  channels: int = 3

  def setup(self):
    self.encoder = Encoder(self.widths, self.latent_dim)
    self.decoder = Decoder(self.widths, self.channels)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Reconstruction [N, 32, 32, C] of normalised images x."""
    return self.decoder(self.encoder(x))

  def encode(self, x: jax.Array) -> jax.Array:
    """Latent codes [N, latent_dim] of normalised images x."""
    return self.encoder(x)


def reconstruction_loss(ae: AutoEncoder, params, x: jax.Array) -> jax.Array:
  """Mean squared reconstruction error of normalised images x."""
  return jnp.mean(jnp.square(ae.apply({'params': params}, x) - x))
