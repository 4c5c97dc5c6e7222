"""A run, built from its config and its dataset's description alone.

`build_run(config, info)` checks the config and builds the networks, the
`MaxlProblem`, the label source, the optimisers, the schedules and the
initial state's shapes: no data is loaded and nothing is trained, and no
TensorFlow is imported. Training adds data (`loop`), restoring adds a
checkpoint (`restore`), the benchmarks a synthetic batch. Every
user-fixable problem surfaces here as a `UsageError`, before anything is
written.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import optax

from maxl_jax import api, hierarchy, inverse_hvp, labels, meta_grad
from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError
from maxl_jax.networks import models
from maxl_jax.problem import MaxlProblem
from maxl_jax.training import optim, schedule
from maxl_jax.training import state as state_lib
from maxl_jax.training.mesh import jit_step

# The loop's fields, checked for every kind of run (`loop`, `combine`).
LOOP_CHOICES = {'train.on_nonfinite': ('stop', 'skip_step')}
LOOP_POSITIVE = (
  'train.epochs',
  'checkpoint.keep',
  'checkpoint.every_steps',
  'checkpoint.every_epochs',
  'log.progress_every_steps',
  'train.eval_every_epochs',
)
CHOICES = {
  'method': labels.METHODS,
  'maxl.schedule': schedule.NAMES,
  'maxl.meta_grad': tuple(meta_grad.ESTIMATORS),
  'maxl.meta_loss': api.META_LOSSES,
  'maxl.balance': meta_grad.BALANCES,
  'label_opt.name': optim.OPTIMIZERS,
  **LOOP_CHOICES,
}
POSITIVE = (*LOOP_POSITIVE, 'maxl.psi_per_class')

# What the labels know: test/<name> in metrics.jsonl, test_<name> in
# result.json (DESIGN §6).
LABEL_SCORES = ('aux_information', 'aux_recovery_nmi', 'aux_recovery_ari')
# How far g's labels moved from step 0 (runs with a generator, DESIGN §1-2).
DRIFT = 'label_drift'


def config_field(config, dotted: str):
  """(the ConfigDict that holds `dotted`, the field's name), e.g. for
  'maxl.lam': (config.maxl, 'lam'). Raises KeyError for a missing field."""
  *parents, field = dotted.split('.')
  node = config
  for part in parents:
    node = node[part]
  if field not in node:
    raise KeyError(dotted)
  return node, field


_MISSING = object()


def _lookup(config, dotted):
  """The value of `dotted`, or _MISSING."""
  try:
    node, field = config_field(config, dotted)
  except KeyError:
    return _MISSING
  return node[field]


def check_fields(config, choices: dict, positive: tuple[str, ...]):
  """Raises UsageError unless each field of `choices` holds one of its
  values and each of `positive` is >= 1.

  A field missing from the config (the config.json of a run from before
  the field existed) is skipped: the code reads it with its default.
  """
  for field, allowed in choices.items():
    value = _lookup(config, field)
    if value is not _MISSING and value not in allowed:
      raise UsageError(
        f'config.{field} = {value!r} is not one of {list(allowed)}; set '
        f'--config.{field}=<one of them>.'
      )
  for field in positive:
    value = _lookup(config, field)
    if value is not _MISSING and value < 1:
      raise UsageError(f'config.{field} must be >= 1, got {value!r}.')


def validate(config):
  """Checks the choice fields and numbers; raises UsageError."""
  check_fields(config, CHOICES, POSITIVE)
  if (
    config.model.conv_impl == 'im2col_bf16'
    and config.method == 'maxl'
    and config.maxl.meta_grad == 'unrolled'
  ):
    raise UsageError(
      "model.conv_impl='im2col_bf16' is differentiable once, but "
      "maxl.meta_grad='unrolled' differentiates twice: use "
      '--config.maxl.meta_grad=structured (or first_order), or another '
      'model.conv_impl.'
    )
  if (
    config.method == 'maxl'
    and config.maxl.meta_grad == 'implicit'
    and not config.data.meta_fraction > 0
  ):
    raise UsageError(
      "maxl.meta_grad='implicit' evaluates the primary loss on a held-out "
      'split: set --config.data.meta_fraction, e.g. 0.1.'
    )
  # `.get`: the config.json of runs older than these fields lacks them.
  example_weights = config.maxl.get('example_weights', False)
  smoothing = config.train.get('label_smoothing', 0.0)
  if config.maxl.get('lookahead_scale', 1.0) <= 0:
    raise UsageError(
      'config.maxl.lookahead_scale must be > 0, got '
      f'{config.maxl.lookahead_scale!r} (1 = the paper).'
    )
  if example_weights and config.method != 'maxl':
    raise UsageError(
      'maxl.example_weights=True weights the auxiliary loss of learnt '
      f'labels, so it needs method=maxl (got {config.method!r}); set '
      '--config.maxl.example_weights=False.'
    )
  if not 0 <= smoothing < 1:
    raise UsageError(
      f'config.train.label_smoothing must be in [0, 1), got {smoothing!r}.'
    )
  # Whether the dataset has the hierarchy that method=human or maxl.psi =
  # 'hierarchy' needs is in its DatasetInfo: make_label_source checks it.
  labels.check_psi_choice(config.maxl.get('psi', 'balanced'))


@dataclasses.dataclass(frozen=True)
class Run:
  """The static pieces of one run: everything but data and state."""

  method: str
  seed: int
  info: DatasetInfo
  f: nn.Module  # The multi-task network (θ1).
  g: nn.Module | None  # The label generator (θ2), when the source has one.
  problem: MaxlProblem
  label_source: labels.LabelSource
  tx1: optax.GradientTransformation
  tx2: optax.GradientTransformation
  alpha_schedule: optax.Schedule  # α = θ1's learning rate at θ1 step t.
  schedule: schedule.Schedule
  estimator: Any  # The meta-gradient estimator (None: θ2 does not learn).
  on_nonfinite: str  # stop | skip_step.

  @property
  def held_out(self) -> bool:
    """Meta steps take a held-out batch (config.data.meta_fraction > 0)."""
    return self.estimator is not None and self.info.num_meta > 0

  @property
  def psi(self):
    """The hierarchy [P], or None without an auxiliary task."""
    return self.label_source.psi

  def init_state(self, label_state) -> state_lib.MaxlState:
    """Step 0: θ1 and θ2 from the seed, the given label-source state."""
    return state_lib.create_state(
      jax.random.key(self.seed),
      self.f,
      self.g,
      self.tx1,
      self.tx2,
      self.info.image_shape,
      label_state,
    )

  def abstract_state(self) -> state_lib.MaxlState:
    """Shapes and dtypes of the state (no data, nothing computed)."""
    return jax.eval_shape(self.init_state, self.label_source.abstract_state())

  def jit_steps(self, mesh) -> dict:
    """`jit_steps(self, mesh)`, as the loop asks every kind of run."""
    return jit_steps(self, mesh)

  def probe_batch(self, data):
    """The fixed batch of the gradient cosine: the first training batch."""
    return data.train.batch(0, 0)

  def result_fields(self, final: dict) -> dict:
    """result.json's `test_<score>`: what the final labels know (DESIGN
    §6), where `final` (the last evaluation) has it."""
    return {
      f'test_{k}': final[f'test/{k}']
      for k in (*LABEL_SCORES, DRIFT)
      if f'test/{k}' in final
    }


def steps_per_epoch(config, info: DatasetInfo) -> int:
  """θ1 steps per epoch: full batches, capped by train.steps_per_epoch."""
  num_steps = info.num_train // config.data.batch_size
  if config.train.steps_per_epoch:
    num_steps = min(num_steps, config.train.steps_per_epoch)
  if num_steps < 1:
    raise UsageError(
      f'config.data.batch_size = {config.data.batch_size} exceeds the '
      f'{info.num_train} training examples; use a smaller batch.'
    )
  return num_steps


def build_run(config, info: DatasetInfo) -> Run:
  """Validates `config` and builds the run for the dataset `info`."""
  validate(config)
  per_epoch = steps_per_epoch(config, info)
  source = labels.make_label_source(
    config.method,
    info,
    psi_per_class=config.maxl.psi_per_class,
    seed=config.seed,
    psi_choice=config.maxl.get('psi', 'balanced'),
    random_aux_classes=config.baseline.aux_classes,
    kmeans_config=config.kmeans,
    steps_per_epoch=per_epoch,
    soft_human_eps=config.baseline.get('soft_human_eps', 0.0),
  )
  num_aux = source.num_aux
  example_weights = bool(config.maxl.get('example_weights', False))
  if num_aux:
    f, g = models.build_models(
      config.model,
      num_primary=info.num_classes,
      num_aux=num_aux,
      example_weights=example_weights,
    )
  else:
    f, g = models.build_single(config.model, num_primary=info.num_classes), None
  problem = MaxlProblem(
    f_apply=models.make_apply(f),
    g_apply=models.make_apply(g) if source.generates else None,
    mask=hierarchy.class_mask(source.psi) if num_aux else None,
    gamma=config.maxl.gamma,
    lam=config.maxl.lam,
    fd_eps=config.maxl.fd_eps,
    example_weights=example_weights,
    label_smoothing=float(config.train.get('label_smoothing', 0.0)),
    meta_gamma=api.meta_gamma(config.maxl.get('meta_loss', 'focal')),
    lookahead_scale=float(config.maxl.get('lookahead_scale', 1.0)),
    balance=config.maxl.get('balance', 'sum'),
  )
  return Run(
    method=config.method,
    seed=config.seed,
    info=info,
    f=f,
    g=g if source.generates else None,
    problem=problem,
    label_source=source,
    tx1=optim.make_optimizer(config.primary_opt, per_epoch),
    tx2=_label_optimizer(config, per_epoch),
    alpha_schedule=optim.lr_schedule(config.primary_opt, per_epoch),
    schedule=schedule.Schedule(
      config.maxl.schedule if source.learns else 'single',
      per_epoch,
      config.maxl.meta_every if source.learns else 1,
    ),
    estimator=_estimator(config) if source.learns else None,
    on_nonfinite=config.train.on_nonfinite,
  )


def implicit_inverse(implicit_config) -> inverse_hvp.InverseHvp:
  """The inverse-HVP solver of `config.implicit`."""
  ic = implicit_config
  num_steps = ic.neumann_steps if ic.solver == 'neumann' else ic.cg_steps
  return inverse_hvp.InverseHvp(
    solver=ic.solver, steps=num_steps, lr=ic.neumann_lr, damping=ic.damping
  )


def _estimator(config):
  """`config.maxl.meta_grad` (method entropy_only: its own), with
  implicit's solver bound."""
  if config.method == 'entropy_only':
    return meta_grad.entropy_only
  estimator = meta_grad.get_estimator(config.maxl.meta_grad)
  if config.maxl.meta_grad != 'implicit':
    return estimator
  return functools.partial(estimator, inverse=implicit_inverse(config.implicit))


