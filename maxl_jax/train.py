"""`train_and_evaluate(config, workdir)`: one MAXL (or baseline) run.

Wires data, models, label source, optimisers, jitted steps, checkpoints and
writers together and runs the paper schedule (a θ1 pass, then a θ2 pass,
each epoch) or the interleaved one (a θ1 and a θ2 step per batch). The only
module with side effects.

Data parallel (SPMD): a one-axis mesh `data` spans every device of every
process; the state is replicated (`PartitionSpec()`) and the batch sharded
(`PartitionSpec('data')`), and `jax.jit` partitions the steps, inserting the
all-reduces of gradients and BatchNorm statistics (statistics are over the
global batch, as on one device). Each process feeds only its own share of a
batch (`jax.make_array_from_process_local_data`). Only process 0 writes
metrics, the config and the result; every process takes part in checkpoints.

Fault tolerance: a checkpoint every `checkpoint.every_steps` steps, at each
epoch end and at the end; a rerun with the same workdir resumes from the
newest usable one (bitwise: the metric sums of the current epoch are in the
state); SIGTERM saves a checkpoint and stops (`Preempted`); a non-finite
step stops the run (`NonFiniteError`) before any checkpoint after it.
"""

import functools
import hashlib
import json
import os
import time

import jax
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from maxl_jax import checkpointing, meta_grad, run_setup, steps
from maxl_jax import state as state_lib

RESULT = 'result.json'
METRICS = 'metrics.jsonl'
CONFIG = 'config.json'
CHECKPOINTS = 'checkpoints'


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint was written before stopping."""


class NonFiniteError(RuntimeError):
  """A loss or gradient went NaN/Inf with `on_nonfinite='stop'`."""


def make_mesh(devices=None) -> Mesh:
  """A one-axis `data` mesh over `devices` (default: all, of all hosts)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), 'data')


def jit_steps(config, setup, mesh) -> dict:
  """The jitted step functions, bound to their dependencies.

  Returns:
    {'primary', 'eval', ['meta', 'interleaved'] (θ2 learns), ['cosine']
    (auxiliary task)}: functions of (state, global batch).
  """
  problem, source, opt1 = setup.problem, setup.source, setup.opt1
  repl = NamedSharding(mesh, PartitionSpec())
  shard = NamedSharding(mesh, PartitionSpec('data'))
  common = {'on_nonfinite': config.train.on_nonfinite}
  jit = functools.partial(
    jax.jit, in_shardings=(repl, shard), out_shardings=repl
  )
  update = functools.partial(jit, donate_argnums=0)
  fns = {
    'primary': update(
      functools.partial(
        steps.primary_step, problem=problem, source=source, opt1=opt1, **common
      )
    ),
    'eval': jit(functools.partial(steps.eval_step, problem=problem)),
  }
  if source.learns:
    meta = {
      'problem': problem,
      'estimator': meta_grad.get_estimator(config.maxl.meta_grad),
      'opt2': setup.opt2,
      'alpha_schedule': setup.alpha_schedule,
    }
    fns['meta'] = update(functools.partial(steps.meta_step, **meta, **common))
    fns['interleaved'] = update(
      functools.partial(steps.interleaved_step, **meta, opt1=opt1, **common)
    )
  if source.num_aux:
    fns['cosine'] = jit(
      functools.partial(steps.cosine_step, problem=problem, source=source)
    )
  return fns


def global_batch(batch, mesh) -> dict[str, jax.Array]:
  """This process's rows of a batch -> global arrays sharded on `data`."""
  sharding = NamedSharding(mesh, PartitionSpec('data'))
  return {
    k: jax.make_array_from_process_local_data(sharding, v)
    for k, v in batch.items()
  }


def epoch_steps(setup) -> int:
  """Steps of one epoch: the θ1 pass, plus the θ2 pass (paper schedule)."""
  return (
    2 * setup.steps_per_epoch if setup.paper_meta else setup.steps_per_epoch
  )


def train_step(fns, setup, state, batch, step: int):
  """Step `step` (0-based, global) of the schedule: θ1, θ2 or both."""
  if setup.interleaved:
    fn = fns['interleaved']
  elif step % epoch_steps(setup) < setup.steps_per_epoch:
    fn = fns['primary']
  else:
    fn = fns['meta']
  state = fn(state, batch)
  label_state = setup.source.refresh(
    state.label_state, step, setup.train_it, None
  )
  return state.replace(label_state=label_state)


