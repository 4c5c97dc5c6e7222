"""Tiny MAXL problems shared by the tests.

As networks and arrays (`make_problem`: an MLP or a conv net with BatchNorm)
and as a run config with its `DatasetInfo` (`run_config`, `TOY_INFO`).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from experiments.configs import smoke
from maxl_jax import hierarchy, meta_grad
from maxl_jax.data.info import DatasetInfo
from maxl_jax.networks import layers, models
from maxl_jax.problem import MaxlProblem


class TinyMLP(nn.Module):
  """Trunk without BatchNorm."""

  @nn.compact
  def __call__(self, x, train):
    del train
    x = jnp.reshape(x, (x.shape[0], -1))
    return jnp.tanh(nn.Dense(8)(x))


class TinyConvBN(nn.Module):
  """Trunk with a conv and BatchNorm (couples the examples of a batch)."""

  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x, train):
    x = layers.conv(4, (3, 3), conv_impl=self.conv_impl)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = jnp.tanh(x)
    return jnp.mean(x, axis=(1, 2))


class TwoHeads(nn.Module):
  trunk: nn.Module
  num_primary: int
  num_aux: int

  @nn.compact
  def __call__(self, x, train):
    h = self.trunk(x, train)
    return nn.Dense(self.num_primary)(h), nn.Dense(self.num_aux)(h)


class OneHead(nn.Module):
  """Label logits; with `example_weights` also weight logits [N] (random
  init, so the weights differ between examples from the start)."""

  trunk: nn.Module
  num_aux: int
  example_weights: bool = False

  @nn.compact
  def __call__(self, x, train):
    h = self.trunk(x, train)
    logits = nn.Dense(self.num_aux)(h)
    if not self.example_weights:
      return logits
    return logits, nn.Dense(1, name='weight')(h)[:, 0]


def make_problem(
  kind='mlp',
  psi=(2, 3),
  n=6,
  gamma=2.0,
  lam=0.2,
  dtype=jnp.float32,
  seed=0,
  fd_eps=0.01,
  conv_impl='xla',
  example_weights=False,
  label_smoothing=0.0,
):
  """A tiny problem: (problem, θ1, model_state1, θ2, model_state2, batch).

  `example_weights`: g also outputs per-example auxiliary weights.
  `label_smoothing`: ε of the θ1 step's primary targets.
  """
  if kind == 'mlp':
    trunk = TinyMLP
  else:
    trunk = functools.partial(TinyConvBN, conv_impl=conv_impl)
  psi = hierarchy.validate_psi(psi)
  num_primary, num_aux = psi.size, int(psi.sum())
  f = TwoHeads(trunk(), num_primary, num_aux)
  g = OneHead(trunk(), num_aux, example_weights)
  rng = np.random.default_rng(seed)
  shape = (n, 5, 5, 2) if kind == 'conv' else (n, 6)
  images = jnp.asarray(rng.normal(size=shape), dtype)
  labels = jnp.asarray(rng.integers(0, num_primary, n), jnp.int32)
  kf, kg = jax.random.split(jax.random.key(seed))
  cast = lambda t: jax.tree.map(lambda a: jnp.asarray(a, dtype), t)  # noqa: E731
  vf = cast(f.init(kf, images, False))
  vg = cast(g.init(kg, images, False))
  theta1, model_state1 = (
    vf['params'],
    {k: v for k, v in vf.items() if k != 'params'},
  )
  theta2, model_state2 = (
    vg['params'],
    {k: v for k, v in vg.items() if k != 'params'},
  )
  problem = MaxlProblem(
    f_apply=models.make_apply(f),
    g_apply=models.make_apply(g),
    mask=hierarchy.class_mask(psi),
    gamma=gamma,
    lam=lam,
    fd_eps=fd_eps,
    example_weights=example_weights,
    label_smoothing=label_smoothing,
  )
  batch = {'image': images, 'label': labels}
  return problem, theta1, model_state1, theta2, model_state2, batch


# A toy dataset for runs built from a config alone (`contract.build_run`).
TOY_INFO = DatasetInfo('toy', 4, (32, 32, 1), num_train=64, num_test=8)


def run_config(method='maxl', **maxl):
  """The smoke config of `method` (heads of 8), with `config.maxl` updates."""
  config = smoke.get_config()
  config.method = method
  config.model.head_hidden = 8
  config.maxl.update(maxl)
  return config


def rel_err(a, b):
  """‖a − b‖ / ‖b‖ over every leaf."""
  a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def inputs(args, alpha, meta_batch=None, opt_state1=None):
  """`meta_grad.MetaInputs` of `make_problem`'s args (less the problem)."""
  _, *rest = args
  return meta_grad.MetaInputs(*rest, alpha, meta_batch, opt_state1)


def estimate(name, args, alpha, meta_batch=None):
  """The estimator `name`, jitted (much faster than op-by-op here)."""
  fn = functools.partial(meta_grad.ESTIMATORS[name], args[0])
  return jax.jit(fn)(inputs(args, alpha, meta_batch))
