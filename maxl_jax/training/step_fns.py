"""Pure step functions: `(state, batch, *, deps) -> state` (or metrics).

The caller binds the keyword-only dependencies with `functools.partial` and
applies `jax.jit` (with donation of `state`). Metrics are accumulated in
`state.sums` on device, so a step returns nothing for the host to wait on.

Every update step passes through the non-finite guard: a step whose losses
or gradient norm are not finite is not applied; with `on_nonfinite='stop'`
every later step is frozen as well (the host stops the run at its next
check), with `'skip_step'` training goes on.
"""

import jax
import jax.numpy as jnp
import optax

from maxl_jax import diagnostics, losses
from maxl_jax.problem import train_loss
from maxl_jax.training import metrics


def _update(params, grads, opt_state, tx):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _theta1_update(state, grads, new_state1, values, tx1):
  theta1, opt_state1 = _update(state.theta1, grads, state.opt_state1, tx1)
  return state.replace(
    theta1=theta1,
    state1=new_state1,
    opt_state1=opt_state1,
    step1=state.step1 + 1,
    sums=metrics.add_train(state.sums, values),
  )


def _theta2_update(state, grads2, out, tx2):
  theta2, opt_state2 = _update(state.theta2, grads2, state.opt_state2, tx2)
  return state.replace(
    theta2=theta2,
    state2=out.new_state2,
    opt_state2=opt_state2,
    step2=state.step2 + 1,
    sums=metrics.add_meta(state.sums, out),
  )


def _meta_gradient(state, batch, meta_batch, problem, estimator, schedule):
  """∇θ2 J at the state's θ1, θ2 with α = θ1's current learning rate.

  `meta_batch`: the held-out batch of the meta objective (None: `batch`).
  """
  alpha = schedule(state.step1)
  return estimator(
    problem,
    state.theta1,
    state.state1,
    state.theta2,
    state.state2,
    batch,
    alpha,
    meta_batch,
  )


def _targets(label_source, state, batch, problem):
  return label_source.targets(
    state.label_state, state.theta2, state.state2, batch, problem=problem
  )


def primary_step(state, batch, *, problem, label_source, tx1, on_nonfinite):
  """One θ1 update on `L_pri + L_aux` with the source's auxiliary targets."""
  targets = _targets(label_source, state, batch, problem)
  grads, (new_state1, values) = jax.grad(train_loss, 1, has_aux=True)(
    problem, state.theta1, state.state1, targets, batch
  )
  new = _theta1_update(state, grads, new_state1, values, tx1)
  guarded = {
    'loss_pri': values['loss_pri'],
    'loss_aux': values['loss_aux'],
    'grad_norm': optax.global_norm(grads),
  }
  return metrics.guard_update(state, new, guarded, on_nonfinite)


def _meta_guarded(out, grad_norm):
  return {
    'loss_pri': out.loss_pri_before,
    'loss_aux': out.train_metrics['loss_aux'],
    'meta_loss': out.meta_loss,
    'grad_norm': grad_norm,
  }


def meta_step(
  state,
  batch,
  meta_batch=None,
  *,
  problem,
  estimator,
  tx2,
  alpha_schedule,
  on_nonfinite,
):
  """One θ2 update by the meta-gradient; θ1 and its statistics stay put."""
  grads2, out = _meta_gradient(
    state, batch, meta_batch, problem, estimator, alpha_schedule
  )
  new = _theta2_update(state, grads2, out, tx2)
  guarded = _meta_guarded(out, optax.global_norm(grads2))
  return metrics.guard_update(state, new, guarded, on_nonfinite)


def interleaved_step(
  state,
  batch,
  meta_batch=None,
  *,
  problem,
  estimator,
  tx1,
  tx2,
  alpha_schedule,
  on_nonfinite,
):
  """A θ1 and a θ2 update from one shared lookahead on one batch.

  The lookahead's ∇θ1 L_train(θ1, θ2) is the θ1 update's gradient, so the
  θ1 step costs no extra forward or backward.
  """
  grads2, out = _meta_gradient(
    state, batch, meta_batch, problem, estimator, alpha_schedule
  )
  new = _theta1_update(
    state, out.theta1_grads, out.new_state1, out.train_metrics, tx1
  )
  new = _theta2_update(new, grads2, out, tx2)
  norm = optax.global_norm(grads2) + optax.global_norm(out.theta1_grads)
  return metrics.guard_update(
    state, new, _meta_guarded(out, norm), on_nonfinite
  )


def eval_step(state, batch, *, problem):
  """Sums over the real (mask 1) examples: correct, primary loss, count."""
  (logits, _), _ = problem.f_apply(
    state.theta1, state.state1, batch['image'], False
  )
  terms = losses.focal_terms(jax.nn.log_softmax(logits), problem.gamma)
  loss = jnp.take_along_axis(terms, batch['label'][:, None], -1)[:, 0]
  correct = (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
  mask = batch['mask']
  return {
    'correct': jnp.sum(mask * correct),
    'loss': jnp.sum(mask * loss),
    'count': jnp.sum(mask),
  }


def cosine_step(state, batch, *, problem, label_source):
  """Cosine of ∇ L_pri and ∇ L_aux on the shared trunk (paper Fig. 4)."""
  targets = _targets(label_source, state, batch, problem)

  def part_losses(theta1):
    (pri, aux), _ = problem.f_apply(theta1, state.state1, batch['image'], True)
    return (
      losses.primary_loss(pri, batch['label'], problem.gamma),
      losses.aux_loss(aux, targets, problem.gamma),
    )

  _, pullback = jax.vjp(part_losses, state.theta1)
  (g_pri,) = pullback((jnp.ones(()), jnp.zeros(())))
  (g_aux,) = pullback((jnp.zeros(()), jnp.ones(())))
  return diagnostics.gradient_cosine(g_pri['trunk'], g_aux['trunk'])
