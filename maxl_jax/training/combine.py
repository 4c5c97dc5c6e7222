"""AuxiLearn's learned loss combiner on given auxiliary tasks: steps, loop.

A multi-task network (`models.build_trunk`, a primary head and one
`models.Head` per given auxiliary task) trains θ on

  L_T(θ, φ) = mean_n CE_primary(n) + mean_n c(ℓ_n(θ); φ),

with ℓ_n [T] the example's auxiliary cross-entropies and c a
`loss_combiner.make_combiner` form ('none' = Single: no auxiliary heads, no
auxiliary loss). Every `meta_every` θ steps φ takes one step on the implicit
hypergradient of L_A, the primary cross-entropy on a held-out batch
(`inverse_hvp.hypergradient`, config.implicit's solver), clipped to
`max_grad_norm` (AuxiLearn, Navon et al., ICLR 2021). Training-mode losses
use batch statistics; only θ steps update BatchNorm's running averages.

Given tasks (`TASKS`): 'coarse', Fashion-MNIST's 4 groups (helpful), and
'random', a fixed random class in 0..9 per training image (harmful).
CIFAR-100's coarser levels would be one more entry, a map of
`batch['aux_label']` (not implemented).

Runs last minutes: no checkpoints, a rerun starts over. The workdir gets
config.json, dataset.json, metrics.jsonl (a row per epoch) and result.json.
"""

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from maxl_jax import inverse_hvp, loss_combiner
from maxl_jax.data import pipeline
from maxl_jax.errors import NonFiniteError, UsageError
from maxl_jax.networks import models
from maxl_jax.training import assembly, loop, optim
from maxl_jax.training import workdir as workdir_lib
from maxl_jax.training.mesh import global_batch, make_mesh, replicated

Params = Any
Batch = dict[str, jax.Array]
FORMS = (*loss_combiner.FORMS, 'none')  # 'none': Single, no auxiliary loss.
PHI_OPTIMIZERS = {  # (lr, momentum) -> φ's optimiser.
  'adam': lambda lr, _: optax.adam(lr),
  'sgd': lambda lr, momentum: optax.sgd(lr, momentum or None),
}
_RANDOM_SALT = 0xC0A5  # Apart from labels.fixed.RandomSource's stream.


# ------------------------------------------------------------ given tasks ---


@dataclasses.dataclass(frozen=True)
class AuxTask:
  """K_t classes; `labels(batch, seed) -> [N] int32` (jittable); datasets
  it is defined on (() = any)."""

  num_classes: int
  labels: Callable[[Batch, int], jax.Array]
  datasets: tuple[str, ...] = ()


# Fashion-MNIST class -> group: tops (T-shirt, pullover, coat, shirt) 0,
# trousers and dresses 1, footwear (sandal, sneaker, ankle boot) 2, bags 3.
FASHION_COARSE = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2], np.int32)


def random_labels(seed: int, index: jax.Array, num_classes: int = 10):
  """A fixed uniform class per image: [N] int32, a function of (seed, index).

  `index` is the image's position in the (low-data) training set, so the
  label follows the image through shuffling and is the same every epoch.
  """
  key = jax.random.fold_in(jax.random.key(seed), _RANDOM_SALT)
  keys = jax.vmap(jax.random.fold_in, (None, 0))(key, index)
  return jax.vmap(lambda k: jax.random.randint(k, (), 0, num_classes))(keys)


TASKS = {
  'coarse': AuxTask(
    4, lambda b, _: jnp.asarray(FASHION_COARSE)[b['label']], ('fashion_mnist',)
  ),
  'random': AuxTask(10, lambda b, seed: random_labels(seed, b['index'])),
}


def get_tasks(names: str, dataset: str) -> tuple[str, ...]:
  """Comma-separated task names, checked against `TASKS` and `dataset`."""
  found = tuple(n.strip() for n in names.split(',') if n.strip())
  if not found or len(set(found)) < len(found) or set(found) - set(TASKS):
    raise UsageError(
      f'config.combiner.tasks = {names!r}: give distinct names from '
      f'{list(TASKS)}, comma-separated.'
    )
  for name in found:
    if TASKS[name].datasets and dataset not in TASKS[name].datasets:
      raise UsageError(
        f'auxiliary task {name!r} is defined on {TASKS[name].datasets} only, '
        f'not {dataset!r}; drop it from config.combiner.tasks.'
      )
  return found


# ---------------------------------------------------------- network, state ---


class MultiHeadNet(nn.Module):
  """A trunk, a primary head and one head per auxiliary task.

  `(x [N, H, W, C], train) -> (primary [N, P], ([N, K_t] for each task))`.
  """

  trunk: nn.Module
  num_primary: int
  aux_classes: tuple[int, ...]
  head_hidden: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    h = self.trunk(x, train)
    head = functools.partial(models.Head, hidden=self.head_hidden)
    primary = head(self.num_primary, dtype=self.dtype, name='primary_head')(h)
    aux = tuple(
      head(k, dtype=self.dtype, name=f'aux_head_{t}')(h)
      for t, k in enumerate(self.aux_classes)
    )
    return primary, aux


