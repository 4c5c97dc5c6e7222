"""The MAXL problem, the multi-task loss of θ1 and the lookahead θ1⁺.

Networks are reached only through apply functions with parameters as plain
pytrees, so any Flax model pair (with or without BatchNorm) fits:

  f_apply(theta1, state1, images, train) -> ((primary_logits, aux_logits),
                                             new_state1)
  g_apply(theta2, state2, images, train) -> (aux_logits, new_state2)

`state*` holds the non-parameter collections (e.g. {'batch_stats': ...}).
Every training-mode forward normalises with batch statistics; the forward at
θ1⁺ never writes running statistics back (DESIGN §1).
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from maxl_jax import losses

Params = Any
Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class MaxlProblem:
  """Static description of one MAXL problem (bound once, never traced).

  Attributes:
    f_apply: multi-task network apply (see module docstring).
    g_apply: label-generation network apply (None without a generator).
    mask: [P, K] bool, `hierarchy.class_mask(psi)` (None without psi).
    gamma: focal-loss exponent (2 in MAXL, 0 = cross-entropy).
    lam: weight λ of the entropy regulariser in J.
    fd_eps: numerator of the finite-difference step `ε = fd_eps / ‖v‖`.
  """

  f_apply: Callable[..., Any]
  g_apply: Callable[..., Any] | None = None
  mask: np.ndarray | None = None
  gamma: float = 2.0
  lam: float = 0.2
  fd_eps: float = 0.01


def generated_labels(problem: MaxlProblem, theta2, state2, batch: Batch):
  """`g(x, y; θ2)`: mask-softmax auxiliary labels [N, K] and new state2."""
  logits, new_state2 = problem.g_apply(theta2, state2, batch['image'], True)
  probs = losses.mask_softmax(logits, batch['label'], problem.mask)
  return probs, new_state2


def train_loss(problem: MaxlProblem, theta1, state1, aux_targets, batch):
  """`L_train(θ1) = L_pri + L_aux` for fixed auxiliary targets.

  `aux_targets=None` trains the primary task alone (the Single baseline).

  Returns:
    (L_train, (new_state1, metrics)) with metrics `loss_pri`, `loss_aux`,
    `accuracy` (primary, on this batch).
  """
  (primary_logits, aux_logits), new_state1 = problem.f_apply(
    theta1, state1, batch['image'], True
  )
  if aux_targets is None:  # Single-task training: L_train = L_pri.
    loss_pri = losses.primary_loss(
      primary_logits, batch['label'], problem.gamma
    )
    total, loss_aux = loss_pri, jnp.zeros_like(loss_pri)
  else:
    total, (loss_pri, loss_aux) = losses.multi_task_loss(
      primary_logits, aux_logits, batch['label'], aux_targets, problem.gamma
    )
  accuracy = jnp.mean(jnp.argmax(primary_logits, -1) == batch['label'])
  metrics = {'loss_pri': loss_pri, 'loss_aux': loss_aux, 'accuracy': accuracy}
  return total, (new_state1, metrics)


def sgd_step(params, grads, alpha):
  """`params - alpha * grads`, leaf by leaf."""
  return jax.tree.map(lambda p, g: p - alpha * g.astype(p.dtype), params, grads)


def lookahead(problem: MaxlProblem, theta1, state1, aux_targets, batch, alpha):
  """`θ1⁺ = θ1 - α ∇θ1 L_train(θ1, θ2)` (θ2 enters through `aux_targets`).

  Returns:
    (theta1_plus, grads1, new_state1, metrics): `grads1` is ∇θ1 L_train,
    reusable for the θ1 update of the interleaved schedule; `new_state1` the
    batch statistics of that forward (the caller decides whether to keep
    them).
  """
  grads1, (new_state1, metrics) = jax.grad(train_loss, argnums=1, has_aux=True)(
    problem, theta1, state1, aux_targets, batch
  )
  return sgd_step(theta1, grads1, alpha), grads1, new_state1, metrics


def primary_loss_at(problem: MaxlProblem, theta1, state1, batch):
  """`L_pri(θ1)` in training mode; the new batch statistics are discarded."""
  (primary_logits, _), _ = problem.f_apply(theta1, state1, batch['image'], True)
  return losses.primary_loss(primary_logits, batch['label'], problem.gamma)


def aux_focal_terms(problem: MaxlProblem, theta1, state1, batch):
  """`ℓ_nk(θ1) = -(1 - p_nk)^γ log p_nk` of the auxiliary head, [N, K]."""
  (_, aux_logits), _ = problem.f_apply(theta1, state1, batch['image'], True)
  return losses.focal_terms(jax.nn.log_softmax(aux_logits), problem.gamma)
