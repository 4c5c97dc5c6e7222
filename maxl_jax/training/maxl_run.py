"""MAXL's run (or a baseline's: `config.method`), from its config and its
dataset's description alone.

`build(config, info)` builds the `MaxlRun` (a `protocol.Run`): the
networks, the `MaxlProblem`, the label source, the optimisers, the
schedules and the initial state's shapes: no data is loaded and nothing is
trained, and no TensorFlow is imported; `maxl_checks.check_config` checks
MAXL's fields first (`contract.build_run` calls both). Training adds data
(`loop`), restoring adds a checkpoint (`restore`), the benchmarks a
synthetic batch. Every user-fixable problem surfaces here as a
`UsageError`, before anything is written.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import optax

from maxl_jax import assemble, labels
from maxl_jax import state as state_lib
from maxl_jax import steps as steps_lib
from maxl_jax.data.info import DatasetInfo
from maxl_jax.networks import models
from maxl_jax.problem import MaxlProblem
from maxl_jax.training import carry, optim, schedule
from maxl_jax.training.config_fields import steps_per_epoch
from maxl_jax.training.mesh import jit_step

# What the labels know: test/<name> in metrics.jsonl, test_<name> in
# result.json (DESIGN §6).
LABEL_SCORE_KEYS = ('aux_information', 'aux_recovery_nmi', 'aux_recovery_ari')
# How far g's labels moved from step 0 (runs with a generator, DESIGN §1-2).
DRIFT = ('label_drift', 'param_drift')


@dataclasses.dataclass(frozen=True)
class MaxlRun:
  """The static pieces of a MAXL or baseline run (`protocol.Run`)."""

  method: str
  seed: int
  info: DatasetInfo
  f: nn.Module  # The multi-task network (θ1).
  g: nn.Module | None  # The label generator (θ2), when the source has one.
  problem: MaxlProblem
  label_source: labels.LabelSource
  tx1: optax.GradientTransformation
  tx2: optax.GradientTransformation
  lr_schedule: optax.Schedule  # θ1's learning rate at θ1 step t.
  alpha_schedule: optax.Schedule  # The lookahead's α (lr, times its scale).
  schedule: schedule.Schedule
  estimator: Any  # The meta-gradient estimator (None: θ2 does not learn).
  balance: Any  # θ2's gradient from its parts (None: the sum, published).
  on_nonfinite: str  # stop | skip_step.

  @property
  def held_out(self) -> bool:
    """Meta steps take a held-out batch (config.data.meta_fraction > 0)."""
    return self.estimator is not None and self.info.num_meta > 0

  @property
  def psi(self):
    """The hierarchy [P], or None without an auxiliary task."""
    return self.label_source.psi

  def scoring(self) -> dict:
    """What the labels know is scored against ψ and the fine classes."""
    return {'psi': self.psi, 'fine_to_primary': self.info.fine_to_primary}

  def init_label_state(self, images):
    """The label source's step-0 state (K-Means trains here)."""
    return self.label_source.init_state(images)

  def refresh(self, state, step: int, images):
    """The state after global step `step`, its label source refreshed."""
    label_state = self.label_source.refresh(state.label_state, step, images)
    return state.replace(label_state=label_state)

  def digested(self, state) -> tuple:
    """(θ1, θ2)."""
    return state.theta1, state.theta2

  def create_state(self, label_state) -> state_lib.MaxlState:
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

  def state_shapes(self) -> state_lib.MaxlState:
    """Shapes and dtypes of the state (no data, nothing computed)."""
    return jax.eval_shape(self.create_state, self.label_source.abstract_state())

  def zero_sums(self) -> carry.Sums:
    """The loop's metric sums at the start of an epoch."""
    num_aux = self.g.num_aux if self.g else getattr(self.f, 'num_aux', 0)
    aux_weight = getattr(self.g, 'example_weights', False)
    return carry.zero_sums(num_aux, aux_weight)

  def jit_steps(self, mesh) -> dict:
    """`jit_steps(self, mesh)`, as the loop asks every kind of run."""
    return jit_steps(self, mesh)

  def probe_batch(self, data):
    """The fixed batch of the gradient cosine: the first training batch."""
    return data.train.batch(0, 0)

  def drift_step(self):
    """The label-drift probe's step of a run with a generator, else None."""
    if self.g is None:
      return None
    return functools.partial(
      steps_lib.drift_step, problem=self.problem, label_source=self.label_source
    )

  def result_fields(self, final: dict) -> dict:
    """result.json's `test_<score>`: what the final labels know (DESIGN
    §6), where `final` (the last evaluation) has it."""
    return {
      f'test_{k}': final[f'test/{k}']
      for k in (*LABEL_SCORE_KEYS, *DRIFT)
      if f'test/{k}' in final
    }


