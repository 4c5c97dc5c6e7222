"""Pure step functions: `(state, batch, *, deps) -> (state, metrics)`.

The caller binds the keyword-only dependencies with `functools.partial`
(`bind_steps`, shared by the runner and the library API) and applies
`jax.jit`. An update step returns the new state and that step's metrics
(`step_metrics`: `train/…`, `meta/…`, `signal/…`, `grad_norm`); whether a
non-finite step is applied, and the sums over an epoch, are the caller's
(`step_metrics.skip_nonfinite`, `training/carry.py`).

The other steps are pure evaluations: `(state, batch, *, deps) ->
values`, the state unchanged and not returned (`eval_step`,
`combiner_eval_step`: a test batch's sums; `drift_step`: the label
drift's sums; `cosine_step`, `combiner_weights_step`: a metrics row's
entries). They keep the `_step` name because the runner binds and jits
them as it does the updates; no update is one of them.

`alpha_schedule` is α's schedule: θ1's learning rate at θ1 step t (as
published; a variant scales it), not the loop's schedule of step kinds.

AuxiLearn's loss combiner (DESIGN §2e) has its own `combiner_*` steps on a
`CombinerState`: its multi-head network θ1 and the combiner φ.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from maxl_jax import (
  combiner_problem,
  diagnostics,
  estimators,
  inverse_hvp,
  losses,
)
from maxl_jax.problem import train_loss
from maxl_jax.step_metrics import prefixed


def _update(params, grads, opt_state, tx):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _theta1_update(state, grads, new_model_state1, tx1):
  theta1, opt_state1 = _update(state.theta1, grads, state.opt_state1, tx1)
  return state.replace(
    theta1=theta1,
    model_state1=new_model_state1,
    opt_state1=opt_state1,
    step1=state.step1 + 1,
  )


def meta_metrics(out: estimators.MetaOutput) -> dict:
  """A θ2 step's `meta/…` metrics from its estimator's output."""
  values = {
    'loss_before': out.loss_pri_before,
    'loss_after': out.loss_pri_after,
    'loss_aux': out.train_metrics['loss_aux'],
    'meta_loss': out.meta_loss,
    'entropy': out.entropy,
    **diagnostics.label_usage(out.aux_probs),
  }
  if out.aux_weights is not None:
    values['aux_weight'] = jnp.mean(out.aux_weights)
  return prefixed('meta', values)


def _theta2_update(state, grads2, out, tx2, balance, signal):
  """θ2's update and the step's metrics; with `signal` also the statistics
  of its gradient's two parts (`estimators.gradient_parts`). Without, XLA
  drops the entropy part's backward pass through g: nothing uses it.

  `balance`: None, the estimator's gradient (as published), or a transform
  of the two parts (`estimators.BALANCES`) whose sum θ2 follows.
  """
  parts = None
  if balance is not None:
    parts = balance(*estimators.gradient_parts(grads2, out))
    grads2 = jax.tree.map(jnp.add, *parts)
  elif signal:
    parts = estimators.gradient_parts(grads2, out)
  theta2, opt_state2 = _update(state.theta2, grads2, state.opt_state2, tx2)
  new = state.replace(
    theta2=theta2,
    model_state2=out.new_model_state2,
    opt_state2=opt_state2,
    step2=state.step2 + 1,
  )
  metrics = meta_metrics(out)
  if parts is not None:
    metrics.update(prefixed('signal', diagnostics.gradient_parts_stats(*parts)))
  return new, metrics


def _meta_gradient(
  state, batch, meta_batch, problem, estimator, alpha_schedule
):
  """∇θ2 J at the state's θ1, θ2 with α = `alpha_schedule(θ1's step)`.

  `meta_batch`: the held-out batch of the meta objective (None: `batch`).
  """
  inputs = estimators.MetaInputs(
    theta1=state.theta1,
    model_state1=state.model_state1,
    theta2=state.theta2,
    model_state2=state.model_state2,
    batch=batch,
    alpha=alpha_schedule(state.step1),
    meta_batch=meta_batch,
    opt_state1=state.opt_state1,
  )
  return estimator(problem, inputs)


def _targets(label_source, state, batch, problem):
  return label_source.targets(
    state.label_state, state.theta2, state.model_state2, batch, problem=problem
  )


def primary_step(state, batch, *, problem, label_source, tx1):
  """One θ1 update on `L_pri + L_aux` with the source's auxiliary targets."""
  targets = _targets(label_source, state, batch, problem)
  grads, (new_model_state1, values) = jax.grad(train_loss, 1, has_aux=True)(
    problem, state.theta1, state.model_state1, targets, batch
  )
  new = _theta1_update(state, grads, new_model_state1, tx1)
  return new, {**prefixed('train', values), 'grad_norm': optax.tree.norm(grads)}


def meta_step(
  state,
  batch,
  meta_batch=None,
  *,
  problem,
  estimator,
  tx2,
  alpha_schedule,
  balance=None,
  signal=False,
):
  """One θ2 update by the meta-gradient; θ1 and its statistics stay put.
  `signal`: also the statistics of θ2's gradient's two parts."""
  grads2, out = _meta_gradient(
    state, batch, meta_batch, problem, estimator, alpha_schedule
  )
  new, metrics = _theta2_update(state, grads2, out, tx2, balance, signal)
  return new, {**metrics, 'grad_norm': optax.tree.norm(grads2)}


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
  balance=None,
  signal=False,
):
  """A θ1 and a θ2 update from one shared lookahead on one batch.

  The lookahead's ∇θ1 L_train(θ1, θ2) is the θ1 update's gradient, so the
  θ1 step costs no extra forward or backward.
  """
  grads2, out = _meta_gradient(
    state, batch, meta_batch, problem, estimator, alpha_schedule
  )
  new = _theta1_update(state, out.theta1_grads, out.new_model_state1, tx1)
  new, metrics = _theta2_update(new, grads2, out, tx2, balance, signal)
  norm = optax.tree.norm(grads2) + optax.tree.norm(out.theta1_grads)
  train = prefixed('train', out.train_metrics)
  return new, {**train, **metrics, 'grad_norm': norm}


def bind_steps(
  *,
  problem,
  label_source,
  tx1,
  tx2,
  alpha_schedule,
  estimator,
  balance=None,
  num_fine=0,
) -> dict:
  """This module's step functions bound to their dependencies.

  The runner jits these (`training.maxl_run.make_step_fns`), the library
  API (`maxl_jax.api`) wraps them.

  Returns:
    {'primary', 'eval', ['meta', 'interleaved', 'meta+signal',
    'interleaved+signal'] (an `estimator`, θ2's gradient per `balance`;
    `+signal`: with the statistics of its parts), ['probe'] (an auxiliary
    task: the gradient cosine)}, each `(state, batch[, meta_batch]) -> ...`.
  """
  fns = {
    'primary': functools.partial(
      primary_step, problem=problem, label_source=label_source, tx1=tx1
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
      balance=balance,
    )
    interleaved = functools.partial(interleaved_step, **meta.keywords, tx1=tx1)
    for name, fn in (('meta', meta), ('interleaved', interleaved)):
      fns[name] = fn
      fns[f'{name}+signal'] = functools.partial(fn, signal=True)
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
  """Sums over the real (mask 1) examples of a test batch (an evaluation).

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
  (`diagnostics.label_drift`; an evaluation); `states` is (state, the
  state at step 0).

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
  (paper Fig. 4), a metrics row's entry (an evaluation)."""
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
  """A θ1 update on L_T(θ1, φ): (new state, its metrics)."""
  grads, (new_model_state1, values) = jax.grad(
    combiner_problem.combined_loss, 1, has_aux=True
  )(problem, state.theta1, state.phi, state.model_state1, batch)
  new = _theta1_update(state, grads, new_model_state1, tx1)
  return new, {**prefixed('train', values), 'grad_norm': optax.tree.norm(grads)}


def combiner_primary_step(state, batch, *, problem, tx1):
  """One θ1 update on L_T(θ1, φ) (`combiner_problem.combined_loss`)."""
  return _combiner_theta1(state, batch, problem, tx1)


def combiner_interleaved_step(
  state, batch, meta_batch, *, problem, tx1, tx2, inverse
):
  """A θ1 update on L_T, then a φ update at the new θ1: the implicit
  hypergradient (`inverse_hvp.hypergradient`, solver `inverse`) of L_A on
  `meta_batch`, through L_T on `batch`; `tx2` clips it first.

  Both use the batch statistics; only the θ1 update writes BatchNorm's
  running averages.
  """
  new, metrics = _combiner_theta1(state, batch, problem, tx1)

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
    inner, outer, new.theta1, new.phi, inverse
  )
  phi, opt_state_phi = _update(new.phi, hypergrad, new.opt_state_phi, tx2)
  meta = {
    'meta_loss': outer(new.theta1),
    'hypergrad_norm': optax.tree.norm(hypergrad),
  }
  new = new.replace(phi=phi, opt_state_phi=opt_state_phi, step2=new.step2 + 1)
  norm = metrics['grad_norm'] + meta['hypergrad_norm']
  return new, {**metrics, **prefixed('meta', meta), 'grad_norm': norm}


def combiner_eval_step(state, batch, *, problem):
  """Sums over the real (mask 1) examples: correct, primary CE, count (an
  evaluation)."""
  (logits, _), _ = problem.apply(
    state.theta1, state.model_state1, batch['image'], False
  )
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  return _test_sums(logits, loss, batch)


def combiner_weights_step(state, batch, *, problem):
  """{'weight/<task>': its effective weight at this batch's losses}, a
  metrics row's entries (`combiner_problem.batch_task_weights`; an
  evaluation)."""
  weights = combiner_problem.batch_task_weights(
    problem, state.theta1, state.model_state1, state.phi, batch
  )
  return {f'weight/{name}': w for name, w in weights.items()}
