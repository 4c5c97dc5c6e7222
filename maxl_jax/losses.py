"""MAXL's losses as pure functions of arrays (DESIGN §1).

The mask softmax (computed in log space), focal loss from log-probabilities
(γ = 0 is cross-entropy), the batch-mean entropy regulariser and the
multi-task loss.
"""

import jax
import jax.numpy as jnp


def _masked_log_softmax(logits, labels, mask):
  """log_softmax over each row's mask, with a finite fill outside it.

  The fill (the dtype's lowest value) underflows to probability exactly 0
  after the max subtraction, so large logits cannot overflow (the original's
  `exp(x) * mask / sum` does). It is finite rather than -inf because XLA's
  algebraic rewrites of the second-order graph can turn `-inf * 0` into NaN.
  """
  row_mask = jnp.asarray(mask)[labels]
  fill = jnp.finfo(logits.dtype).min
  return jax.nn.log_softmax(jnp.where(row_mask, logits, fill), -1), row_mask


def mask_softmax(logits, labels, mask):
  """Mask softmax `g(x, y)`: [N, K] soft labels, rows sum to 1, exact zeros
  outside the mask of each row's class."""
  log_probs, row_mask = _masked_log_softmax(logits, labels, mask)
  return jnp.where(row_mask, jnp.exp(log_probs), 0.0)


def focal_terms(log_probs, gamma):
  """Per-example, per-class focal terms `ℓ_nk = -(1 - p_nk)^γ log p_nk`.

  The focal loss is linear in its target: `ℓ(p, t) = Σ_k t_k ℓ_k`. The
  structured meta-gradient (DESIGN §2b) differentiates these terms.

  Args:
    log_probs: [N, K] log-probabilities (finite).
    gamma: focal exponent; 0 gives cross-entropy terms `-log p`.
  """
  if isinstance(gamma, (int, float)) and gamma == 0:
    return -log_probs
  return -((-jnp.expm1(log_probs)) ** gamma) * log_probs


def focal_loss(log_probs, targets, gamma):
  """Batch-mean focal loss `mean_n -Σ_k t_nk (1 - p_nk)^γ log p_nk`.

  Args:
    log_probs: [N, K] log-probabilities of the prediction.
    targets: [N, K] target distribution (one-hot or soft).
    gamma: focal exponent (2 in MAXL; 0 is cross-entropy).

  Returns:
    Scalar loss.
  """
  return jnp.mean(jnp.sum(targets * focal_terms(log_probs, gamma), axis=-1))


def entropy_regularizer(probs):
  """`H = Σ_k m_k log m_k` with `m = mean_n probs_n` (DESIGN §1).

  Minimal (-log K) when the batch-mean auxiliary distribution is uniform;
  minimising it counters the collapse of generated labels onto few classes.
  A class with `m_k = 0` contributes 0 with zero gradient (it has no example
  in the batch, so θ2 cannot move it).

  Args:
    probs: [N, K] generated auxiliary distributions.
  """
  m = jnp.mean(probs, axis=0)
  return jnp.sum(m * jnp.log(jnp.where(m > 0, m, 1.0)))


def primary_loss(primary_logits, labels, gamma, smoothing=0.0):
  """`L_pri`: focal loss of the primary head against one-hot labels.

  `smoothing` ε (a Python float, static) replaces the one-hot targets by
  `(1 - ε) onehot + ε / P` (label smoothing); 0 leaves the loss untouched.
  """
  num_classes = primary_logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes, dtype=primary_logits.dtype)
  if smoothing:
    targets = (1.0 - smoothing) * targets + smoothing / num_classes
  return focal_loss(jax.nn.log_softmax(primary_logits), targets, gamma)


def aux_loss(aux_logits, aux_targets, gamma):
  """`L_aux`: focal loss of the auxiliary head against generated labels."""
  return focal_loss(jax.nn.log_softmax(aux_logits), aux_targets, gamma)


def multi_task_loss(
  primary_logits, aux_logits, labels, aux_targets, gamma, smoothing=0.0
):
  """`L_train = L_pri + L_aux`; returns `(L_train, (L_pri, L_aux))`.

  `smoothing`: label smoothing of L_pri's targets (`primary_loss`).
  """
  loss_pri = primary_loss(primary_logits, labels, gamma, smoothing)
  loss_aux = aux_loss(aux_logits, aux_targets, gamma)
  return loss_pri + loss_aux, (loss_pri, loss_aux)