@dataclasses.dataclass(frozen=True)
class Problem:
  """The steps' needs: network, tasks by name, combiner (None: 'none'), seed."""

  apply: models.ApplyFn
  tasks: dict[str, AuxTask]
  combine: Callable[..., jax.Array] | None
  seed: int


@flax.struct.dataclass
class CombineState:
  """θ (network params), its BatchNorm state and optimiser; φ and its."""

  theta: Params
  model_state: Any
  opt_state: Any
  phi: Params
  phi_opt_state: Any


# ------------------------------------------------------------------ steps ---


def task_losses(problem: Problem, theta, model_state, batch):
  """Training mode: (primary CE [N], auxiliary CEs ℓ [N, T], new state)."""
  (primary, aux), new_state = problem.apply(
    theta, model_state, batch['image'], True
  )
  ce = optax.softmax_cross_entropy_with_integer_labels
  ell = [
    ce(logits, task.labels(batch, problem.seed))
    for task, logits in zip(problem.tasks.values(), aux, strict=True)
  ]
  ell = jnp.stack(ell, -1) if ell else jnp.zeros((primary.shape[0], 0))
  return ce(primary, batch['label']), ell, new_state


def train_loss(problem: Problem, theta, phi, model_state, batch):
  """L_T(θ, φ) -> (scalar, (new model state, values)).

  Values: loss_pri, loss_aux (the combined loss) and loss_<task> (its CE).
  """
  primary, ell, new_state = task_losses(problem, theta, model_state, batch)
  loss_pri, loss_aux = jnp.mean(primary), jnp.zeros(())
  if problem.combine is not None:
    loss_aux = loss_combiner.combined_loss(problem.combine, phi, ell)
  values = {'loss_pri': loss_pri, 'loss_aux': loss_aux}
  values.update(
    {f'loss_{n}': ell[:, t].mean() for t, n in enumerate(problem.tasks)}
  )
  return loss_pri + loss_aux, (new_state, values)


def theta_step(state: CombineState, batch, *, problem, opt):
  """One θ update on L_T: (state, `train_loss`'s values and loss)."""
  grads, (new_model_state, values) = jax.grad(
    lambda t: train_loss(problem, t, state.phi, state.model_state, batch),
    has_aux=True,
  )(state.theta)
  updates, opt_state = opt.update(grads, state.opt_state, state.theta)
  values['loss'] = values['loss_pri'] + values['loss_aux']
  return state.replace(
    theta=optax.apply_updates(state.theta, updates),
    model_state=new_model_state,
    opt_state=opt_state,
  ), values


def phi_step(state: CombineState, batch, meta_batch, *, problem, opt, inverse):
  """One φ update by the implicit hypergradient of L_A (held-out primary CE).

  `opt` clips the hypergradient first. θ and the model state stay put.
  Returns (state, {meta_loss, hypergrad_norm}).
  """

  def inner(theta, phi):
    return train_loss(problem, theta, phi, state.model_state, batch)[0]

  def outer(theta):
    primary, _, _ = task_losses(problem, theta, state.model_state, meta_batch)
    return jnp.mean(primary)

  hypergrad = inverse_hvp.hypergradient(
    inner, outer, state.theta, state.phi, inverse
  )
  updates, phi_opt_state = opt.update(hypergrad, state.phi_opt_state, state.phi)
  values = {
    'meta_loss': outer(state.theta),
    'hypergrad_norm': optax.global_norm(hypergrad),
  }
  return state.replace(
    phi=optax.apply_updates(state.phi, updates), phi_opt_state=phi_opt_state
  ), values


def weights_step(state: CombineState, batch, *, problem):
  """{task: its `loss_combiner.task_weights` at this batch's losses}."""
  _, ell, _ = task_losses(problem, state.theta, state.model_state, batch)
  weights = loss_combiner.task_weights(problem.combine, state.phi, ell)
  return dict(zip(problem.tasks, weights, strict=True))


def eval_step(state: CombineState, batch, *, problem):
  """Eval mode, masked sums (for `loop.evaluate`): correct, loss, count."""
  (logits, _), _ = problem.apply(
    state.theta, state.model_state, batch['image'], False
  )
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  correct = jnp.argmax(logits, -1) == batch['label']
  sums = {'correct': correct, 'loss': loss, 'count': jnp.ones_like(loss)}
  return {k: jnp.sum(batch['mask'] * v) for k, v in sums.items()}


# ------------------------------------------------------------------ build ---


def check_config(config) -> tuple[str, ...]:
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
  return get_tasks(cc.tasks, config.data.name)