def _label_optimizer(config, per_epoch):
  """θ2's optimiser; implicit clips its hypergradient first (AuxiLearn)."""
  opt = optim.make_optimizer(config.label_opt, per_epoch)
  clip = config.implicit.max_grad_norm
  if config.maxl.meta_grad == 'implicit' and clip > 0:
    return optax.chain(optax.clip_by_global_norm(clip), opt)
  return opt


def jit_steps(run: Run, mesh) -> dict:
  """The run's jitted steps, each `(state, global batch) -> ...`.

  Returns:
    {'primary', 'eval', ['meta', 'interleaved'] (θ2 learns), ['probe']
    (an auxiliary task: the gradient cosine)}. Update steps donate their
    state.
  """
  return make_step_fns(
    mesh=mesh,
    problem=run.problem,
    label_source=run.label_source,
    tx1=run.tx1,
    tx2=run.tx2,
    alpha_schedule=run.alpha_schedule,
    estimator=run.estimator,
    on_nonfinite=run.on_nonfinite,
    held_out=run.held_out,
    num_fine=fine_classes(run.info),
  )


def fine_classes(info: DatasetInfo) -> int:
  """F, the hidden fine classes that label recovery scores; 0 for none."""
  return info.fine_num_classes if info.fine_to_primary is not None else 0