def _to_host(tree):
  """Replicated global arrays -> numpy (works on every process)."""
  return jax.tree.map(
    lambda x: np.asarray(
      x.addressable_data(0) if isinstance(x, jax.Array) else x
    ),
    tree,
  )


def params_digest(theta1, theta2) -> tuple[str, dict[str, float]]:
  """sha256 of θ1 and θ2 bytes (fixed leaf order) and their global L2 norms."""
  digest = hashlib.sha256()
  norms = {}
  for name, tree in (('theta1', theta1), ('theta2', theta2)):
    leaves = jax.tree.leaves(_to_host(tree))
    for leaf in leaves:
      digest.update(np.ascontiguousarray(leaf).tobytes())
    norms[name] = float(
      np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in leaves))
    )
  return digest.hexdigest(), norms


def evaluate(eval_fn, state, eval_data, mesh) -> dict[str, float]:
  """Test accuracy (fraction) and mean primary loss over the test set."""
  totals = {'correct': 0.0, 'loss': 0.0, 'count': 0.0}
  for batch in eval_data:
    out = _to_host(eval_fn(state, global_batch(batch, mesh)))
    totals = {k: totals[k] + float(out[k]) for k in totals}
  count = max(totals['count'], 1.0)
  return {
    'test/accuracy': totals['correct'] / count,
    'test/loss': totals['loss'] / count,
  }


def epoch_metrics(sums) -> dict[str, float]:
  """Means of the epoch's running sums (per step group)."""
  sums = _to_host(sums)
  out = {}
  for key, value in sums.items():
    group = key.split('/')[0]
    count = float(sums[f'{group}/count'])
    if key.endswith('/count') or not count or key == 'meta/aux_hist':
      continue
    out[key] = float(value) / count
  return out


def _check_guard(state, on_nonfinite, last_saved) -> int:
  """Raises NonFiniteError (mode 'stop'); returns the non-finite steps."""
  guard = _to_host(state.guard)
  if int(guard['count']) and on_nonfinite == 'stop':
    values = ', '.join(
      f'{k}={v:.6g}'
      for k, v in zip(state_lib.GUARD_VALUES, guard['values'], strict=True)
    )
    kept = (
      'no checkpoint was written'
      if last_saved is None
      else f'the last good checkpoint (step {last_saved}) is kept'
    )
    raise NonFiniteError(
      f'non-finite values at step {int(guard["step"]) + 1}: {values}; '
      f'{kept}. Lower the learning rates, or set '
      '--config.train.on_nonfinite=skip_step.'
    )
  return int(guard['count'])


class _MetricsLog:
  """`metrics.jsonl`, one row per epoch, rewritten whole (works on gs://).

  Rows of epochs after `completed_epochs` (written by a run that was then
  interrupted before its checkpoint) are dropped: the resumed run writes
  them again.
  """

  def __init__(self, path: epath.Path, completed_epochs: int):
    self._path = path
    lines = path.read_text().splitlines() if path.exists() else []
    rows = [json.loads(line) for line in lines if line.strip()]
    self._rows = [r for r in rows if r['epoch'] <= completed_epochs]
    if len(self._rows) < len(rows):
      self._write()

  def append(self, row: dict):
    self._rows.append(row)
    self._write()

  def _write(self):
    self._path.write_text(''.join(json.dumps(r) + '\n' for r in self._rows))


def _lead_says(flag: bool) -> bool:
  """Process 0's `flag`, on every process (so that all take one branch)."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _as_path(workdir: str) -> epath.Path:
  return epath.Path(workdir if '://' in workdir else os.path.abspath(workdir))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains per `config`, writing into `workdir`; returns the result dict.

  Resumes from the newest usable checkpoint in `workdir`; a finished run
  (result.json present, final step reached) returns its result untouched.

  Raises:
    UsageError: a bad config (before anything is written) or no usable
      checkpoint.
    NonFiniteError: a non-finite step with `train.on_nonfinite='stop'`.
    Preempted: SIGTERM; a checkpoint was saved.
  """
  # From the start, so that a SIGTERM is never lost.
  watch = checkpointing.PreemptionWatch()
  try:
    setup = run_setup.prepare(config)  # Raises UsageError before any write.
    workdir = _as_path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    manager = checkpointing.make_manager(
      str(workdir / CHECKPOINTS), config.checkpoint.keep
    )
    try:
      return _train(config, setup, workdir, manager, watch)
    finally:
      manager.close()
  finally:
    watch.close()


