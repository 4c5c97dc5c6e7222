"""Pure step functions: `(state, batch, *, deps) -> state` (or metrics).

The caller binds the keyword-only dependencies with `functools.partial`
(`bind_steps`, shared by the runner and the library API) and applies
`jax.jit` (with donation of `state`). Metrics are accumulated in
`state.sums` on device, so a step returns nothing for the host to wait on.

`alpha_schedule` is α's schedule: θ1's learning rate at θ1 step t
(`Run.lr_schedule`), not the step kinds' `schedule.Schedule`.

AuxiLearn's loss combiner (DESIGN §2e) has its own `combiner_*` steps on
the same `MaxlState`: θ1 is its multi-head network, θ2 the combiner φ.

Every update step passes through the non-finite guard: a step whose losses
or gradient norm are not finite is not applied; with `on_nonfinite='stop'`
every later step is frozen as well (the host stops the run at its next
check), with `'skip_step'` training goes on.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from maxl_jax import (
  combiner_problem,
  diagnostics,
  inverse_hvp,
  losses,
  meta_grad,
)
from maxl_jax import step_metrics as metrics
from maxl_jax.problem import train_loss


def _update(params, grads, opt_state, tx):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _theta1_update(state, grads, new_model_state1, values, tx1):
  theta1, opt_state1 = _update(state.theta1, grads, state.opt_state1, tx1)
  return state.replace(
    theta1=theta1,
    model_state1=new_model_state1,
    opt_state1=opt_state1,
    step1=state.step1 + 1,
    sums=metrics.add_train(state.sums, values),
  )


def _theta2_update(state, grads2, out, tx2, problem):
  """θ2's update by its gradient balanced per `problem.balance`
  (`meta_grad.balanced_gradient`); the metrics log both parts."""
  grads2, parts = meta_grad.balanced_gradient(
    grads2, out, problem.balance, problem.lam
  )
  theta2, opt_state2 = _update(state.theta2, grads2, state.opt_state2, tx2)
  return state.replace(
    theta2=theta2,
    model_state2=out.new_model_state2,
    opt_state2=opt_state2,
    step2=state.step2 + 1,
    sums=metrics.add_meta(state.sums, out, parts),
  )


def _meta_gradient(
  state, batch, meta_batch, problem, estimator, alpha_schedule
):
  """∇θ2 J at the state's θ1, θ2 with α = θ1's current learning rate
  (times `problem.lookahead_scale`: 1 as published).

  `meta_batch`: the held-out batch of the meta objective (None: `batch`).
  """
  alpha = alpha_schedule(state.step1)
  if problem.lookahead_scale != 1:
    alpha = problem.lookahead_scale * alpha
  # The K-step lookahead continues θ1's own optimiser from its state.
  extra = {}
  if isinstance(estimator, meta_grad.OptimizerLookahead):
    extra['opt_state1'] = state.opt_state1
  return estimator(
    problem,
    state.theta1,
    state.model_state1,
    state.theta2,
    state.model_state2,
    batch,
    alpha,
    meta_batch,
    **extra,
  )


def _targets(label_source, state, batch, problem):
  return label_source.targets(
    state.label_state, state.theta2, state.model_state2, batch, problem=problem
  )


def primary_step(state, batch, *, problem, label_source, tx1, on_nonfinite):
  """One θ1 update on `L_pri + L_aux` with the source's auxiliary targets."""
  targets = _targets(label_source, state, batch, problem)
  grads, (new_model_state1, values) = jax.grad(train_loss, 1, has_aux=True)(
    problem, state.theta1, state.model_state1, targets, batch
  )
  new = _theta1_update(state, grads, new_model_state1, values, tx1)
  guarded = {
    'loss_pri': values['loss_pri'],
    'loss_aux': values['loss_aux'],
    'grad_norm': optax.tree.norm(grads),
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
  new = _theta2_update(state, grads2, out, tx2, problem)
  guarded = _meta_guarded(out, optax.tree.norm(grads2))
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
    state, out.theta1_grads, out.new_model_state1, out.train_metrics, tx1
  )
  new = _theta2_update(new, grads2, out, tx2, problem)
  norm = optax.tree.norm(grads2) + optax.tree.norm(out.theta1_grads)
  return metrics.guard_update(
    state, new, _meta_guarded(out, norm), on_nonfinite
  )


