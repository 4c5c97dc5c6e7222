"""A loss-combiner run (AuxiLearn, DESIGN §2e): `config.run = 'combiner'`.

`build(config, info)` builds the `CombinerRun` (a `protocol.Run`; its
checks: `check_config`): the `MultiHeadNet` on the given tasks
(`combiner_problem.TASKS`), the combiner c(ℓ; φ), θ's and φ's optimisers and
the schedule, no data loaded. It trains through `loop` (checkpoints,
resumption, the non-finite guard, metrics) and restores through `restore`,
as every run: its state is a `CombinerState` (the network θ1 and φ).

Every `combiner.meta_every` θ steps, a combined step takes a φ step after
the θ step, on the implicit hypergradient of the primary cross-entropy on a
held-out batch (config.inverse_hvp's solver), clipped to
`combiner.max_grad_norm`; forms without parameters ('fixed', 'none' =
Single) take θ steps only. Each epoch logs every task's effective weight on
the first held-out batch (`weight/<task>`).
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax
import optax

from maxl_jax import combiner_problem, inverse_hvp, loss_combiner
from maxl_jax import state as state_lib
from maxl_jax import steps as steps_lib
from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError
from maxl_jax.networks import models
from maxl_jax.training import carry, optim, schedule
from maxl_jax.training.config_fields import steps_per_epoch
from maxl_jax.training.mesh import jit_step

FORMS = (*loss_combiner.FORMS, 'none')  # 'none': Single, no auxiliary loss.
PHI_OPTIMIZERS = {  # (lr, momentum) -> φ's optimiser.
  'adam': lambda lr, _: optax.adam(lr),
  'sgd': lambda lr, momentum: optax.sgd(lr, momentum or None),
}


def task_names(config) -> tuple[str, ...]:
  """Raises UsageError for bad `config.combiner` values; the task names."""
  cc = config.combiner
  if cc.form not in FORMS:
    raise UsageError(
      f'config.combiner.form = {cc.form!r}; choose one of {list(FORMS)}.'
    )
  if cc.optimizer not in PHI_OPTIMIZERS or cc.lr <= 0 or cc.meta_every < 1:
    raise UsageError(
      f'config.combiner needs optimizer in {list(PHI_OPTIMIZERS)}, lr > 0 '
      f'and meta_every >= 1; got {cc.optimizer!r}, {cc.lr!r}, '
      f'{cc.meta_every!r}.'
    )
  if cc.form in ('linear', 'mlp') and not config.data.meta_fraction > 0:
    raise UsageError(
      f'config.combiner.form = {cc.form!r} learns on a held-out split: set '
      '--config.data.meta_fraction > 0, e.g. 0.1.'
    )
  if cc.form == 'none':
    return ()
  return _tasks(cc.tasks, config.data.name)


def _tasks(names: str, dataset: str) -> tuple[str, ...]:
  """config.combiner.tasks, comma-separated names of
  `combiner_problem.TASKS`, checked against the dataset."""
  tasks = combiner_problem.TASKS
  found = tuple(n.strip() for n in names.split(',') if n.strip())
  if not found or len(set(found)) < len(found) or set(found) - set(tasks):
    raise UsageError(
      f'config.combiner.tasks = {names!r}: give distinct names from '
      f'{list(tasks)}, comma-separated.'
    )
  for name in found:
    if tasks[name].datasets and dataset not in tasks[name].datasets:
      raise UsageError(
        f'auxiliary task {name!r} is defined on {tasks[name].datasets} only, '
        f'not {dataset!r}; drop it from config.combiner.tasks.'
      )
  return found


def check_config(config):
  """Checks `config.combiner`; raises UsageError."""
  task_names(config)


@dataclasses.dataclass(frozen=True)
class CombinerRun:
  """The static pieces of a loss-combiner run (`protocol.Run`)."""

  method: ClassVar[str] = 'combiner'

  form: str
  tasks: tuple[str, ...]
  seed: int
  info: DatasetInfo
  net: nn.Module  # The `MultiHeadNet` (θ1).
  init_phi: Callable  # key -> φ (θ2); {} without parameters.
  problem: combiner_problem.CombinerProblem
  tx1: optax.GradientTransformation
  tx2: optax.GradientTransformation  # φ's, clipping first.
  lr_schedule: optax.Schedule  # θ's learning rate (logged as lr).
  schedule: schedule.Schedule
  inverse: inverse_hvp.InverseHvp
  on_nonfinite: str  # stop | skip_step.

  @property
  def held_out(self) -> bool:
    """Combined steps take a held-out batch (φ learns)."""
    return self.schedule.name != 'single'

  def scoring(self) -> dict:
    """No label statistics: the given tasks have no hierarchy."""
    return {}

  def init_label_state(self, images) -> dict:
    """The given tasks are fixed: no label state."""
    del images
    return {}

  def refresh(self, state, step: int, images):
    """The given tasks never change."""
    del step, images
    return state

  def digested(self, state) -> tuple:
    """(θ1, φ)."""
    return state.theta1, state.phi

  def drift_step(self) -> None:
    """No label generator: no label drift."""
    return None

  def create_state(self, label_state) -> state_lib.CombinerState:
    """Step 0: θ and φ from the seed."""
    del label_state  # The given tasks are fixed.
    key_theta, key_phi = jax.random.split(jax.random.key(self.seed))
    theta, model_state = models.init_variables(
      self.net, key_theta, self.info.image_shape
    )
    phi = self.init_phi(key_phi)
    return state_lib.initial_combiner_state(
      theta, model_state, phi, self.tx1, self.tx2
    )

  def state_shapes(self) -> state_lib.CombinerState:
    """Shapes and dtypes of the state (no data, nothing computed)."""
    return jax.eval_shape(self.create_state, {})

  def zero_sums(self) -> carry.Sums:
    """The loop's metric sums at the start of an epoch."""
    train = combiner_problem.metric_names(self.problem)
    meta = ('meta_loss', 'hypergrad_norm') if self.held_out else ()
    return carry.named_sums(train, meta)

  def jit_steps(self, mesh) -> dict:
    """{'primary', 'eval', ['interleaved'] (φ learns), ['probe'] (the task
    weights, with a combiner)}, jitted on `mesh` as `maxl_run.jit_steps`."""
    bind = functools.partial(functools.partial, problem=self.problem)
    jit = functools.partial(jit_step, mesh=mesh)
    summed = functools.partial(
      carry.accumulating, on_nonfinite=self.on_nonfinite
    )
    fns = {
      'primary': jit(
        summed(bind(steps_lib.combiner_primary_step, tx1=self.tx1)),
        donate=True,
      ),
      'eval': jit(bind(steps_lib.combiner_eval_step)),
    }
    if self.held_out:
      step = bind(
        steps_lib.combiner_interleaved_step,
        tx1=self.tx1,
        tx2=self.tx2,
        inverse=self.inverse,
      )
      fns[schedule.INTERLEAVED] = jit(summed(step), donate=True, batches=2)
    if self.problem.combine is not None:
      fns['probe'] = jit(bind(steps_lib.combiner_weights_step))
    return fns

  def probe_batch(self, data):
    """The task weights' fixed batch: the first held-out one (else the
    first training batch)."""
    return (data.meta or data.train).batch(0, 0)

  def result_fields(self, final: dict) -> dict:
    """result.json's form, tasks and final task weights."""
    weights = {n: final[f'weight/{n}'] for n in self.tasks}
    return {'form': self.form, 'tasks': list(self.tasks), 'weights': weights}


