"""From a config to everything a run needs, checked before anything is written.

`prepare(config)` validates the config, loads the data, builds the networks,
the label source, the optimisers and the initial state. Every user-fixable
problem surfaces here as a `UsageError`, so a bad command writes nothing
into its workdir.
"""

import dataclasses
from typing import Any

import jax
import numpy as np
import optax

from maxl_jax import data, hierarchy, label_sources, meta_grad, models, optim
from maxl_jax import state as state_lib
from maxl_jax.errors import UsageError
from maxl_jax.lookahead import MaxlProblem

METHODS = ('single', 'maxl', 'random', 'kmeans', 'human')
CHOICES = {
  'method': METHODS,
  'maxl.schedule': ('paper', 'interleaved'),
  'maxl.meta_grad': tuple(meta_grad.ESTIMATORS),
  'train.on_nonfinite': ('stop', 'skip_step'),
}


@dataclasses.dataclass(frozen=True)
class Setup:
  """The static pieces of one run."""

  info: data.DatasetInfo
  train_it: Any
  eval_data: Any
  problem: MaxlProblem
  source: label_sources.LabelSource
  opt1: optax.GradientTransformation
  opt2: optax.GradientTransformation
  alpha_schedule: optax.Schedule  # α = θ1's learning rate at θ1 step t.
  init_state: state_lib.MaxlState
  steps_per_epoch: int
  schedule: str  # paper | interleaved (only matters when θ2 learns).

  @property
  def interleaved(self) -> bool:
    """One θ1 and one θ2 step per batch."""
    return self.source.learns and self.schedule == 'interleaved'

  @property
  def paper_meta(self) -> bool:
    """Each epoch has a θ2 pass after its θ1 pass."""
    return self.source.learns and self.schedule == 'paper'


def _lookup(config, dotted):
  value = config
  for part in dotted.split('.'):
    value = value[part]
  return value


def validate(config):
  """Checks the choice fields and numbers; raises UsageError."""
  for field, choices in CHOICES.items():
    value = _lookup(config, field)
    if value not in choices:
      raise UsageError(
        f'config.{field} = {value!r} is not one of {list(choices)}; set '
        f'--config.{field}=<one of them>.'
      )
  for field in (
    'train.epochs',
    'maxl.psi_per_class',
    'checkpoint.keep',
    'checkpoint.every_steps',
    'log.progress_every_steps',
    'train.eval_every_epochs',
  ):
    if _lookup(config, field) < 1:
      raise UsageError(
        f'config.{field} must be >= 1, got {_lookup(config, field)!r}.'
      )
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
  if config.method == 'human' and config.data.name != 'cifar100':
    raise UsageError(
      'method=human needs a dataset with a label hierarchy: use '
      '--config.data.name=cifar100 (with data.primary_level/aux_level).'
    )


def make_source(config, info) -> label_sources.LabelSource:
  """The label source of `config.method` (the training loop's only view)."""
  num_primary = info.num_classes
  psi = hierarchy.balanced_psi(num_primary, config.maxl.psi_per_class)
  if config.method == 'single':
    return label_sources.LabelSource()
  if config.method == 'maxl':
    return label_sources.MaxlSource(psi=psi)  # `prepare` adds the problem.
  if config.method == 'random':
    total = config.baseline.aux_classes or int(psi.sum())
    rng = np.random.default_rng(config.seed)
    return label_sources.RandomSource(
      psi=hierarchy.random_psi(num_primary, total, rng), seed=config.seed
    )
  if config.method == 'human':
    return label_sources.human_source(info.aux_to_primary, num_primary)
  from maxl_jax import kmeans_source  # Imports scikit-learn.

  return kmeans_source.from_config(config, info, psi)


def prepare(config) -> Setup:
  """Validates `config` and builds the run's static pieces."""
  validate(config)
  train_it, eval_data, info = data.get_datasets(
    config.data,
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  # psi first (without g) to know K; MAXL's source then gets g's apply.
  probe = make_source(config, info)
  num_aux = probe.num_aux
  if num_aux:
    f, g = models.build_models(
      config.model, num_primary=info.num_classes, num_aux=num_aux
    )
  else:
    f, g = models.build_single(config.model, num_primary=info.num_classes), None
  mask = hierarchy.class_mask(probe.psi) if num_aux else None
  g_apply = models.make_apply(g) if probe.learns else None
  problem = MaxlProblem(
    f_apply=models.make_apply(f),
    g_apply=g_apply,
    mask=mask,
    gamma=config.maxl.gamma,
    lam=config.maxl.lam,
    fd_eps=config.maxl.fd_eps,
  )
  source = probe
  if probe.learns:
    source = dataclasses.replace(probe, problem=problem)
  steps = train_it.steps_per_epoch
  if config.train.steps_per_epoch:
    steps = min(steps, config.train.steps_per_epoch)
  opt1 = optim.make_optimizer(config.primary_opt, steps)
  opt2 = optim.make_optimizer(config.label_opt, steps)
  state = state_lib.create_state(
    jax.random.key(config.seed),
    f,
    g if source.learns else None,
    opt1,
    opt2,
    info.image_shape,
    source.init_state(train_it),
  )
  return Setup(
    info=info,
    train_it=train_it,
    eval_data=eval_data,
    problem=problem,
    source=source,
    opt1=opt1,
    opt2=opt2,
    alpha_schedule=optim.lr_schedule(config.primary_opt, steps),
    init_state=state,
    steps_per_epoch=steps,
    schedule=config.maxl.schedule,
  )