def bind_steps(
  *,
  problem,
  label_source,
  tx1,
  tx2,
  alpha_schedule,
  estimator,
  on_nonfinite,
  num_fine=0,
) -> dict:
  """This module's step functions bound to their dependencies.

  The runner jits these (`training.maxl_run.make_step_fns`), the library
  API (`maxl_jax.api`) wraps them.

  Returns:
    {'primary', 'eval', ['meta', 'interleaved'] (an `estimator`),
    ['probe'] (an auxiliary task: the gradient cosine)}, each
    `(state, batch[, meta_batch]) -> ...`.
  """
  fns = {
    'primary': functools.partial(
      primary_step,
      problem=problem,
      label_source=label_source,
      tx1=tx1,
      on_nonfinite=on_nonfinite,
    ),
    'eval': functools.partial(
      eval_step,
      problem=problem,
      label_source=label_source,
      num_fine=num_fine,
    ),
  }
  if estimator is not None:
    meta = functools.partial(
      meta_step,
      problem=problem,
      estimator=estimator,
      tx2=tx2,
      alpha_schedule=alpha_schedule,
      on_nonfinite=on_nonfinite,
    )
    fns['meta'] = meta
    fns['interleaved'] = functools.partial(
      interleaved_step, **meta.keywords, tx1=tx1
    )
  if label_source.num_aux:
    fns['probe'] = functools.partial(
      cosine_step, problem=problem, label_source=label_source
    )
  return fns


