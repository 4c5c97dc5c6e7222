"""Four estimators of the meta-gradient ∇θ2 J behind one interface.

`J(θ2) = L_pri(θ1⁺(θ2); meta_batch) + λ H(θ2)` with the lookahead
`θ1⁺ = θ1 - α ∇θ1 L_train(θ1, θ2; batch)` (DESIGN §1-2). Every estimator has
the signature

  estimator(problem, inputs: MetaInputs) -> (grad_theta2, MetaOutput)

`inputs.meta_batch` (a batch dict, any size) is where the meta objective's
primary loss is evaluated; None means `batch`, MAXL as published. `implicit`
(AuxiLearn's IFT hypergradient) needs a held-out `meta_batch`. Each is
registered by name in `ESTIMATORS` with the settings it owns (`Estimator`:
their name, whether it needs a held-out split); a new one is one
function, one entry and one agreement test, with no edit to the run
builder. `entropy_only` is a control, not an estimator of ∇J: θ2 follows
the entropy part alone. Every estimator also returns the entropy part
λ∇θ2 H on its own (`MetaOutput.entropy_grads`), so that the two parts of
θ2's gradient can be logged (`gradient_parts`) and balanced (a function of
`BALANCES`). The meta objective's primary loss is `problem.meta_loss` (a
function of `META_LOSSES`; None: the training's focal loss, as published).

With per-example weights (`problem.example_weights`) L_aux's targets are
`t_nk = w_n g_nk` and H's argument stays `g_nk` (`GeneratedLabels`). L_aux is
still linear in t, so every non-unrolled estimator pulls back two cotangents
through g: the mixed term's for t and λ∇H for g.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

from maxl_jax import inverse_hvp, losses
from maxl_jax.errors import UsageError
from maxl_jax.problem import (
  aux_focal_terms,
  generated_labels,
  lookahead,
  optimizer_lookahead,
  primary_loss_at,
  train_loss,
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
      (`OptimizerLookahead`); the other estimators do not read it.
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


def _meta_output(labels, new_model_state2, ahead, loss_after, entropy, lam, e):
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


def _one_step(problem, inputs: MetaInputs):
  """The published lookahead `ahead(targets)`: one SGD step of size α."""
  return functools.partial(
    lookahead,
    problem,
    inputs.theta1,
    inputs.model_state1,
    batch=inputs.batch,
    alpha=inputs.alpha,
  )


def _objective(problem, inputs: MetaInputs, theta2, ahead_fn=None):
  """(J(θ2), MetaOutput) for a lookahead `ahead_fn(targets)` returning
  `lookahead`'s tuple: one step (None: published) or K
  (`OptimizerLookahead`)."""
  ahead_fn = ahead_fn or _one_step(problem, inputs)
  labels, new_model_state2 = generated_labels(
    problem, theta2, inputs.model_state2, inputs.batch
  )
  ahead = ahead_fn(labels.targets)
  loss_after = meta_primary_loss(
    problem, ahead[0], inputs.model_state1, inputs.held_out_batch()
  )
  entropy = losses.entropy_regularizer(labels.probs)
  out = _meta_output(
    labels, new_model_state2, ahead, loss_after, entropy, problem.lam, None
  )
  return out.meta_loss, out


def meta_objective(problem, inputs: MetaInputs):
  """`J(θ2)` at `inputs.theta2` as a scalar (finite-difference checks)."""
  return _objective(problem, inputs, inputs.theta2)[0]


def unrolled(problem, inputs: MetaInputs):
  """(a) `jax.grad` through the lookahead's own `jax.grad`: the reference.

  λ∇θ2 H (`MetaOutput.entropy_grads`) is differentiated on its own.
  """
  grads2, out = jax.grad(
    functools.partial(_objective, problem, inputs), has_aux=True
  )(inputs.theta2)
  entropy = entropy_gradient(
    problem, inputs.theta2, inputs.model_state2, inputs.batch
  )
  return grads2, out._replace(entropy_grads=entropy)


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


def cross_entropy(logits, labels):
  """Cross-entropy, the focal loss at γ = 0: its gradient does not shrink as
  fast as the focal loss's once f fits the batch."""
  return losses.primary_loss(logits, labels, 0.0)


