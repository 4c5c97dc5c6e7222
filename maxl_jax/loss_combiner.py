"""AuxiLearn's learned loss combiner (Navon et al., ICLR 2021).

An auxiliary network `c(·; φ)` maps each example's vector of auxiliary
losses `ℓ_n` [T] to one non-negative loss, and θ trains on

  L_T(θ, φ) = L_main(θ) + mean_n c(ℓ_n(θ); φ).

φ is learned by the implicit hypergradient of a held-out main loss
(`inverse_hvp.hypergradient`). Forms:

- 'linear': `c(ℓ) = Σ_t softplus(ρ_t) ℓ_t`, non-negative task weights,
  each 1 at initialisation.
- 'mlp': AuxiLearn's monotone nonlinear form, one hidden softplus layer with
  non-negative (softplus-parametrised) weights, shifted so that `c(0) = 0`;
  for losses ℓ >= 0 it is non-negative and non-decreasing in every task.
- 'fixed': `c(ℓ) = Σ_t ℓ_t` (weights 1), no parameters.
"""

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from maxl_jax.errors import UsageError

FORMS = ('linear', 'mlp', 'fixed')


def _raw_init(scale, noise=0.0):
  """Initialiser of raw parameters with `softplus(raw) ≈ scale`."""
  offset = math.log(math.expm1(scale))

  def init(key, shape, dtype=jnp.float32):
    return offset + noise * jax.random.normal(key, shape, dtype)

  return init


class LinearCombiner(nn.Module):
  """`c(ℓ) = Σ_t softplus(ρ_t) ℓ_t`; [N, T] losses -> [N]."""

  num_tasks: int
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, losses):
    rho = self.param('rho', _raw_init(1.0), (self.num_tasks,), self.param_dtype)
    return losses @ jax.nn.softplus(rho).astype(losses.dtype)


class MLPCombiner(nn.Module):
  """Monotone MLP `c(ℓ) = u⁺ · softplus(ℓ W⁺ + b) - (the same at ℓ = 0)`.

  `W⁺ = softplus(W)` [T, H] and `u⁺ = softplus(u)` [H] are non-negative,
  so c is non-decreasing in every task loss. At initialisation W⁺ ≈ 1,
  u⁺ = 2/H and b ~ N(0, 1), so each task's weight `∂c/∂ℓ_t` is about 1
  for small losses.
  """

  num_tasks: int
  hidden: int = 16
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, losses):
    shape = (self.num_tasks, self.hidden)
    w = self.param('w', _raw_init(1.0, 0.1), shape, self.param_dtype)
    b = self.param(
      'b', nn.initializers.normal(1.0), (self.hidden,), self.param_dtype
    )
    u = self.param(
      'u', _raw_init(2.0 / self.hidden), (self.hidden,), self.param_dtype
    )
    w, u = jax.nn.softplus(w), jax.nn.softplus(u)

    def net(x):
      return jax.nn.softplus(x @ w + b) @ u

    out = net(losses) - net(jnp.zeros_like(losses[:1]))
    return out.astype(losses.dtype)


def _fixed(params, losses):
  """`Σ_t ℓ_t`: every task weighted 1; `params` is empty."""
  del params
  return jnp.sum(losses, axis=-1)


def make_combiner(
  form: str, num_tasks: int, hidden: int = 16, param_dtype=jnp.float32
) -> tuple[Callable[..., Any], Callable[..., jax.Array]]:
  """`(init_fn, apply_fn)` of a combiner.

  Args:
    form: 'linear', 'mlp' or 'fixed' (module docstring).
    num_tasks: T, the number of auxiliary losses per example.
    hidden: hidden width of 'mlp'.
    param_dtype: dtype of the parameters.

  Returns:
    `init_fn(key) -> params` (a pytree; {} for 'fixed') and
    `apply_fn(params, losses [N, T]) -> [N]` per-example combined losses.
  """
  if form not in FORMS:
    raise UsageError(
      f'unknown loss combiner {form!r}; choose one of {list(FORMS)}.'
    )
  if num_tasks < 1 or hidden < 1:
    raise UsageError(
      f'a loss combiner needs num_tasks >= 1 and hidden >= 1; got '
      f'num_tasks={num_tasks!r}, hidden={hidden!r}.'
    )
  if form == 'fixed':
    return (lambda key: {}), _fixed
  if form == 'linear':
    module = LinearCombiner(num_tasks, param_dtype)
  else:
    module = MLPCombiner(num_tasks, hidden, param_dtype)

  def init_fn(key):
    return module.init(key, jnp.zeros((1, num_tasks), param_dtype))['params']

  def apply_fn(params, losses):
    return module.apply({'params': params}, losses)

  return init_fn, apply_fn


def combined_aux_loss(apply_fn, params, losses):
  """`mean_n c(ℓ_n; φ)`, the auxiliary part of L_T; `losses` [N, T]."""
  return jnp.mean(apply_fn(params, losses))


def task_weights(apply_fn, params, losses):
  """Each task's effective weight `mean_n ∂c(ℓ_n)/∂ℓ_nt`, [T].

  The local weight of task t at this batch's losses: for 'linear' it is
  `softplus(ρ_t)` whatever the losses, for 'fixed' 1, for 'mlp' the
  gradient of the combined loss averaged over the batch (it depends on the
  losses; log it on a fixed batch, e.g. the held-out one, to compare epochs).

  Args:
    apply_fn: from `make_combiner`.
    params: the combiner's parameters φ.
    losses: [N, T] per-example auxiliary losses.
  """
  grads = jax.grad(lambda x: jnp.sum(apply_fn(params, x)))(losses)
  return jnp.mean(grads, axis=0)