def _test_sums(logits, loss, batch):
  """Sums over a test batch's real (mask 1) examples: correct, loss, count."""
  correct = (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
  mask = batch['mask']
  return {
    'correct': jnp.sum(mask * correct),
    'loss': jnp.sum(mask * loss),
    'count': jnp.sum(mask),
  }


def eval_step(state, batch, *, problem, label_source=None, num_fine=0):
  """Sums over the real (mask 1) examples of a test batch.

  Always: correct, primary loss, count. With an auxiliary task, the
  sufficient statistics of what its labels know (`diagnostics.label_stats`,
  DESIGN §6) for the source's `test_targets`; with `num_fine` and
  `batch['fine_label']`, also the (argmax auxiliary, fine) contingency.
  """
  (logits, _), _ = problem.f_apply(
    state.theta1, state.model_state1, batch['image'], False
  )
  terms = losses.focal_terms(jax.nn.log_softmax(logits), problem.gamma)
  loss = jnp.take_along_axis(terms, batch['label'][:, None], -1)[:, 0]
  out = _test_sums(logits, loss, batch)
  if label_source is not None and label_source.num_aux:
    targets = label_source.test_targets(
      state.label_state,
      state.theta2,
      state.model_state2,
      batch,
      problem=problem,
    )
    fine = batch.get('fine_label') if num_fine else None
    out.update(
      diagnostics.label_stats(
        targets,
        batch['label'],
        batch['mask'],
        jnp.log(jnp.asarray(label_source.psi, jnp.float32)),
        fine,
        num_fine,
      )
    )
  return out


def drift_step(states, batch, *, problem, label_source):
  """Sums of g's label drift from step 0 over a test batch's real examples
  (`diagnostics.label_drift`); `states` is (state, the state at step 0).

  Both θ2 and step 0's θ2⁰ label with the current BatchNorm statistics, so
  the drift is that of the parameters alone (DESIGN §6): a generator whose
  θ2 never moves has drift 0 whatever its statistics did.
  """
  state, initial = states
  now, then = (
    label_source.test_targets(
      state.label_state, theta2, state.model_state2, batch, problem=problem
    )
    for theta2 in (state.theta2, initial.theta2)
  )
  return diagnostics.label_drift(now, then, batch['mask'])


def cosine_step(state, batch, *, problem, label_source):
  """{'grad_cosine': cosine of ∇ L_pri and ∇ L_aux on the shared trunk}
  (paper Fig. 4), a metrics row's entry."""
  targets = _targets(label_source, state, batch, problem)

  def part_losses(theta1):
    (pri, aux), _ = problem.f_apply(
      theta1, state.model_state1, batch['image'], True
    )
    return (
      losses.primary_loss(pri, batch['label'], problem.gamma),
      losses.aux_loss(aux, targets, problem.gamma),
    )

  _, pullback = jax.vjp(part_losses, state.theta1)
  (g_pri,) = pullback((jnp.ones(()), jnp.zeros(())))
  (g_aux,) = pullback((jnp.zeros(()), jnp.ones(())))
  return {
    'grad_cosine': diagnostics.gradient_cosine(g_pri['trunk'], g_aux['trunk'])
  }


# ------------------------------------------- AuxiLearn's loss combiner ---


def _combiner_theta1(state, batch, problem, tx1):
  """A θ1 update on L_T(θ1, φ): (new state, values, gradient norm)."""
  grads, (new_model_state1, values) = jax.grad(
    combiner_problem.combined_loss, 1, has_aux=True
  )(problem, state.theta1, state.theta2, state.model_state1, batch)
  new = _theta1_update(state, grads, new_model_state1, values, tx1)
  return new, values, optax.tree.norm(grads)


def combiner_primary_step(state, batch, *, problem, tx1, on_nonfinite):
  """One θ1 update on L_T(θ1, φ) (`combiner_problem.combined_loss`)."""
  new, values, norm = _combiner_theta1(state, batch, problem, tx1)
  guarded = {
    'loss_pri': values['loss_pri'],
    'loss_aux': values['loss_aux'],
    'grad_norm': norm,
  }
  return metrics.guard_update(state, new, guarded, on_nonfinite)


def combiner_interleaved_step(
  state, batch, meta_batch, *, problem, tx1, tx2, inverse, on_nonfinite
):
  """A θ1 update on L_T, then a φ update at the new θ1: the implicit
  hypergradient (`inverse_hvp.hypergradient`, solver `inverse`) of L_A on
  `meta_batch`, through L_T on `batch`; `tx2` clips it first.

  Both use the batch statistics; only the θ1 update writes BatchNorm's
  running averages.
  """
  new, values, norm = _combiner_theta1(state, batch, problem, tx1)

  def inner(theta1, phi):
    loss, _ = combiner_problem.combined_loss(
      problem, theta1, phi, new.model_state1, batch
    )
    return loss

  def outer(theta1):
    return combiner_problem.held_out_loss(
      problem, theta1, new.model_state1, meta_batch
    )

  hypergrad = inverse_hvp.hypergradient(
    inner, outer, new.theta1, new.theta2, inverse
  )
  theta2, opt_state2 = _update(new.theta2, hypergrad, new.opt_state2, tx2)
  meta = {
    'meta_loss': outer(new.theta1),
    'hypergrad_norm': optax.tree.norm(hypergrad),
  }
  new = new.replace(
    theta2=theta2,
    opt_state2=opt_state2,
    step2=new.step2 + 1,
    sums=metrics.add(new.sums, 'meta', meta),
  )
  guarded = {
    'loss_pri': values['loss_pri'],
    'loss_aux': values['loss_aux'],
    'meta_loss': meta['meta_loss'],
    'grad_norm': norm + meta['hypergrad_norm'],
  }
  return metrics.guard_update(state, new, guarded, on_nonfinite)


def combiner_eval_step(state, batch, *, problem):
  """Sums over the real (mask 1) examples: correct, primary CE, count."""
  (logits, _), _ = problem.apply(
    state.theta1, state.model_state1, batch['image'], False
  )
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  return _test_sums(logits, loss, batch)


def combiner_weights_step(state, batch, *, problem):
  """{'weight/<task>': its effective weight at this batch's losses}, a
  metrics row's entries (`combiner_problem.batch_task_weights`)."""
  weights = combiner_problem.batch_task_weights(
    problem, state.theta1, state.model_state1, state.theta2, batch
  )
  return {f'weight/{name}': w for name, w in weights.items()}
