"""A method's pieces from plain typed values, built in one place.

The library API (`api.maxl` and the baselines) and the run builder
(`training.maxl_run.build`) both call `assemble`: the same arguments give
the same `MaxlProblem`, α's schedule, estimator, balance and θ2
transformation, and the same `UsageError` for a bad one (DESIGN §7, §8).
The runner adds only what belongs to its loop (the schedule of step
kinds, the carry, checkpoints, sharding, the label source's own state).
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from maxl_jax import estimators, hierarchy
from maxl_jax.errors import UsageError
from maxl_jax.labels.base import LabelSource
from maxl_jax.networks import functional
from maxl_jax.problem import MaxlProblem

# The estimators the K-step lookahead differentiates exactly (DESIGN §2h).
K_STEP_ESTIMATORS = ('structured', 'unrolled')


class Assembly(NamedTuple):
  """What `steps.bind_steps` takes besides θ1's optimiser.

  Attributes:
    problem: the `MaxlProblem` (apply functions, mask, γ, λ, meta loss).
    label_source: where the θ1 step's auxiliary targets come from.
    tx2: θ2's optimiser after the estimator's own gradient transformation
      (implicit's clip); zero updates for a source that does not learn.
    alpha_schedule: the lookahead's α by θ1 step (its scale in it).
    estimator: ∇θ2 J with its settings bound; None: θ2 takes no steps.
    balance: θ2's gradient from its two parts (None: their sum).
  """

  problem: MaxlProblem
  label_source: LabelSource
  tx2: optax.GradientTransformation
  alpha_schedule: Callable
  estimator: Any
  balance: Any


def alpha_schedule(alpha) -> Callable:
  """α as a schedule of θ1's step: `alpha` if callable, else constant."""
  if callable(alpha):
    return alpha
  return lambda step: jnp.asarray(alpha, jnp.float32)


def assemble(
  f,
  g,
  label_source: LabelSource,
  tx1: optax.GradientTransformation,
  tx2: optax.GradientTransformation,
  *,
  alpha,
  estimator: str | Callable | None = 'structured',
  settings: Mapping[str, Any] | None = None,
  entropy_only: bool = False,
  lookahead_steps: int = 1,
  lookahead_scale: float = 1.0,
  gamma: float = 2.0,
  lam: float = 0.2,
  fd_eps: float = 0.01,
  example_weights: bool = False,
  label_smoothing: float = 0.0,
  meta_loss: str = 'focal',
  balance: str = 'sum',
) -> Assembly:
  """The pieces of a method (see `api.maxl` for the arguments' meaning).

  Args:
    f, g: Flax modules, Linen or NNX (`g` is used only when the source
      generates its targets).
    label_source: the method's source (`labels.SOURCES`, or the API's).
    tx1, tx2: θ1's and θ2's optimisers (tx1: the K-step lookahead's).
    alpha: θ1's learning rate, a float or a schedule of θ1's step.
    estimator: a name of `estimators.ESTIMATORS`, an estimator, or None.
    settings: the estimator's settings (`estimators.bind`), e.g.
      implicit's solver and `max_grad_norm`.
    entropy_only: θ2 follows the entropy part alone (the controls).
    lookahead_steps: K > 1: the K-step lookahead through `tx1`.
    lookahead_scale, gamma, lam, fd_eps, example_weights, label_smoothing,
      meta_loss, balance: the problem's and the meta-signal's settings.

  Raises:
    UsageError: an unknown name, a setting the estimator does not take, a
      K-step lookahead with another estimator or scale.
  """
  if meta_loss not in estimators.META_LOSSES:
    raise UsageError(
      f'meta_loss = {meta_loss!r} is not one of {list(estimators.META_LOSSES)}.'
    )
  if not lookahead_scale > 0:
    raise UsageError(f'lookahead_scale must be > 0, got {lookahead_scale!r}.')
  problem = MaxlProblem(
    f_apply=functional.make_apply(f),
    g_apply=functional.make_apply(g) if label_source.generates else None,
    mask=(
      hierarchy.class_mask(label_source.psi) if label_source.num_aux else None
    ),
    gamma=gamma,
    lam=lam,
    fd_eps=fd_eps,
    example_weights=bool(example_weights),
    label_smoothing=float(label_smoothing),
    meta_loss=estimators.META_LOSSES[meta_loss],
  )
  fn, grad_tx = _estimator(
    estimator,
    dict(settings or {}),
    tx1=tx1,
    steps=lookahead_steps,
    scale=lookahead_scale,
    entropy_only=entropy_only,
  )
  if not label_source.learns:
    tx2 = optax.set_to_zero()
  elif grad_tx is not None:
    tx2 = optax.chain(grad_tx, tx2)
  return Assembly(
    problem=problem,
    label_source=label_source,
    tx2=tx2,
    alpha_schedule=estimators.lookahead_alpha(
      alpha_schedule(alpha), float(lookahead_scale)
    ),
    estimator=fn if label_source.generates else None,
    balance=estimators.balance(balance, lam),
  )


def _estimator(name, settings, *, tx1, steps, scale, entropy_only):
  """(estimator, θ2's gradient transformation or None): `name` with its
  `settings` bound (`estimators.bind`), the entropy part alone for the
  controls; with `steps` > 1 the K-step lookahead through `tx1`."""
  if not isinstance(steps, int) or steps < 1:
    raise UsageError(
      f'lookahead_steps must be an int >= 1, got {steps!r} (1 = the paper).'
    )
  if name is None:
    return None, None
  if steps > 1:
    if name not in K_STEP_ESTIMATORS or scale != 1 or settings:
      raise UsageError(
        f"lookahead_steps = {steps} differentiates exactly through θ1's "
        f'own optimiser: use an estimator of {list(K_STEP_ESTIMATORS)} '
        'without settings and lookahead_scale = 1.'
      )
    bound = functools.partial(
      estimators.k_step, tx=tx1, steps=steps, entropy_only=entropy_only
    )
    return bound, None
  if callable(name):
    if settings:
      raise UsageError(
        f'settings {sorted(settings)} are for a registered estimator, '
        'not a function: bind them into it.'
      )
    fn, grad_tx = name, None
  else:
    fn, grad_tx = estimators.bind(name, **settings)
  return (estimators.entropy_only if entropy_only else fn), grad_tx