# `MaxlProblem.meta_loss` by name: the meta objective's primary loss
# `(primary logits [N, P], labels [N]) -> scalar`. None: the training's
# focal loss (γ), as published.
META_LOSSES = {'focal': None, 'ce': cross_entropy}


def meta_primary_loss(problem, theta1, model_state1, meta_batch):
  """The meta objective's `L_pri(θ1⁺)` with `problem.meta_loss`."""
  return primary_loss_at(
    problem, theta1, model_state1, meta_batch, problem.meta_loss
  )


def _labels_with_vjp(problem, theta2, model_state2, batch):
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


def _labels_and_outer(problem, inputs: MetaInputs):
  """Shared part of the non-unrolled estimators.

  Computes g with its VJP, the lookahead, `v = ∇θ1 L_pri(θ1⁺; meta_batch)`
  and the gradient of `λ H` with respect to the generated labels.
  """
  labels, g_vjp, new_model_state2 = _labels_with_vjp(
    problem, inputs.theta2, inputs.model_state2, inputs.batch
  )
  ahead = _one_step(problem, inputs)(labels.targets)
  loss_after, v = jax.value_and_grad(meta_primary_loss, argnums=1)(
    problem, ahead[0], inputs.model_state1, inputs.held_out_batch()
  )
  entropy, entropy_cot = _entropy_and_cotangent(problem, labels)
  e = _entropy_part(g_vjp, entropy_cot)  # λ∇θ2 H.
  out = _meta_output(
    labels, new_model_state2, ahead, loss_after, entropy, problem.lam, e
  )
  return g_vjp, v, entropy_cot, out


def _entropy_and_cotangent(problem, labels):
  """(H, λ∂H/∂g): the entropy of the labels and its cotangent, [N, K]."""
  entropy, grad = jax.value_and_grad(losses.entropy_regularizer)(labels.probs)
  return entropy, problem.lam * grad


def _entropy_part(g_vjp, entropy_cot):
  """`λ∇θ2 H` through g's VJP: the labels' cotangent alone."""
  (grads2,) = g_vjp((entropy_cot, jax.numpy.zeros_like(entropy_cot)))
  return grads2


def _mixed_grad(problem, theta1, model_state1, batch, g_vjp, w, scale, cot):
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


def structured(problem, inputs: MetaInputs):
  """(b) Exact, without a second-order graph (DESIGN §2b).

  `∇θ2 L_pri(θ1⁺) = -(α/N) VJP_θ2(g, C)` with `C = JVP_θ1(ℓ_nk, v)`: the
  focal loss is linear in its target, so only one forward-mode pass through
  the multi-task network is needed.
  """
  g_vjp, v, entropy_cot, out = _labels_and_outer(problem, inputs)
  grads2 = _mixed_grad(
    problem,
    inputs.theta1,
    inputs.model_state1,
    inputs.batch,
    g_vjp,
    v,
    inputs.alpha,
    entropy_cot,
  )
  return grads2, out


def first_order(problem, inputs: MetaInputs):
  """(c) The original's central finite difference along v (DESIGN §2c).

  `∇θ2 L_pri(θ1⁺) ≈ -α [∇θ2 L_train(θ1+εv) - ∇θ2 L_train(θ1-εv)] / (2ε)`
  with `ε = fd_eps / ‖v‖`; unlike the original it includes λ∇H. Only L_aux
  depends on θ2 and it is linear in g, so the two gradients share one VJP.
  """
  g_vjp, v, entropy_cot, out = _labels_and_outer(problem, inputs)
  eps = problem.fd_eps / (optax.tree.norm(v) + 1e-30)
  alpha = inputs.alpha

  def focal_at(move):  # ℓ_nk at θ1 moved along v.
    theta = jax.tree.map(move, inputs.theta1, v)
    return aux_focal_terms(problem, theta, inputs.model_state1, inputs.batch)

  plus = focal_at(lambda p, d: p + eps * d)
  minus = focal_at(lambda p, d: p - eps * d)
  n = out.aux_probs.shape[0]
  targets_cot = -alpha * (plus - minus) / (2 * eps * n)
  # ε follows θ1's dtype; the cotangent must have g's output dtype (float32
  # compute with float64 parameters).
  dtype = out.aux_probs.dtype
  (grads2,) = g_vjp((entropy_cot.astype(dtype), targets_cot.astype(dtype)))
  return grads2, out


