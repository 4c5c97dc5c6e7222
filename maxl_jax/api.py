"""The library API: MAXL's updates for your own model, data and loop.

Each constructor returns a `Learner` of pure functions over a `MaxlState`
(a pytree): jit them yourself, loop as you like.

  learner = maxl_jax.maxl(f, g, psi, tx1, tx2, alpha=0.1)
  state = learner.init(jax.random.key(0), (32, 32, 3))
  state, m = learner.theta1_update(state, batch)   # m: this step's metrics
  state, m = learner.theta2_update(state, batch)   # MAXL's meta step
  sums = learner.evaluate(state, test_batch)       # correct, loss, count

`f` is a Flax module, Linen or NNX, called as `f(images, train)`
returning (primary logits [N, P], auxiliary logits [N, K])
(`MultiTaskNet` of `networks.models` or `networks.nnx_models`, or your
own), `g` one returning auxiliary logits [N, K] (their `LabelGenerator`),
`psi` [P] the auxiliary classes of each primary class (K = sum(psi)),
`tx1`/`tx2` optax transforms of θ1/θ2. An NNX module brings its own
initial weights (`networks.functional`).
A batch is a dict of arrays: 'image' [N, H, W, C] float, 'label' [N] int
(+ 'fine_label' for `human`; evaluation's optional 'mask' [N] marks real
examples). `maxl(..., method=...)` also gives MAXL's controls
(entropy_only, frozen); `single`, `uniform`, `human` and `fixed_targets`
train θ1 on fixed targets (no θ2 update).

One implementation: the pieces come from `assemble.assemble`, the runner's
constructor too (`training.maxl_run.build`), and every update is a step
function of `steps.py`, bound by `steps.bind_steps`, the same binding the
runner jits (`training.maxl_run.make_step_fns`). An update returns that
step's own metrics; a step whose loss or gradient is not finite is not
applied and reports `nonfinite` = 1 (stop your loop on it if you like).
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from maxl_jax import assemble, hierarchy, labels, steps
from maxl_jax.errors import UsageError
from maxl_jax.labels.base import LabelSource
from maxl_jax.labels.fixed import UniformSource, human_source
from maxl_jax.problem import MaxlProblem
from maxl_jax.state import MaxlState, create_state
from maxl_jax.step_metrics import skip_nonfinite
from maxl_jax.steps import bind_steps

Batch = dict[str, jax.Array]

__all__ = [
  'Learner',
  'MaxlState',
  'bind_steps',
  'fixed_targets',
  'human',
  'maxl',
  'single',
  'uniform',
]


class Learner(NamedTuple):
  """Pure functions of one method (an optax-like bundle; jit them).

  Attributes:
    init: `(rng, image_shape) -> MaxlState`: θ1 from f, θ2 from g (rng
      split in two, as the runner does), optimiser states, step 0.
    theta1_update: `(state, batch) -> (state, metrics)`: one θ1 step on
      L_pri + L_aux with the method's auxiliary targets. metrics:
      loss_pri, loss_aux, accuracy (this batch), grad_norm, nonfinite (1:
      the step was not applied because a loss or gradient was not finite).
    theta2_update: `(state, batch, meta_batch=None) -> (state, metrics)`:
      one θ2 step by the meta-gradient (None for fixed targets); θ1 stays
      put. metrics: loss_before, loss_after (L_pri before/after the
      lookahead), loss_aux, meta_loss (J), entropy, aux_usage, aux_entropy,
      aux_hist [K], grad_norm, nonfinite (+ aux_weight with example
      weights; + what trains g with `meta_signal`: grad_meta_norm,
      grad_entropy_norm, grad_parts_cosine, meta_share). `meta_batch`:
      the batch of the meta objective's primary loss (None: `batch`;
      `implicit` needs a held-out one).
    interleaved_update: `(state, batch, meta_batch=None) -> (state,
      metrics)`: a θ1 and a θ2 step from one shared lookahead (both groups
      of metrics; None for fixed targets).
    evaluate: `(state, batch) -> {'correct', 'loss', 'count'}`: sums over
      the batch's examples (those with mask 1 if it has a 'mask'), with
      BatchNorm's running averages. accuracy = Σcorrect / Σcount.
    problem: the `MaxlProblem` (apply functions, mask, γ, λ).
    label_source: where the θ1 step's auxiliary targets come from.
  """

  init: Callable[..., MaxlState]
  theta1_update: Callable[..., tuple[MaxlState, dict]]
  theta2_update: Callable[..., tuple[MaxlState, dict]] | None
  interleaved_update: Callable[..., tuple[MaxlState, dict]] | None
  evaluate: Callable[..., dict]
  problem: MaxlProblem
  label_source: LabelSource


# ------------------------------------------------------------- metrics ---


def _update(step):
  """A step as an update: not applied when not finite, its metrics named
  without their group (`train/loss_pri` -> `loss_pri`)."""
  guarded = skip_nonfinite(step)

  def update(state, *batches):
    new, metrics = guarded(state, *batches)
    return new, {k.split('/')[-1]: v for k, v in metrics.items()}

  return update


def _evaluate(eval_fn):
  def evaluate(state, batch):
    if 'mask' not in batch:
      batch = {**batch, 'mask': jnp.ones(batch['label'].shape, jnp.float32)}
    return eval_fn(state, batch)

  return evaluate


def _learner(f, g, tx1, parts: assemble.Assembly, *, signal) -> Learner:
  """The `Learner` of an assembly (`assemble.assemble`, the runner's too)."""
  problem, tx2 = parts.problem, parts.tx2
  bound = bind_steps(
    problem=problem,
    label_source=parts.label_source,
    tx1=tx1,
    tx2=tx2,
    alpha_schedule=parts.alpha_schedule,
    estimator=parts.estimator,
    balance=parts.balance,
  )
  # The test-time label statistics are the runner's business: plain sums.
  evaluate = functools.partial(steps.eval_step, problem=problem)

  def init(rng, image_shape: Sequence[int]) -> MaxlState:
    return create_state(rng, f, g, tx1, tx2, image_shape, {})

  learns = 'meta' in bound
  suffix = '+signal' if signal else ''
  return Learner(
    init=init,
    theta1_update=_update(bound['primary']),
    theta2_update=_update(bound['meta' + suffix]) if learns else None,
    interleaved_update=(
      _update(bound['interleaved' + suffix]) if learns else None
    ),
    evaluate=_evaluate(evaluate),
    problem=problem,
    label_source=parts.label_source,
  )


def maxl(
  f,
  g,
  psi: Sequence[int],
  tx1: optax.GradientTransformation,
  tx2: optax.GradientTransformation,
  *,
  alpha: float | Callable[[jax.Array], jax.Array],
  estimator: str | Callable = 'structured',
  inverse=None,
  max_grad_norm: float | None = None,
  method: str = 'maxl',
  lookahead_steps: int = 1,
  gamma: float = 2.0,
  lam: float = 0.2,
  example_weights: bool = False,
  label_smoothing: float = 0.0,
  fd_eps: float = 0.01,
  meta_signal: bool = True,
  meta_loss: str = 'focal',
  lookahead_scale: float = 1.0,
  balance: str = 'sum',
) -> Learner:
  """MAXL: g(θ2) generates the auxiliary labels; θ2 learns by meta steps.

  Args:
    f: the multi-task network (θ1), `f(x, train) -> (primary, aux)`.
    g: the label generator (θ2), `g(x, train) -> aux logits [N, K]` (with
      `example_weights`: `(logits, weight logits [N])`).
    psi: [P] positive ints, the auxiliary classes of each primary class.
    tx1, tx2: optax transforms of θ1 and θ2.
    alpha: the lookahead's step α: θ1's learning rate, a float or an optax
      schedule of θ1's step count (pass the schedule you gave tx1).
    estimator: the meta-gradient, a name of `meta_grad.ESTIMATORS`
      (structured, unrolled, first_order, implicit) or an estimator.
    inverse: implicit's inverse-HVP solver (`inverse_hvp.InverseHvp`);
      None = AuxiLearn's default.
    max_grad_norm: implicit's clip of θ2's gradient (global norm) before
      tx2; None = 10 (AuxiLearn's, the runner's default), 0 = no clip.
    method: 'maxl', or one of its controls (`labels.GENERATED`):
      'entropy_only' (g trained by the entropy term alone) or 'frozen' (g
      never trained; its batch statistics still move).
    lookahead_steps: K > 1: the lookahead is K steps of tx1, differentiated
      exactly (DESIGN §2h; `estimator` structured or unrolled).
    gamma: focal-loss exponent (0 = cross-entropy).
    lam: weight λ of the entropy regulariser in J.
    example_weights: g also weights each example's auxiliary loss.
    label_smoothing: ε of θ1's primary targets.
    fd_eps: finite-difference step numerator (first_order).
    meta_signal: θ2's updates also return what trains g (the two parts of
      its gradient; False saves a backward pass through g per update).
    meta_loss, lookahead_scale, balance: variants of the meta-signal
      (DESIGN §2g; the defaults are the paper's): 'focal' | 'ce' for the
      meta objective's primary loss, the lookahead's step as a multiple of
      α, 'sum' | 'normalized' for how θ2's gradient combines its meta and
      entropy parts.

  Raises:
    UsageError: a bad psi, an unknown name, a setting the estimator does
      not take (`inverse`, `max_grad_norm`: implicit's).
  """
  psi = hierarchy.validate_psi(psi)
  entry = labels.source(method)
  if not entry.generator:
    raise UsageError(
      f'method = {method!r} has fixed targets: use its own constructor; '
      f'maxl takes one of {list(labels.GENERATED)}.'
    )
  # g's sources read psi alone (`labels.generated.build`).
  source = entry.build(None, psi, seed=0, psi_choice='balanced')
  settings = {'inverse': inverse, 'max_grad_norm': max_grad_norm}
  parts = assemble.assemble(
    f,
    g,
    source,
    tx1,
    tx2,
    alpha=alpha,
    estimator=estimator,
    settings={k: v for k, v in settings.items() if v is not None},
    entropy_only=entry.entropy_only,
    lookahead_steps=lookahead_steps,
    lookahead_scale=lookahead_scale,
    gamma=gamma,
    lam=lam,
    fd_eps=fd_eps,
    example_weights=example_weights,
    label_smoothing=label_smoothing,
    meta_loss=meta_loss,
    balance=balance,
  )
  return _learner(f, g, tx1, parts, signal=meta_signal)


def _fixed(f, source, tx1, gamma, label_smoothing) -> Learner:
  """A baseline's `Learner`: fixed targets, θ2 takes no steps."""
  parts = assemble.assemble(
    f,
    None,
    source,
    tx1,
    optax.set_to_zero(),
    alpha=0.0,
    estimator=None,
    gamma=gamma,
    label_smoothing=label_smoothing,
  )
  return _learner(f, None, tx1, parts, signal=False)


def single(f, tx1, *, gamma=2.0, label_smoothing=0.0) -> Learner:
  """Single: the primary task alone (`f` may have num_aux=0)."""
  return _fixed(f, LabelSource(), tx1, gamma, label_smoothing)


def uniform(f, psi, tx1, *, gamma=2.0, label_smoothing=0.0) -> Learner:
  """Uniform: targets uniform over the psi[y] classes of the label y."""
  source = UniformSource(psi=hierarchy.validate_psi(psi))
  return _fixed(f, source, tx1, gamma, label_smoothing)


def human(
  f,
  fine_to_primary: Sequence[int],
  tx1,
  *,
  gamma=2.0,
  label_smoothing=0.0,
) -> Learner:
  """Human: a label hierarchy's fine labels as one-hot auxiliary targets.

  `fine_to_primary` [F]: the primary class of each fine class; psi[c] =
  the fine classes under c, K = F (ordered by primary class). Batches need
  'fine_label' [N] in [0, F).
  """
  fine = np.asarray(fine_to_primary, np.int64)
  source = human_source(fine, int(fine.max()) + 1)
  return _fixed(f, source, tx1, gamma, label_smoothing)


@dataclasses.dataclass(frozen=True, eq=False)
class _FunctionSource(LabelSource):
  fn: Any = None

  def targets(self, label_state, theta2, model_state2, batch, *, problem):
    return self.fn(batch)


def fixed_targets(
  f,
  psi,
  targets: Callable[[Batch], jax.Array],
  tx1,
  *,
  gamma=2.0,
  label_smoothing=0.0,
) -> Learner:
  """Your own fixed auxiliary targets: `targets(batch) -> [N, K]`
  (probabilities, K = sum(psi)), computed inside the jitted step."""
  source = _FunctionSource(psi=hierarchy.validate_psi(psi), fn=targets)
  return _fixed(f, source, tx1, gamma, label_smoothing)
