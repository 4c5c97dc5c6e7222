"""The MAXL problem, the multi-task loss of θ1 and the lookahead θ1⁺.

Networks are reached only through apply functions with parameters as plain
pytrees, so any Flax model pair (with or without BatchNorm) fits:

  f_apply(theta1, model_state1, images, train)
      -> ((primary_logits, aux_logits), new_model_state1)
  g_apply(theta2, model_state2, images, train)
      -> (aux_logits, new_model_state2)

With per-example auxiliary weights (`example_weights`), g_apply returns
`((aux_logits [N, K], weight_logits [N]), new_model_state2)` instead.

`model_state*` holds the non-parameter collections (e.g. {'batch_stats': ...}).
Every training-mode forward normalises with batch statistics; the forward at
θ1⁺ never writes running statistics back (DESIGN §1).
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

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
    example_weights: g also outputs a weight `w_n ∈ (0, 1)` per example that
      scales its auxiliary loss (`generated_labels`).
    label_smoothing: ε of the primary targets `(1 - ε) onehot + ε / P` in
      the θ1 step's L_train (and so in the lookahead); the meta objective's
      L_pri(θ1⁺) and evaluation use plain one-hot targets.
    meta_loss: the meta objective's L_pri(θ1⁺), `(primary logits,
      labels) -> scalar` (`estimators.META_LOSSES`); None: the focal loss
      with `gamma`, as published.
  """

  f_apply: Callable[..., Any]
  g_apply: Callable[..., Any] | None = None
  mask: np.ndarray | None = None
  gamma: float = 2.0
  lam: float = 0.2
  fd_eps: float = 0.01
  example_weights: bool = False
  label_smoothing: float = 0.0
  meta_loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None


class GeneratedLabels(NamedTuple):
  """What g produces for a batch.

  Attributes:
    probs: [N, K] mask-softmax labels `g_nk`: the entropy regulariser's
      argument (H never sees the weights).
    targets: [N, K] L_aux's targets `w_n g_nk`. The focal loss is linear in
      its target, so `mean_n w_n ℓ(p_n, g_n) = mean_n ℓ(p_n, w_n g_n)`;
      without weights this is `probs` itself.
    weights: [N] `w_n`, or None without weights.
  """

  probs: jax.Array
  targets: jax.Array
  weights: jax.Array | None = None


def split_generator_outputs(problem: MaxlProblem, outputs):
  """g_apply's outputs -> (label logits [N, K], weight logits [N] or None)."""
  if problem.example_weights:
    return outputs
  return outputs, None


def generated_labels(problem: MaxlProblem, theta2, model_state2, batch: Batch):
  """`g(x, y; θ2)`: its `GeneratedLabels` and the new model_state2."""
  outputs, new_model_state2 = problem.g_apply(
    theta2, model_state2, batch['image'], True
  )
  logits, weight_logits = split_generator_outputs(problem, outputs)
  probs = losses.mask_softmax(logits, batch['label'], problem.mask)
  if weight_logits is None:
    return GeneratedLabels(probs, probs), new_model_state2
  weights = jax.nn.sigmoid(weight_logits).astype(probs.dtype)
  targets = weights[:, None] * probs
  return GeneratedLabels(probs, targets, weights), new_model_state2


def train_loss(problem: MaxlProblem, theta1, model_state1, aux_targets, batch):
  """`L_train(θ1) = L_pri + L_aux` for fixed auxiliary targets.

  `aux_targets=None` trains the primary task alone (the Single baseline).
  L_pri uses `problem.label_smoothing`.

  Returns:
    (L_train, (new_model_state1, metrics)) with metrics `loss_pri` (smoothed, as
    trained), `loss_aux`, `accuracy` (primary, on this batch).
  """
  (primary_logits, aux_logits), new_model_state1 = problem.f_apply(
    theta1, model_state1, batch['image'], True
  )
  smoothing = problem.label_smoothing
  if aux_targets is None:  # Single-task training: L_train = L_pri.
    loss_pri = losses.primary_loss(
      primary_logits, batch['label'], problem.gamma, smoothing
    )
    total, loss_aux = loss_pri, jnp.zeros_like(loss_pri)
  else:
    total, (loss_pri, loss_aux) = losses.multi_task_loss(
      primary_logits,
      aux_logits,
      batch['label'],
      aux_targets,
      problem.gamma,
      smoothing,
    )
  accuracy = jnp.mean(jnp.argmax(primary_logits, -1) == batch['label'])
  metrics = {'loss_pri': loss_pri, 'loss_aux': loss_aux, 'accuracy': accuracy}
  return total, (new_model_state1, metrics)