def build(config, info: DatasetInfo) -> MaxlRun:
  """The run of `config.method` for the dataset `info` (config checked by
  `contract.build_run`).

  The config is read here, once, into plain values; the layers below take
  those (θ1's and θ2's optimisers, the label source, the networks), and
  `assemble.assemble`, the library API's constructor too, makes the
  problem, α's schedule, the estimator, the balance and θ2's transformation
  from them. The rest is the loop's: the schedule of step kinds.
  """
  method, mc = config.method, config.maxl
  per_epoch = steps_per_epoch(config, info)
  tx1 = optim.make_optimizer(config.primary_opt, per_epoch)
  lr_schedule = optim.lr_schedule(config.primary_opt, per_epoch)
  opt2 = optim.make_optimizer(
    config.label_opt, per_epoch, config.label_opt.name
  )
  source = labels.make_label_source(
    method,
    info,
    psi_per_class=mc.psi_per_class,
    seed=config.seed,
    psi_choice=mc.psi,
    **source_options(config, per_epoch),
  )
  # g takes θ2 steps (maxl and its controls). `frozen`'s have a zero update:
  # its g's statistics refresh as MAXL's do, its parameters never move
  # (DESIGN §6).
  steps2 = source.generates
  run_schedule = schedule.Schedule(
    mc.schedule if steps2 else 'single',
    per_epoch,
    mc.meta_every if steps2 else 1,
  )
  spec = models.ModelSpec(**config.model)
  if source.num_aux:
    f, g = models.build_models(
      spec,
      num_primary=info.num_classes,
      num_aux=source.num_aux,
      example_weights=bool(mc.example_weights),
    )
  else:
    f, g = models.build_single(spec, num_primary=info.num_classes), None
  # The estimator's settings from its config group (`SETTINGS_GROUPS`).
  group = SETTINGS_GROUPS.get(mc.meta_grad)
  parts = assemble.assemble(
    f,
    g,
    source,
    tx1,
    opt2,
    alpha=lr_schedule,
    estimator=mc.meta_grad,
    settings=dict(config[group]) if group else None,
    entropy_only=labels.source(method).entropy_only,
    lookahead_steps=mc.lookahead_steps,
    lookahead_scale=float(mc.lookahead_scale),
    gamma=mc.gamma,
    lam=mc.lam,
    fd_eps=mc.fd_eps,
    example_weights=bool(mc.example_weights),
    label_smoothing=float(config.train.label_smoothing),
    meta_loss=mc.meta_loss,
    balance=mc.balance,
  )
  return MaxlRun(
    method=method,
    seed=config.seed,
    info=info,
    f=f,
    g=g if source.generates else None,
    problem=parts.problem,
    label_source=source,
    tx1=tx1,
    tx2=parts.tx2,
    lr_schedule=lr_schedule,
    alpha_schedule=parts.alpha_schedule,
    schedule=run_schedule,
    estimator=parts.estimator,
    balance=parts.balance,
    on_nonfinite=config.train.on_nonfinite,
  )


# The config group whose fields are an estimator's settings, by estimator
# (`estimators.Entry.settings`); estimators without one have no settings.
SETTINGS_GROUPS = {'implicit': 'inverse_hvp'}


def source_options(config, per_epoch: int) -> dict:
  """Every label source's options (`labels.Source.options`) from the
  config; `make_label_source` gives each source its own."""
  return {
    'random_aux_classes': config.baseline.aux_classes,
    'kmeans_options': labels.KMeansOptions(**config.kmeans),
    'steps_per_epoch': per_epoch,
    'soft_human_eps': config.baseline.soft_human_eps,
  }


def jit_steps(run: MaxlRun, mesh) -> dict:
  """The run's jitted steps: updates `(carry, global batch) -> carry`,
  the others `(state, global batch) -> ...`.

  Returns:
    {'primary', 'eval', ['meta', 'interleaved', 'meta+signal',
    'interleaved+signal'] (θ2 learns), ['probe'] (an auxiliary task: the
    gradient cosine)}. Update steps donate their carry.
  """
  return make_step_fns(
    mesh=mesh,
    problem=run.problem,
    label_source=run.label_source,
    tx1=run.tx1,
    tx2=run.tx2,
    alpha_schedule=run.alpha_schedule,
    estimator=run.estimator,
    balance=run.balance,
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
  balance=None,
  held_out=False,
  num_fine=0,
) -> dict:
  """`steps`' functions bound to their dependencies and jitted on `mesh`.

  The state is replicated, the batches sharded over the `data` axis. The
  updates take and return the loop's carry (`carry.accumulating`: the
  metrics summed and guarded per `on_nonfinite` in the same program). With
  `held_out`, the θ2 updates take a third argument: the held-out batch of
  the meta objective. 'eval' also sums the statistics of what the labels
  know (DESIGN §6), with label recovery when `num_fine` > 0.
  """

  jit = functools.partial(jit_step, mesh=mesh)
  update = functools.partial(jit, donate=True)
  meta_update = functools.partial(update, batches=2 if held_out else 1)
  # The same bound step functions as the library API's (`maxl_jax.api`).
  bound = steps_lib.bind_steps(
    problem=problem,
    label_source=label_source,
    tx1=tx1,
    tx2=tx2,
    alpha_schedule=alpha_schedule,
    estimator=estimator,
    balance=balance,
    num_fine=num_fine,
  )
  summed = functools.partial(carry.accumulating, on_nonfinite=on_nonfinite)
  fns = {
    'primary': update(summed(bound['primary'])),
    'eval': jit(bound['eval']),
  }
  for name in ('meta', 'interleaved', 'meta+signal', 'interleaved+signal'):
    if name in bound:
      fns[name] = meta_update(summed(bound[name]))
  if 'probe' in bound:
    fns['probe'] = jit(bound['probe'])
  return fns
