"""What every estimator of ∇θ2 J shares: its interface and its pieces.

`J(θ2) = L_pri(θ1⁺(θ2); meta_batch) + λ H(θ2)` with the lookahead
`θ1⁺ = θ1 - α ∇θ1 L_train(θ1, θ2; batch)` (DESIGN §1-2). An estimator is
a function `(problem, inputs: MetaInputs) -> (grad_theta2, MetaOutput)`
(`Estimator`); its settings, if any, are keyword arguments bound with
`functools.partial`. Every estimator also returns the entropy part
λ∇θ2 H on its own (`MetaOutput.entropy_grads`), so that the two parts of
θ2's gradient can be logged and balanced (`gradient_parts`).

With per-example weights (`problem.example_weights`) L_aux's targets are
`t_nk = w_n g_nk` and H's argument stays `g_nk` (`GeneratedLabels`). L_aux is
still linear in t, so every non-unrolled estimator pulls back two cotangents
through g: the mixed term's for t and λ∇H for g.
"""

import functools
from typing import Any, NamedTuple, Protocol

import jax

from maxl_jax import losses
from maxl_jax.problem import (
  aux_focal_terms,
  generated_labels,
  lookahead,
  primary_loss_at,
)


class MetaInputs(NamedTuple):
  """What an estimator differentiates at: one pytree.

  Attributes:
    theta1, model_state1: f's parameters and BatchNorm statistics.
    theta2, model_state2: g's.
    batch: the training batch of the lookahead (and of g's labels).
    alpha: the lookahead's step α (θ1's learning rate, as published).
    meta_batch: the batch of the meta objective's L_pri(θ1⁺); None: `batch`.
    opt_state1: θ1's optimiser state, which the K-step lookahead continues
      (`k_step.k_step`); the other estimators do not read it.
  """

  theta1: Any
  model_state1: Any
  theta2: Any
  model_state2: Any
  batch: dict
  alpha: Any
  meta_batch: dict | None = None
  opt_state1: Any = None

  def held_out_batch(self) -> dict:
    """The meta objective's batch: `meta_batch`, or `batch` (published)."""
    return self.batch if self.meta_batch is None else self.meta_batch


class MetaOutput(NamedTuple):
  """What a meta step computes besides the gradient.

  Attributes:
    meta_loss: J at the current θ2.
    loss_pri_before: L_pri(θ1; batch) (before the lookahead).
    loss_pri_after: L_pri(θ1⁺; meta_batch) (after the lookahead; `implicit`:
      the held-out L_A = L_pri(θ1; meta_batch)).
    entropy: H(θ2).
    theta1_grads: ∇θ1 L_train(θ1, θ2), reused by the interleaved θ1 update.
    new_model_state1: batch statistics of f's forward at θ1.
    new_model_state2: batch statistics of g's forward.
    aux_probs: [N, K] generated auxiliary labels (mask softmax, unweighted).
    train_metrics: metrics of the L_train forward at θ1.
    aux_weights: [N] per-example auxiliary weights, or None without them.
    entropy_grads: λ∇θ2 H, the entropy part of the returned gradient (its
      meta part, ∇θ2 L_pri(θ1⁺), is the rest: `gradient_parts`).
  """

  meta_loss: jax.Array
  loss_pri_before: jax.Array
  loss_pri_after: jax.Array
  entropy: jax.Array
  theta1_grads: Any
  new_model_state1: Any
  new_model_state2: Any
  aux_probs: jax.Array
  train_metrics: dict[str, jax.Array]
  aux_weights: jax.Array | None = None
  entropy_grads: Any = None


class Estimator(Protocol):
  """An estimator of ∇θ2 J: the gradient and what it computed on the way."""

  def __call__(self, problem, inputs: MetaInputs) -> tuple[Any, MetaOutput]:
    """(∇θ2 J at `inputs`, its `MetaOutput`)."""


def meta_output(labels, new_model_state2, ahead, loss_after, entropy, lam, e):
  """A MetaOutput from the pieces every estimator computes (`e`: λ∇θ2 H)."""
  _, grads1, new_model_state1, metrics = ahead
  return MetaOutput(
    meta_loss=loss_after + lam * entropy,
    loss_pri_before=metrics['loss_pri'],
    loss_pri_after=loss_after,
    entropy=entropy,
    theta1_grads=grads1,
    new_model_state1=new_model_state1,
    new_model_state2=new_model_state2,
    aux_probs=labels.probs,
    train_metrics=metrics,
    aux_weights=labels.weights,
    entropy_grads=e,
  )


def one_step(problem, inputs: MetaInputs):
  """The published lookahead `ahead(targets)`: one SGD step of size α."""
  return functools.partial(
    lookahead,
    problem,
    inputs.theta1,
    inputs.model_state1,
    batch=inputs.batch,
    alpha=inputs.alpha,
  )


def objective(problem, inputs: MetaInputs, theta2, ahead_fn=None):
  """(J(θ2), MetaOutput) for a lookahead `ahead_fn(targets)` returning
  `lookahead`'s tuple: one step (None: published) or K (`k_step`)."""
  ahead_fn = ahead_fn or one_step(problem, inputs)
  labels, new_model_state2 = generated_labels(
    problem, theta2, inputs.model_state2, inputs.batch
  )
  ahead = ahead_fn(labels.targets)
  loss_after = meta_primary_loss(
    problem, ahead[0], inputs.model_state1, inputs.held_out_batch()
  )
  entropy = losses.entropy_regularizer(labels.probs)
  out = meta_output(
    labels, new_model_state2, ahead, loss_after, entropy, problem.lam, None
  )
  return out.meta_loss, out