def build(config, info, steps_per_epoch: int):
  """(task names, jitted steps, initial state) of a config.

  Returns:
    The task names; {'theta', 'eval', 'weights' (a combiner), 'phi' (φ has
    parameters)} jitted, the update steps donating their state; a
    `CombineState` from `config.seed`.
  """
  cc, tasks = config.combiner, {n: TASKS[n] for n in check_config(config)}
  dtype = models.COMPUTE_DTYPES[config.model.compute_dtype]
  net = MultiHeadNet(
    models.build_trunk(config.model),
    info.num_classes,
    tuple(t.num_classes for t in tasks.values()),
    config.model.head_hidden,
    dtype,
  )
  init_phi, combine = (lambda _: {}), None
  if cc.form != 'none':
    init_phi, combine = loss_combiner.make_combiner(
      cc.form, len(tasks), cc.hidden
    )
  problem = Problem(models.make_apply(net), tasks, combine, config.seed)
  opt = optim.make_optimizer(config.primary_opt, steps_per_epoch)
  clip = [optax.clip_by_global_norm(cc.max_grad_norm)] * (cc.max_grad_norm > 0)
  phi_opt = optax.chain(*clip, PHI_OPTIMIZERS[cc.optimizer](cc.lr, cc.momentum))
  key_theta, key_phi = jax.random.split(jax.random.key(config.seed))
  theta, model_state = models.init_variables(net, key_theta, info.image_shape)
  phi = init_phi(key_phi)
  state = CombineState(
    theta, model_state, opt.init(theta), phi, phi_opt.init(phi)
  )
  bind = functools.partial(functools.partial, problem=problem)
  fns = {
    'theta': jax.jit(bind(theta_step, opt=opt), donate_argnums=0),
    'eval': jax.jit(bind(eval_step)),
  }
  if combine is not None:
    fns['weights'] = jax.jit(bind(weights_step))
  if jax.tree.leaves(phi):  # config.implicit's solver, as MAXL's implicit.
    inverse = assembly.implicit_inverse(config.implicit)
    fns['phi'] = jax.jit(
      bind(phi_step, opt=phi_opt, inverse=inverse), donate_argnums=0
    )
  return tuple(tasks), fns, state


# ------------------------------------------------------------------- loop ---


def _means(group: str, values: list[dict]) -> dict[str, float]:
  """Steps' host values -> {`group/<name>`: mean over the steps}."""
  keys = values[0] if values else ()
  return {f'{group}/{k}': float(np.mean([v[k] for v in values])) for k in keys}


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains per `config` into `workdir` (from scratch); the result dict.

  Raises:
    UsageError: a bad config or workdir, before anything is written.
    NonFiniteError: an epoch's mean training loss is not finite.
  """
  check_config(config)
  workdir_lib.check_writable(workdir)
  data = pipeline.get_datasets(
    config.data,
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  per_epoch = config.train.steps_per_epoch or data.train.steps_per_epoch
  if not 0 < per_epoch <= data.train.steps_per_epoch:
    raise UsageError(
      f'config.train.steps_per_epoch = {per_epoch}: an epoch has '
      f'{data.train.steps_per_epoch} batches (0 = all of them).'
    )
  names, fns, state = build(config, data.info, per_epoch)
  mesh = make_mesh()
  state = jax.device_put(state, replicated(mesh))
  lead, path = jax.process_index() == 0, workdir_lib.as_path(workdir)
  if lead:
    path.mkdir(parents=True, exist_ok=True)
    config_json = config.to_json_best_effort(indent=2)
    workdir_lib.write_run_files(path, config_json, data.info)
    (path / workdir_lib.METRICS).write_text('')
  # Weights are taken at the losses of one fixed held-out batch.
  probe = global_batch((data.meta or data.train).batch(0, 0), mesh)
  start, step, row = time.time(), 0, {}
  for epoch in range(config.train.epochs):
    theta_values, phi_values = [], []
    for s in range(per_epoch):
      batch = global_batch(data.train.batch(epoch, s), mesh)
      state, values = fns['theta'](state, batch)
      theta_values.append(values)
      step += 1
      if 'phi' in fns and step % config.combiner.meta_every == 0:
        meta_batch = global_batch(next(data.meta), mesh)
        state, values = fns['phi'](state, batch, meta_batch)
        phi_values.append(values)
    theta_values, phi_values = jax.device_get((theta_values, phi_values))
    row = {'epoch': epoch + 1, 'step': step}
    row.update(_means('train', theta_values))
    row.update(_means('meta', phi_values))
    if not np.isfinite(row['train/loss']):
      raise NonFiniteError(
        f'epoch {epoch + 1}: mean training loss {row["train/loss"]}; lower '
        'config.primary_opt.lr or config.combiner.lr.'
      )
    row.update(loop.evaluate(fns['eval'], state, data.eval, mesh))
    if 'weights' in fns:
      weights = jax.device_get(fns['weights'](state, probe))
      row.update({f'weight/{n}': float(w) for n, w in weights.items()})
    row['wall_s'] = time.time() - start
    logging.info('%s', {k: round(v, 4) for k, v in row.items()})
    if lead:
      with (path / workdir_lib.METRICS).open('a') as f:
        f.write(json.dumps(row) + '\n')
  result = dict(
    form=config.combiner.form, tasks=list(names), dataset=data.info.name,
    seed=config.seed, epochs=config.train.epochs, steps=step,
    test_accuracy=row.get('test/accuracy'),
    weights={n: row[f'weight/{n}'] for n in names if 'weights' in fns},
    wall_time_s=time.time() - start,
  )  # fmt: skip
  if lead:
    (path / workdir_lib.RESULT).write_text(json.dumps(result, indent=2))
  return result
