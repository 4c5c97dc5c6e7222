"""Three estimators of the meta-gradient ∇θ2 J behind one interface.

`J(θ2) = L_pri(θ1⁺(θ2)) + λ H(θ2)` (DESIGN §1-2). Every estimator has the
signature

  estimator(problem, theta1, state1, theta2, state2, batch, alpha)
      -> (grad_theta2, MetaOutput)

and is registered by name in `ESTIMATORS`; a new one is one function, one
entry and one agreement test.
"""

from typing import Any, NamedTuple

import jax
import optax

from maxl_jax import losses
from maxl_jax.errors import UsageError
from maxl_jax.lookahead import (
  aux_focal_terms,
  generated_labels,
  lookahead,
  primary_loss_at,
)


class MetaOutput(NamedTuple):
  """What a meta step computes besides the gradient.

  Attributes:
    meta_loss: J at the current θ2.
    loss_pri_before: L_pri(θ1) (before the lookahead).
    loss_pri_after: L_pri(θ1⁺) (after the lookahead).
    entropy: H(θ2).
    theta1_grads: ∇θ1 L_train(θ1, θ2), reused by the interleaved θ1 update.
    new_state1: batch statistics of f's forward at θ1.
    new_state2: batch statistics of g's forward.
    aux_probs: [N, K] generated auxiliary labels.
    train_metrics: metrics of the L_train forward at θ1.
  """

  meta_loss: jax.Array
  loss_pri_before: jax.Array
  loss_pri_after: jax.Array
  entropy: jax.Array
  theta1_grads: Any
  new_state1: Any
  new_state2: Any
  aux_probs: jax.Array
  train_metrics: dict[str, jax.Array]


def _meta_output(probs, new_state2, lookahead_out, loss_after, entropy, lam):
  """Assembles a MetaOutput from the pieces every estimator computes."""
  _, grads1, new_state1, metrics = lookahead_out
  return MetaOutput(
    meta_loss=loss_after + lam * entropy,
    loss_pri_before=metrics['loss_pri'],
    loss_pri_after=loss_after,
    entropy=entropy,
    theta1_grads=grads1,
    new_state1=new_state1,
    new_state2=new_state2,
    aux_probs=probs,
    train_metrics=metrics,
  )


def _meta_objective(theta2, problem, theta1, state1, state2, batch, alpha):
  """`J(θ2)` with the lookahead inside; returns (J, MetaOutput)."""
  probs, new_state2 = generated_labels(problem, theta2, state2, batch)
  ahead = lookahead(problem, theta1, state1, probs, batch, alpha)
  loss_after = primary_loss_at(problem, ahead[0], state1, batch)
  entropy = losses.entropy_regularizer(probs)
  out = _meta_output(probs, new_state2, ahead, loss_after, entropy, problem.lam)
  return out.meta_loss, out


def meta_objective(problem, theta1, state1, theta2, state2, batch, alpha):
  """`J(θ2)` as a scalar (for finite-difference checks and logging)."""
  meta_loss, _ = _meta_objective(
    theta2, problem, theta1, state1, state2, batch, alpha
  )
  return meta_loss


def unrolled(problem, theta1, state1, theta2, state2, batch, alpha):
  """(a) `jax.grad` through the lookahead's own `jax.grad`: the reference."""
  grads2, out = jax.grad(_meta_objective, has_aux=True)(
    theta2, problem, theta1, state1, state2, batch, alpha
  )
  return grads2, out


def _labels_and_outer(problem, theta1, state1, theta2, state2, batch, alpha):
  """Shared part of the non-unrolled estimators.

  Computes g with its VJP, the lookahead, `v = ∇θ1 L_pri(θ1⁺)` and the
  gradient of `λ H` with respect to the generated labels.
  """
  probs, g_vjp, new_state2 = jax.vjp(
    lambda t2: generated_labels(problem, t2, state2, batch),
    theta2,
    has_aux=True,
  )
  ahead = lookahead(problem, theta1, state1, probs, batch, alpha)
  loss_after, v = jax.value_and_grad(primary_loss_at, argnums=1)(
    problem, ahead[0], state1, batch
  )
  entropy, entropy_grad = jax.value_and_grad(losses.entropy_regularizer)(probs)
  out = _meta_output(probs, new_state2, ahead, loss_after, entropy, problem.lam)
  return g_vjp, v, problem.lam * entropy_grad, out


def structured(problem, theta1, state1, theta2, state2, batch, alpha):
  """(b) Exact, without a second-order graph (DESIGN §2b).

  `∇θ2 L_pri(θ1⁺) = -(α/N) VJP_θ2(g, C)` with `C = JVP_θ1(ℓ_nk, v)`: the
  focal loss is linear in its target, so only one forward-mode pass through
  the multi-task network is needed.
  """
  g_vjp, v, entropy_cot, out = _labels_and_outer(
    problem, theta1, state1, theta2, state2, batch, alpha
  )
  _, c = jax.jvp(
    lambda t1: aux_focal_terms(problem, t1, state1, batch), (theta1,), (v,)
  )
  n = out.aux_probs.shape[0]
  (grads2,) = g_vjp(-(alpha / n) * c + entropy_cot)
  return grads2, out


def first_order(problem, theta1, state1, theta2, state2, batch, alpha):
  """(c) The original's central finite difference along v (DESIGN §2c).

  `∇θ2 L_pri(θ1⁺) ≈ -α [∇θ2 L_train(θ1+εv) - ∇θ2 L_train(θ1-εv)] / (2ε)`
  with `ε = fd_eps / ‖v‖`; unlike the original it includes λ∇H. Only L_aux
  depends on θ2 and it is linear in g, so the two gradients share one VJP.
  """
  g_vjp, v, entropy_cot, out = _labels_and_outer(
    problem, theta1, state1, theta2, state2, batch, alpha
  )
  eps = problem.fd_eps / (optax.global_norm(v) + 1e-30)
  plus = aux_focal_terms(
    problem, jax.tree.map(lambda p, d: p + eps * d, theta1, v), state1, batch
  )
  minus = aux_focal_terms(
    problem, jax.tree.map(lambda p, d: p - eps * d, theta1, v), state1, batch
  )
  n = out.aux_probs.shape[0]
  (grads2,) = g_vjp(-alpha * (plus - minus) / (2 * eps * n) + entropy_cot)
  return grads2, out


ESTIMATORS = {
  'unrolled': unrolled,
  'structured': structured,
  'first_order': first_order,
}


def get_estimator(name: str):
  """The estimator registered as `name`; a clear error for unknown names."""
  if name not in ESTIMATORS:
    raise UsageError(
      f'unknown meta-gradient method {name!r}; choose one of '
      f'{sorted(ESTIMATORS)} (config.maxl.meta_grad).'
    )
  return ESTIMATORS[name]
