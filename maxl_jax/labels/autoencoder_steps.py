"""The K-Means baseline's autoencoder steps, jitted (DESIGN §4)."""

import functools

import jax
import optax

from maxl_jax.data.images import normalize
from maxl_jax.networks.autoencoder import reconstruction_loss


@functools.partial(jax.jit, static_argnames='ae')
def ae_loss_and_grads(params, images, *, ae):
  """Reconstruction error of uint8 `images` and its gradient."""
  return jax.value_and_grad(reconstruction_loss, argnums=1)(
    ae, params, normalize(images)
  )


@functools.partial(jax.jit, static_argnames='opt')
def ae_update(params, opt_state, grads, *, opt):
  """One step of the autoencoder's optimiser `opt`."""
  updates, opt_state = opt.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


@functools.partial(jax.jit, static_argnames='ae')
def encode(params, images, *, ae):
  """The codes of uint8 `images`."""
  return ae.apply({'params': params}, normalize(images), method='encode')
