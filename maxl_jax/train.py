"""`train_and_evaluate(config, workdir)`: one MAXL (or baseline) run.

Wires data, models, label source, optimisers, jitted steps, checkpoints and
writers together and runs the paper schedule (a θ1 pass, then a θ2 pass,
each epoch) or the interleaved one (a θ1 and a θ2 step per batch). The only
module with side effects.

Data parallel: the state is replicated and the batch sharded along the
`data` axis of a one-axis mesh over all devices of all hosts; `jax.jit`
partitions the steps (BatchNorm statistics are over the global batch).
"""

import functools
import json
import os
import signal
import time

import jax
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from maxl_jax import (
  checkpointing,
  meta_grad,
  run_setup,
  steps,
)
from maxl_jax import (
  state as state_lib,
)

RESULT = 'result.json'
METRICS = 'metrics.jsonl'


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint was written before stopping."""


class NonFiniteError(RuntimeError):
  """A loss or gradient went NaN/Inf with `on_nonfinite='stop'`."""


def _jit_steps(config, setup, mesh):
  """The jitted step functions, bound to their dependencies."""
  problem, source, opt1 = setup.problem, setup.source, setup.opt1
  repl = NamedSharding(mesh, PartitionSpec())
  shard = NamedSharding(mesh, PartitionSpec('data'))
  common = {'on_nonfinite': config.train.on_nonfinite}
  jit = functools.partial(
    jax.jit, in_shardings=(repl, shard), out_shardings=repl, donate_argnums=0
  )
  fns = {
    'primary': jit(
      functools.partial(
        steps.primary_step, problem=problem, source=source, opt1=opt1, **common
      )
    ),
    'eval': jax.jit(
      functools.partial(steps.eval_step, problem=problem),
      in_shardings=(repl, shard),
      out_shardings=repl,
    ),
  }
  if source.learns:
    meta = {
      'problem': problem,
      'estimator': meta_grad.get_estimator(config.maxl.meta_grad),
      'opt2': setup.opt2,
      'alpha_schedule': setup.alpha_schedule,
    }
    fns['meta'] = jit(functools.partial(steps.meta_step, **meta, **common))
    fns['interleaved'] = jit(
      functools.partial(steps.interleaved_step, **meta, opt1=opt1, **common)
    )
  if source.num_aux:
    fns['cosine'] = jax.jit(
      functools.partial(steps.cosine_step, problem=problem, source=source),
      in_shardings=(repl, shard),
      out_shardings=repl,
    )
  return fns


def _to_host(tree):
  """Replicated global arrays -> numpy (works on every host)."""
  return jax.tree.map(
    lambda x: np.asarray(
      x.addressable_data(0) if isinstance(x, jax.Array) else x
    ),
    tree,
  )


def _global_batch(batch, sharding):
  return {
    k: jax.make_array_from_process_local_data(sharding, v)
    for k, v in batch.items()
  }


def params_digest(theta1, theta2) -> tuple[str, dict[str, float]]:
  """sha256 of θ1 and θ2 bytes (fixed leaf order) and their global L2 norms."""
  digest = __import__('hashlib').sha256()
  norms = {}
  for name, tree in (('theta1', theta1), ('theta2', theta2)):
    leaves = jax.tree.leaves(_to_host(tree))
    for leaf in leaves:
      digest.update(np.ascontiguousarray(leaf).tobytes())
    norms[name] = float(
      np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in leaves))
    )
  return digest.hexdigest(), norms


def evaluate(eval_fn, state, eval_data, sharding) -> dict[str, float]:
  """Test accuracy (fraction) and mean primary loss over the test set."""
  totals = None
  for batch in eval_data:
    out = eval_fn(state, _global_batch(batch, sharding))
    totals = out if totals is None else jax.tree.map(np.add, totals, out)
  totals = _to_host(totals)
  count = max(float(totals['count']), 1.0)
  return {
    'test/accuracy': float(totals['correct']) / count,
    'test/loss': float(totals['loss']) / count,
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


def _check_guard(state, on_nonfinite, last_saved):
  guard = _to_host(state.guard)
  if int(guard['count']) and on_nonfinite == 'stop':
    values = ', '.join(
      f'{k}={v:.6g}'
      for k, v in zip(state_lib.GUARD_VALUES, guard['values'], strict=True)
    )
    raise NonFiniteError(
      f'non-finite values at step {int(guard["step"])}: {values}. The last '
      f'good checkpoint (step {last_saved}) is kept; lower the learning '
      'rates or set --config.train.on_nonfinite=skip_step.'
    )
  return int(guard['count'])


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains per `config`, writing into `workdir`; returns the result dict.

  Resumes from the newest usable checkpoint in `workdir`; a finished run
  (result.json present, final step reached) returns its result untouched.
  """
  setup = run_setup.prepare(config)  # Raises UsageError before any write.
  train_it, eval_data = setup.train_it, setup.eval_data
  lead = jax.process_index() == 0
  mesh = Mesh(np.array(jax.devices()), ('data',))
  repl = NamedSharding(mesh, PartitionSpec())
  shard = NamedSharding(mesh, PartitionSpec('data'))
  fns = _jit_steps(config, setup, mesh)

  state = jax.device_put(setup.init_state, repl)
  os.makedirs(workdir, exist_ok=True)
  manager = checkpointing.make_manager(
    os.path.join(os.path.abspath(workdir), 'checkpoints'),
    config.checkpoint.keep,
  )
  step, state, extra = checkpointing.restore_latest(manager, state)
  s = setup.steps_per_epoch
  per_epoch = 2 * s if setup.paper_meta else s
  total = config.train.epochs * per_epoch
  result_path = os.path.join(workdir, RESULT)
  if step is not None:
    train_it.set_state(extra['data'])
    logging.info('Resuming from the checkpoint at step %d of %d.', step, total)
    if step >= total and os.path.exists(result_path):
      logging.info('This run already finished; result in %s.', result_path)
      with open(result_path) as f:
        return json.load(f)
  step = step or 0
  if lead:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    _truncate_metrics(os.path.join(workdir, METRICS), step // per_epoch)
    parameter_overview.log_parameter_overview(state.theta1)
  writer = metric_writers.create_default_writer(workdir, just_logging=not lead)
  report = periodic_actions.ReportProgress(
    num_train_steps=total,
    writer=writer,
    every_steps=config.log.progress_every_steps,
  )

  cosine_batch = _global_batch(train_it.batch(0, 0), shard)
  preempted = []
  old_handler = signal.signal(signal.SIGTERM, lambda *_: preempted.append(1))
  last_saved = step
  start = time.time()
  on_nonfinite = config.train.on_nonfinite

  def save(wait=False):
    nonlocal last_saved
    _check_guard(state, on_nonfinite, last_saved)
    checkpointing.save(
      manager, step, state, {'data': train_it.get_state()}, wait=wait
    )
    last_saved = step

  try:
    while step < total:
      epoch, i = divmod(step, per_epoch)
      batch = _global_batch(next(train_it), shard)
      if setup.interleaved:
        state = fns['interleaved'](state, batch)
      elif i < s:
        state = fns['primary'](state, batch)
      else:
        state = fns['meta'](state, batch)
      state = state.replace(
        label_state=setup.source.refresh(
          state.label_state, step, train_it, None
        )
      )
      step += 1
      report(step)
      if step % config.log.progress_every_steps == 0:
        _check_guard(state, on_nonfinite, last_saved)
        logging.info('epoch %d step %d/%d', epoch + 1, step, total)
      if preempted:
        save(wait=True)
        raise Preempted(f'checkpoint saved at step {step}')
      if step % per_epoch == 0:
        row = {'epoch': epoch + 1, 'step': step}
        row.update(epoch_metrics(state.sums))
        if setup.source.num_aux:  # On one fixed training batch.
          row['grad_cosine'] = float(
            _to_host(fns['cosine'](state, cosine_batch))
          )
        row['nonfinite_steps'] = _check_guard(state, on_nonfinite, last_saved)
        row['lr'] = float(setup.alpha_schedule(int(_to_host(state.step1))))
        if (epoch + 1) % config.train.eval_every_epochs == 0 or step == total:
          with report.timed('eval'):
            row.update(evaluate(fns['eval'], state, eval_data, shard))
        state = state.replace(
          sums=jax.device_put(state_lib.zero_sums(setup.source.num_aux), repl)
        )
        if lead:
          writer.write_scalars(step, row)
          with open(os.path.join(workdir, METRICS), 'a') as f:
            f.write(json.dumps(row) + '\n')
        save(wait=step == total)
      elif step % config.checkpoint.every_steps == 0:
        save()
  finally:
    signal.signal(signal.SIGTERM, old_handler)
    manager.wait_until_finished()
    writer.flush()

  final = evaluate(fns['eval'], state, eval_data, shard)
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
    with open(result_path, 'w') as f:
      json.dump(result, f, indent=2)
  return result


def _truncate_metrics(path, completed_epochs):
  """Drops metric rows of epochs that a resumed run will compute again."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    rows = [line for line in f if line.strip()]
  keep = [r for r in rows if json.loads(r)['epoch'] <= completed_epochs]
  with open(path, 'w') as f:
    f.writelines(keep)