def meta_objective(problem, inputs: MetaInputs):
  """`J(θ2)` at `inputs.theta2` as a scalar (finite-difference checks)."""
  return objective(problem, inputs, inputs.theta2)[0]


def meta_primary_loss(problem, theta1, model_state1, meta_batch):
  """The meta objective's `L_pri(θ1⁺)` with `problem.meta_loss`."""
  return primary_loss_at(
    problem, theta1, model_state1, meta_batch, problem.meta_loss
  )


def entropy_gradient(problem, theta2, model_state2, batch):
  """`λ∇θ2 H(g(θ2))`, the entropy part of ∇θ2 J, on its own."""

  def weighted_entropy(t2):
    labels, _ = generated_labels(problem, t2, model_state2, batch)
    return problem.lam * losses.entropy_regularizer(labels.probs)

  return jax.grad(weighted_entropy)(theta2)


def lookahead_alpha(lr_schedule, scale: float = 1.0):
  """The lookahead's α by θ1 step: θ1's learning rate, as published, times
  `scale` (`1 / (1 - μ)` is how far one gradient moves θ1 in the long run
  under momentum μ; DESIGN §2g)."""
  if scale == 1:
    return lr_schedule
  return lambda step: scale * lr_schedule(step)


def labels_with_vjp(problem, theta2, model_state2, batch):
  """g's `GeneratedLabels`, the VJP to θ2 and g's new batch statistics.

  The VJP takes `(cotangent of probs, cotangent of targets)`, both [N, K]
  (without weights targets is probs and the two cotangents add up).
  """

  def probs_and_targets(t2):
    labels, new_model_state2 = generated_labels(
      problem, t2, model_state2, batch
    )
    return (labels.probs, labels.targets), (labels, new_model_state2)

  _, g_vjp, (labels, new_model_state2) = jax.vjp(
    probs_and_targets, theta2, has_aux=True
  )
  return labels, g_vjp, new_model_state2


def labels_and_outer(problem, inputs: MetaInputs):
  """Shared part of the non-unrolled estimators.

  Computes g with its VJP, the lookahead, `v = ∇θ1 L_pri(θ1⁺; meta_batch)`
  and the gradient of `λ H` with respect to the generated labels.

  Returns:
    (g_vjp, v, entropy_cot, out): `entropy_cot` is λ∂H/∂g [N, K].
  """
  labels, g_vjp, new_model_state2 = labels_with_vjp(
    problem, inputs.theta2, inputs.model_state2, inputs.batch
  )
  ahead = one_step(problem, inputs)(labels.targets)
  loss_after, v = jax.value_and_grad(meta_primary_loss, argnums=1)(
    problem, ahead[0], inputs.model_state1, inputs.held_out_batch()
  )
  entropy, entropy_cot = entropy_and_cotangent(problem, labels)
  e = entropy_part(g_vjp, entropy_cot)  # λ∇θ2 H.
  out = meta_output(
    labels, new_model_state2, ahead, loss_after, entropy, problem.lam, e
  )
  return g_vjp, v, entropy_cot, out


def entropy_and_cotangent(problem, labels):
  """(H, λ∂H/∂g): the entropy of the labels and its cotangent, [N, K]."""
  entropy, grad = jax.value_and_grad(losses.entropy_regularizer)(labels.probs)
  return entropy, problem.lam * grad


def entropy_part(g_vjp, entropy_cot):
  """`λ∇θ2 H` through g's VJP: the labels' cotangent alone."""
  (grads2,) = g_vjp((entropy_cot, jax.numpy.zeros_like(entropy_cot)))
  return grads2


def mixed_grad(problem, theta1, model_state1, batch, g_vjp, w, scale, cot):
  """`-scale ∇θ2 ⟨w, ∇θ1 L_aux(θ1, θ2)⟩` plus λ∇H, without a Hessian.

  The focal loss is linear in its target, so `⟨w, ∇θ1 L_aux⟩ =
  (1/N) Σ_nk t_nk(θ2) C_nk` with `C = JVP_θ1(ℓ_nk, w)` [N, K]: one
  forward-mode pass through the multi-task network and one VJP of g, with
  `-(scale/N) C` for the targets t and `cot` (λ∇H with respect to the
  labels, [N, K]) for the probabilities.
  """

  def focal(t1):
    return aux_focal_terms(problem, t1, model_state1, batch)

  _, c = jax.jvp(focal, (theta1,), (w,))
  n = c.shape[0]
  (grads2,) = g_vjp((cot, (-(scale / n) * c).astype(cot.dtype)))  # g's dtype.
  return grads2


def gradient_parts(grads2, out: MetaOutput):
  """(meta part ∇θ2 L_pri(θ1⁺), entropy part λ∇θ2 H) of an estimator's
  gradient: the entropy part as computed, the meta part the rest."""
  entropy = out.entropy_grads
  return jax.tree.map(lambda g, e: g - e, grads2, entropy), entropy