def make_step_fns(
  *,
  mesh,
  problem,
  label_source,
  tx1,
  tx2,
  alpha_schedule,
  estimator,
  on_nonfinite,
  held_out=False,
  num_fine=0,
) -> dict:
  """`steps`' functions bound to their dependencies and jitted on `mesh`.

  The state is replicated, the batches sharded over the `data` axis. With
  `held_out`, 'meta' and 'interleaved' take a third argument: the held-out
  batch of the meta objective. 'eval' also sums the statistics of what the
  labels know (DESIGN §6), with label recovery when `num_fine` > 0.
  """

  jit = functools.partial(jit_step, mesh=mesh)
  update = functools.partial(jit, donate=True)
  meta_update = functools.partial(update, batches=2 if held_out else 1)
  # The same bound step functions as the library API's (`maxl_jax.api`).
  bound = api.bind_steps(
    problem=problem,
    label_source=label_source,
    tx1=tx1,
    tx2=tx2,
    alpha_schedule=alpha_schedule,
    estimator=estimator,
    on_nonfinite=on_nonfinite,
    num_fine=num_fine,
  )
  fns = {'primary': update(bound['primary']), 'eval': jit(bound['eval'])}
  for name in ('meta', 'interleaved'):
    if name in bound:
      fns[name] = meta_update(bound[name])
  if 'probe' in bound:
    fns['probe'] = jit(bound['probe'])
  return fns
