"""(d) AuxiLearn's implicit (IFT) hypergradient (DESIGN §2d), and its
settings: the inverse-HVP solver and the hypergradient's clip."""

import functools

import jax
import optax

from maxl_jax import inverse_hvp
from maxl_jax.errors import UsageError
from maxl_jax.estimators.base import (
  MetaInputs,
  entropy_and_cotangent,
  entropy_part,
  labels_with_vjp,
  meta_output,
  meta_primary_loss,
  mixed_grad,
)
from maxl_jax.problem import train_loss

# AuxiLearn's solver: Neumann series, K = 3, η = 0.1, no damping.
AUXILEARN_INVERSE = inverse_hvp.InverseHvp()


def held_out_error(name: str) -> UsageError:
  """The error of estimator `name` called without a held-out batch."""
  return UsageError(
    f'meta-gradient {name!r} evaluates the primary loss on a held-out '
    'meta batch: pass one (meta_batch), e.g. from a held-out split.'
  )


def implicit(
  problem,
  inputs: MetaInputs,
  *,
  inverse: inverse_hvp.InverseHvp = AUXILEARN_INVERSE,
):
  """`∇θ2 L_A = -∇²θ2θ1 L_T · w` with `w = (H + δI)⁻¹ ∇θ1 L_A`.

  `L_A = L_pri(θ1; meta_batch)` (held out), `L_T = L_train(θ1, θ2; batch)`
  and `H = ∇²θ1 L_T` at the current θ1 (no lookahead: α is unused). w comes
  from forward-over-reverse HVPs (BatchNorm on batch statistics); the mixed
  term is `structured`'s with `α v` replaced by w; λ∇H is added directly.

  Args:
    problem: the `MaxlProblem`.
    inputs: where to differentiate; `meta_batch` is required.
    inverse: the solver for w (any object with `solve(hvp_fn, g)`); bind
      it with `functools.partial`.

  Raises:
    UsageError: `meta_batch` is None (the IFT needs a held-out split).
  """
  # The IFT linearises at θ1: there is no lookahead step, α is unused.
  theta1, model_state1, theta2, model_state2, batch, _, meta_batch, _ = inputs
  if meta_batch is None:
    raise held_out_error('implicit')
  labels, g_vjp, new_model_state2 = labels_with_vjp(
    problem, theta2, model_state2, batch
  )
  # ∇θ1 L_T and its linearisation: every HVP of the solver then reuses the
  # one forward and backward pass (forward-over-reverse, batch statistics).
  grads1, hvp_fn, (new_model_state1, metrics) = jax.linearize(
    lambda t1: jax.grad(train_loss, 1, has_aux=True)(
      problem, t1, model_state1, labels.targets, batch
    ),
    theta1,
    has_aux=True,
  )
  loss_a, g = jax.value_and_grad(meta_primary_loss, argnums=1)(  # L_A.
    problem, theta1, model_state1, meta_batch
  )
  w = inverse.solve(hvp_fn, g)
  entropy, entropy_cot = entropy_and_cotangent(problem, labels)
  grads2 = mixed_grad(
    problem, theta1, model_state1, batch, g_vjp, w, 1.0, entropy_cot
  )
  train_out = (theta1, grads1, new_model_state1, metrics)
  e = entropy_part(g_vjp, entropy_cot)  # λ∇θ2 H.
  out = meta_output(
    labels, new_model_state2, train_out, loss_a, entropy, problem.lam, e
  )
  return grads2, out


# AuxiLearn's clip of the hypergradient's global norm (config.inverse_hvp's
# default too).
MAX_GRAD_NORM = 10.0


def implicit_settings(
  fn, *, max_grad_norm=MAX_GRAD_NORM, inverse=None, **solver
):
  """(`fn` with the inverse-HVP solver bound, θ2's gradient clip or None):
  the solver `inverse` (an `inverse_hvp.InverseHvp`) or one from
  `inverse_hvp.make_solver`'s arguments (none: AuxiLearn's), the clip when
  `max_grad_norm` > 0 (AuxiLearn's)."""
  if inverse is not None and solver:
    raise UsageError(
      f'implicit takes a solver (inverse) or its settings {sorted(solver)}, '
      'not both.'
    )
  if inverse is None:
    inverse = inverse_hvp.make_solver(**solver)
  bound = functools.partial(fn, inverse=inverse)
  clip = max_grad_norm
  return bound, optax.clip_by_global_norm(clip) if clip > 0 else None