def sgd_step(params, grads, alpha):
  """`params - alpha * grads`, leaf by leaf."""
  return jax.tree.map(lambda p, g: p - alpha * g.astype(p.dtype), params, grads)


def lookahead(
  problem: MaxlProblem, theta1, model_state1, aux_targets, batch, alpha
):
  """`θ1⁺ = θ1 - α ∇θ1 L_train(θ1, θ2)` (θ2 enters through `aux_targets`).

  Returns:
    (theta1_plus, grads1, new_model_state1, metrics): `grads1` is
    ∇θ1 L_train, reusable for the θ1 update of the interleaved schedule;
    `new_model_state1` the batch statistics of that forward (the caller
    decides whether to keep them).
  """
  grads1, (new_model_state1, metrics) = jax.grad(
    train_loss, argnums=1, has_aux=True
  )(problem, theta1, model_state1, aux_targets, batch)
  return sgd_step(theta1, grads1, alpha), grads1, new_model_state1, metrics


def optimizer_lookahead(
  problem: MaxlProblem,
  theta1,
  model_state1,
  aux_targets,
  batch,
  tx,
  opt_state,
  steps: int,
):
  """θ1⁺ after `steps` updates of θ1's own optimiser `tx` from `opt_state`
  (momentum, weight decay and learning-rate schedule included), each on
  `L_train(·, θ2; batch)`: the K-step lookahead (DESIGN §2h).

  The first step is outside the scan so that its gradient and statistics
  are returned as `lookahead`'s are; the other `steps - 1` run in a
  `lax.scan` whose body is rematerialised (`jax.checkpoint`), so that
  differentiating through it keeps one θ1 per step, not every activation.

  Returns:
    (theta1_plus, grads1, new_model_state1, metrics) as `lookahead`.
  """

  def grads_at(theta):
    return jax.grad(train_loss, argnums=1, has_aux=True)(
      problem, theta, model_state1, aux_targets, batch
    )

  def update(theta, opt, grads):
    updates, opt = tx.update(grads, opt, theta)
    return optax.apply_updates(theta, updates), opt

  grads1, (new_model_state1, metrics) = grads_at(theta1)
  carry = update(theta1, opt_state, grads1)

  @jax.checkpoint
  def body(carry, _):
    theta, opt = carry
    grads, _ = grads_at(theta)
    return update(theta, opt, grads), None

  (theta, _), _ = jax.lax.scan(body, carry, None, length=steps - 1)
  return theta, grads1, new_model_state1, metrics


def primary_loss_at(
  problem: MaxlProblem, theta1, model_state1, batch, loss=None
):
  """`L_pri(θ1)` in training mode; the new batch statistics are discarded.

  The meta objective's primary loss: one-hot targets, never smoothed;
  `loss(logits, labels)`, or None: the focal loss with `problem.gamma`.
  """
  (primary_logits, _), _ = problem.f_apply(
    theta1, model_state1, batch['image'], True
  )
  if loss is not None:
    return loss(primary_logits, batch['label'])
  return losses.primary_loss(primary_logits, batch['label'], problem.gamma)


def aux_focal_terms(problem: MaxlProblem, theta1, model_state1, batch):
  """`ℓ_nk(θ1) = -(1 - p_nk)^γ log p_nk` of the auxiliary head, [N, K]."""
  (_, aux_logits), _ = problem.f_apply(
    theta1, model_state1, batch['image'], True
  )
  return losses.focal_terms(jax.nn.log_softmax(aux_logits), problem.gamma)