def build(config, info: DatasetInfo) -> CombinerRun:
  """The combiner run of `config` for the dataset `info` (config checked by
  `contract.build_run`)."""
  cc, names = config.combiner, task_names(config)
  per_epoch = steps_per_epoch(config, info)
  tasks = {n: combiner_problem.TASKS[n] for n in names}
  net = models.build_multi_head(
    models.ModelSpec(**config.model),
    num_primary=info.num_classes,
    aux_classes=[t.num_classes for t in tasks.values()],
  )
  init_phi, combine = (lambda _: {}), None
  if cc.form != 'none':
    init_phi, combine = loss_combiner.make_combiner(
      cc.form, len(tasks), cc.hidden
    )
  clip = [optax.clip_by_global_norm(cc.max_grad_norm)] * (cc.max_grad_norm > 0)
  learns = cc.form in ('linear', 'mlp')
  return CombinerRun(
    form=cc.form,
    tasks=names,
    seed=config.seed,
    info=info,
    net=net,
    init_phi=init_phi,
    problem=combiner_problem.CombinerProblem(
      models.make_apply(net), tasks, combine, config.seed
    ),
    tx1=optim.make_optimizer(config.primary_opt, per_epoch),
    tx2=optax.chain(*clip, PHI_OPTIMIZERS[cc.optimizer](cc.lr, cc.momentum)),
    lr_schedule=optim.lr_schedule(config.primary_opt, per_epoch),
    schedule=schedule.Schedule(
      'interleaved' if learns else 'single',
      per_epoch,
      cc.meta_every if learns else 1,
    ),
    inverse=inverse_hvp.make_solver(**_solver_settings(config.inverse_hvp)),
    on_nonfinite=config.train.on_nonfinite,
  )


def _solver_settings(group) -> dict:
  """config.inverse_hvp's solver fields, as plain values."""
  keys = ('solver', 'neumann_steps', 'neumann_lr', 'cg_steps', 'damping')
  return {k: group[k] for k in keys}