# AuxiLearn's solver: Neumann series, K = 3, η = 0.1, no damping.
AUXILEARN_INVERSE = inverse_hvp.InverseHvp()


def implicit(
  problem,
  inputs: MetaInputs,
  *,
  inverse: inverse_hvp.InverseHvp = AUXILEARN_INVERSE,
):
  """(d) AuxiLearn's implicit (IFT) hypergradient (DESIGN §2d).

  `∇θ2 L_A = -∇²θ2θ1 L_T · w` with `w = (H + δI)⁻¹ ∇θ1 L_A`, where
  `L_A = L_pri(θ1; meta_batch)` (held out), `L_T = L_train(θ1, θ2; batch)`
  and `H = ∇²θ1 L_T` at the current θ1 (no lookahead: α is unused). w comes
  from forward-over-reverse HVPs (BatchNorm on batch statistics); the mixed
  term is `structured`'s with `α v` replaced by w; λ∇H is added directly.

  Args:
    inverse: the solver for w (any object with `solve(hvp_fn, g)`); bind
      it with `functools.partial`.

  Raises:
    UsageError: `meta_batch` is None (the IFT needs a held-out split).
  """
  # The IFT linearises at θ1: there is no lookahead step, α is unused.
  theta1, model_state1, theta2, model_state2, batch, _, meta_batch, _ = inputs
  check_held_out('implicit', meta_batch is not None)
  labels, g_vjp, new_model_state2 = _labels_with_vjp(
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
  entropy, entropy_cot = _entropy_and_cotangent(problem, labels)
  grads2 = _mixed_grad(
    problem, theta1, model_state1, batch, g_vjp, w, 1.0, entropy_cot
  )
  train_out = (theta1, grads1, new_model_state1, metrics)
  e = _entropy_part(g_vjp, entropy_cot)  # λ∇θ2 H.
  out = _meta_output(
    labels, new_model_state2, train_out, loss_a, entropy, problem.lam, e
  )
  return grads2, out


def entropy_only(problem, inputs: MetaInputs):
  """The `entropy_only` control: θ2 follows λ∇θ2 H alone (no meta part).

  J and the lookahead are still computed, so that the control logs the same
  meta objective as MAXL (the one it does not optimise).
  """
  out = _labels_and_outer(problem, inputs)[3]
  return out.entropy_grads, out


@dataclasses.dataclass(frozen=True)
class OptimizerLookahead:
  """∇θ2 J with a K-step lookahead: θ1⁺ is `steps` updates of θ1's own
  optimiser `tx` (momentum included) on g's labels, from θ1's optimiser
  state `opt_state1` (`problem.optimizer_lookahead`, DESIGN §2h).

  Exact: `jax.grad` through the scan of K `jax.grad`s (the unrolled
  estimator's construction; the scan's body is rematerialised). α is
  unused: the optimiser's own learning rate is the step. With
  `entropy_only`, θ2 follows λ∇θ2 H alone (the control) while J is still
  computed and logged. One step (K = 1) with plain SGD is `unrolled`.
  """

  tx: optax.GradientTransformation
  steps: int
  entropy_only: bool = False

  def objective(self, problem, inputs: MetaInputs, theta2):
    """(J(θ2), MetaOutput) with the K-step θ1⁺ from `inputs.opt_state1`."""

    def ahead(targets):
      return optimizer_lookahead(
        problem,
        inputs.theta1,
        inputs.model_state1,
        targets,
        inputs.batch,
        self.tx,
        inputs.opt_state1,
        self.steps,
      )

    return _objective(problem, inputs, theta2, ahead)

  def __call__(self, problem, inputs: MetaInputs):
    if inputs.opt_state1 is None:
      raise ValueError(
        "the K-step lookahead continues θ1's optimiser: pass its state "
        '(MetaInputs.opt_state1).'
      )
    entropy = entropy_gradient(
      problem, inputs.theta2, inputs.model_state2, inputs.batch
    )
    objective = functools.partial(self.objective, problem, inputs)
    if self.entropy_only:
      out = objective(inputs.theta2)[1]
      return entropy, out._replace(entropy_grads=entropy)
    grads2, out = jax.grad(objective, has_aux=True)(inputs.theta2)
    return grads2, out._replace(entropy_grads=entropy)


def gradient_parts(grads2, out: MetaOutput):
  """(meta part ∇θ2 L_pri(θ1⁺), entropy part λ∇θ2 H) of an estimator's
  gradient: the entropy part as computed, the meta part the rest."""
  entropy = out.entropy_grads
  return jax.tree.map(lambda g, e: g - e, grads2, entropy), entropy


def normalized(meta, entropy, *, lam: float):
  """`(m / ‖m‖, λ e / ‖e‖)`: each part scaled to unit norm and λ relative,
  so that the meta part's share of θ2's direction is 1 / (1 + λ) whatever
  the two raw norms are."""
  unit = lambda tree, scale: jax.tree.map(  # noqa: E731
    lambda x: x * (scale / (optax.tree.norm(tree) + 1e-12)), tree
  )
  return unit(meta, 1.0), unit(entropy, lam)


# How θ2's gradient combines its two parts: a transform of the parts
# `(meta, entropy, *, lam) -> (meta, entropy)`, whose sum θ2's optimiser
# takes. None ('sum'): the estimator's ∇θ2 J itself, as published.
BALANCES = {'sum': None, 'normalized': normalized}


def balance(name: str, lam: float):
  """The transform of `BALANCES[name]` with λ bound (None for 'sum')."""
  if name not in BALANCES:
    raise UsageError(f'balance = {name!r} is not one of {list(BALANCES)}.')
  transform = BALANCES[name]
  return None if transform is None else functools.partial(transform, lam=lam)


@dataclasses.dataclass(frozen=True)
class Estimator:
  """An estimator `fn` (calling the entry calls it) and what it owns:
  `held_out`, it needs a held-out meta batch; `group`, the name its
  settings go by (the run builder reads them from the config group of that
  name and passes them as plain values); `settings(fn, **values)` -> (fn
  with the settings bound, a transformation of θ2's gradient before θ2's
  optimiser, or None)."""

  fn: Callable
  held_out: bool = False
  group: str | None = None
  settings: Callable | None = None

  def __call__(self, *args, **kwargs):
    return self.fn(*args, **kwargs)


def _implicit_settings(fn, *, max_grad_norm=0.0, **solver):
  """The inverse-HVP solver (`inverse_hvp.make_solver`'s arguments) and the
  hypergradient's clip (`max_grad_norm` > 0; AuxiLearn's)."""
  bound = functools.partial(fn, inverse=inverse_hvp.make_solver(**solver))
  clip = max_grad_norm
  return bound, optax.clip_by_global_norm(clip) if clip > 0 else None


ESTIMATORS = {
  'unrolled': Estimator(unrolled),
  'structured': Estimator(structured),
  'first_order': Estimator(first_order),
  'implicit': Estimator(implicit, True, 'inverse_hvp', _implicit_settings),
  'entropy_only': Estimator(entropy_only),
}


def entry(name: str) -> Estimator:
  """The entry registered as `name`; a clear error for unknown names."""
  if name not in ESTIMATORS:
    raise UsageError(
      f'unknown meta-gradient method {name!r}; choose one of '
      f'{sorted(ESTIMATORS)}.'
    )
  return ESTIMATORS[name]


def get_estimator(name: str):
  """The estimator function registered as `name` (its settings' defaults)."""
  return entry(name).fn


def needs_held_out(name: str) -> bool:
  """Whether estimator `name` evaluates its meta objective on a held-out
  batch (the held-out rule, once)."""
  return entry(name).held_out


def check_held_out(name: str, has_held_out: bool):
  """UsageError if `name` needs a held-out batch and has none."""
  if needs_held_out(name) and not has_held_out:
    raise UsageError(
      f'meta-gradient {name!r} evaluates the primary loss on a held-out '
      'meta batch: pass one (meta_batch), e.g. from a held-out split.'
    )


def bind(name: str, **values):
  """(estimator `name` with its settings `values` bound, the
  transformation of θ2's gradient before θ2's optimiser, or None)."""
  found = entry(name)
  if found.settings is None:
    return found.fn, None
  return found.settings(found.fn, **values)