def _train(config, setup, workdir, manager, watch) -> dict:
  """The training loop of `train_and_evaluate`."""
  train_it = setup.train_it
  lead = jax.process_index() == 0
  mesh = make_mesh()
  repl = NamedSharding(mesh, PartitionSpec())
  state = jax.device_put(setup.init_state, repl)
  step, state, extra = checkpointing.restore_latest(manager, state)
  per_epoch = epoch_steps(setup)
  total = config.train.epochs * per_epoch
  result_path = workdir / RESULT
  if step is None:
    logging.info('Starting from scratch: no checkpoint in %s.', workdir)
    step, last_saved = 0, None
  else:
    train_it.set_state(extra['data'])
    logging.info('Resuming from the checkpoint at step %d of %d.', step, total)
    last_saved = step
  if step >= total and _lead_says(result_path.exists()):
    logging.info(
      'This run already finished (step %d of %d); nothing to train. Result: %s',
      step,
      total,
      result_path,
    )
    return json.loads(result_path.read_text())

  fns = jit_steps(config, setup, mesh)
  metrics_log = None
  if lead:
    (workdir / CONFIG).write_text(config.to_json_best_effort(indent=2))
    metrics_log = _MetricsLog(workdir / METRICS, step // per_epoch)
    parameter_overview.log_parameter_overview(state.theta1)
  writer = metric_writers.create_default_writer(
    str(workdir), just_logging=not lead
  )
  report = periodic_actions.ReportProgress(
    num_train_steps=total,
    writer=writer,
    every_steps=config.log.progress_every_steps,
  )
  cosine_batch = global_batch(train_it.batch(0, 0), mesh)
  on_nonfinite = config.train.on_nonfinite
  start = time.time()
  final = None  # The last evaluation of the test set.

  def save(wait=False):
    nonlocal last_saved
    _check_guard(state, on_nonfinite, last_saved)
    checkpointing.save(
      manager, step, state, {'data': train_it.get_state()}, wait=wait
    )
    last_saved = step

  try:
    while step < total:
      if watch.reached(step):
        if step and last_saved != step:
          save()
        manager.wait_until_finished()
        raise Preempted(
          f'checkpoint saved at step {step} of {total}'
          if last_saved
          else 'stopped before the first step; nothing to save'
        )
      epoch = step // per_epoch
      state = train_step(
        fns, setup, state, global_batch(next(train_it), mesh), step
      )
      step += 1
      report(step)
      if step % config.log.progress_every_steps == 0:
        _check_guard(state, on_nonfinite, last_saved)
        logging.info('epoch %d step %d/%d', epoch + 1, step, total)
      if step % per_epoch == 0:
        row = {'epoch': epoch + 1, 'step': step}
        row.update(epoch_metrics(state.sums))
        if 'cosine' in fns:  # On one fixed training batch.
          row['grad_cosine'] = float(
            _to_host(fns['cosine'](state, cosine_batch))
          )
        row['nonfinite_steps'] = _check_guard(state, on_nonfinite, last_saved)
        row['lr'] = float(setup.alpha_schedule(int(_to_host(state.step1))))
        if (epoch + 1) % config.train.eval_every_epochs == 0 or step == total:
          with report.timed('eval'):
            final = evaluate(fns['eval'], state, setup.eval_data, mesh)
          row.update(final)
        state = state.replace(
          sums=jax.device_put(state_lib.zero_sums(setup.source.num_aux), repl)
        )
        if lead:
          writer.write_scalars(step, row)
          metrics_log.append(row)
        save(wait=step == total)
      elif step % config.checkpoint.every_steps == 0:
        save()
  finally:
    manager.wait_until_finished()
    writer.flush()

  if final is None:  # Resumed from the final checkpoint without a result.
    final = evaluate(fns['eval'], state, setup.eval_data, mesh)
  sha, norms = params_digest(state.theta1, state.theta2)
  result = {
    'method': config.method,
    'dataset': config.data.name,
    'seed': config.seed,
    'epochs': config.train.epochs,
    'steps': step,
    'test_accuracy': final['test/accuracy'],
    'wall_time_s': time.time() - start,
    'params_sha256': sha,
    'param_norms': norms,
  }
  if lead:
    result_path.write_text(json.dumps(result, indent=2))
  logging.info('Finished at step %d; params sha256 %s.', step, sha)
  return result
