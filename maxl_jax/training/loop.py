"""`train_and_evaluate(config, workdir)`: one run, MAXL's or the combiner's.

Training = load the data, build the run (`contract.build_run`: any
`contract.Run`, MAXL's `maxl_run.MaxlRun` or the loss combiner's
`combiner_run.CombinerRun`), initialise its label state (or restore a
checkpoint), then loop over the schedule's steps with evaluations, metrics
and checkpoints. The only module with side effects. What the loop asks of
a run is `protocol.Run`, and of its state `protocol.State`, nothing else.

The loop is short functions of a fixed `_Context` and a `_Progress` that
each returns anew: `_train_step`, `_end_epoch` (the row, the evaluation,
the checkpoint policy), `_save`, `_stop_if_preempted`, `_evaluate_initial`
(row 0) and `_result`.

Data parallel (SPMD, `mesh`): every process feeds its own share of each
batch. Only process 0 writes metrics, the config and the result; every
process takes part in checkpoints.

Fault tolerance: a checkpoint every `checkpoint.every_steps` steps, at each
epoch end and at the end; a rerun with the same workdir resumes from the
newest usable one (bitwise: the metric sums of the current epoch are in the
state); SIGTERM saves a checkpoint and stops (`Preempted`); a non-finite
step stops the run (`NonFiniteError`) before any checkpoint after it.
"""

import json
import time
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import logging
from clu import parameter_overview

from maxl_jax.data import pipeline
from maxl_jax.data.spec import DataSpec
from maxl_jax.errors import Preempted
from maxl_jax.training import (
  cadence,
  checkpointing,
  console,
  contract,
  metrics,
  protocol,
  resumption,
  timing,
)
from maxl_jax.training import workdir as workdir_lib
from maxl_jax.training.evaluation import DriftProbe, evaluate, params_digest
from maxl_jax.training.mesh import (
  global_batch,
  make_mesh,
  replicated,
  to_host,
)
from maxl_jax.training.provenance import git_commit
from maxl_jax.training.schedule import PRIMARY


def _evaluate_all(ctx, state) -> dict:
  """The test set's scores, and the label drift where there is a probe."""
  scoring = ctx.run.scoring()
  out = evaluate(ctx.fns['eval'], state, ctx.data.eval, ctx.mesh, **scoring)
  if ctx.drift is not None:
    out.update(ctx.drift.measure(state, ctx.mesh))
  return out


def train_and_evaluate(config, workdir: str, *, started=None) -> dict:
  """Trains per `config`, writing into `workdir`; returns the result dict.

  Resumes from the newest usable checkpoint in `workdir`; a finished run
  (result.json present, final step reached) returns its result untouched.
  `started`: the `time.perf_counter()` from which the run's start-up counts
  (`timing`; `experiments.run` passes the process's start), default now.

  Raises:
    UsageError: a bad config or workdir (before anything is written) or no
      usable checkpoint.
    NonFiniteError: a non-finite step with `train.on_nonfinite='stop'`.
    Preempted: SIGTERM; a checkpoint was saved.
  """
  started = time.perf_counter() if started is None else started
  # From the start, so that a SIGTERM is never lost.
  watch = checkpointing.PreemptionWatch()
  try:
    contract.validate(config)
    workdir_lib.check_writable(workdir)
    data = pipeline.get_datasets(
      DataSpec(**config.data),
      seed=config.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
    run = contract.build_run(config, data.info)  # Raises before any write.
    path = workdir_lib.as_path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    console.open_log(path)
    manager = checkpointing.make_manager(
      str(path / workdir_lib.CHECKPOINTS), config.checkpoint.keep
    )
    try:
      return _train(
        run,
        cadence.LoopOptions.from_config(config),
        config.to_json_best_effort(indent=2),
        data,
        path,
        manager,
        watch,
        started,
      )
    finally:
      manager.close()
  finally:
    watch.close()


class _Context(NamedTuple):
  """What the loop's functions share; none of it changes during the loop."""

  run: protocol.Run
  options: cadence.LoopOptions
  data: Any  # `pipeline.Datasets`.
  manager: Any  # The checkpoint manager.
  watch: checkpointing.PreemptionWatch
  mesh: Any
  fns: dict  # `run.jit_steps(mesh)`.
  writer: metrics.EpochWriter
  images: Any  # `labels.TrainingImages`.
  probe_batch: Any  # The fixed batch of 'probe', on the mesh.
  drift: DriftProbe | None
  total: int  # Global steps of the run.
  first: int  # The first step of this session (for steps/s).
  session_tick: float  # perf_counter at this session's first step.


class _Progress(NamedTuple):
  """Where the loop is: each of its functions returns a new one."""

  step: int
  carry: Any  # The `carry.Carry`, replicated.
  last_saved: int | None  # The step of the newest checkpoint, if any.
  train_s: float  # Training's wall clock so far, evaluations excluded.
  tick: float  # perf_counter when the current epoch's training resumed.
  ledger: timing.Ledger  # Where the wall clock went (timing.jsonl).
  final: dict | None = None  # The last evaluation of the test set.
  probed: dict = {}  # The last probe's row entries.


def _probe(ctx: _Context, state) -> dict:
  """The 'probe' step's row entries on the fixed batch ({} without one)."""
  if 'probe' not in ctx.fns:
    return {}
  values = to_host(ctx.fns['probe'](state, ctx.probe_batch))
  return {k: float(v) for k, v in values.items()}


def _check_guard(ctx: _Context, p: _Progress) -> int:
  """The non-finite steps so far; raises NonFiniteError per the run."""
  return metrics.check_guard(
    to_host(p.carry.guard), ctx.run.on_nonfinite, p.last_saved
  )


def _charge(p: _Progress, phase: str) -> _Progress:
  """`p` with the wall clock since the last charge charged to `phase`."""
  return p._replace(ledger=p.ledger.charge(phase))


def _save(ctx: _Context, p: _Progress, wait: bool = False) -> _Progress:
  """A checkpoint at `p.step` (after the non-finite guard)."""
  _check_guard(ctx, p)
  p = _charge(p, 'steps')
  position = resumption.data_position(ctx.data)
  checkpointing.save(ctx.manager, p.step, p.carry, position, wait=wait)
  return _charge(p._replace(last_saved=p.step), 'checkpoint')


def _stop_if_preempted(ctx: _Context, p: _Progress):
  """On SIGTERM: a checkpoint at `p.step` (unless saved), then `Preempted`."""
  if not ctx.watch.reached(p.step):
    return
  if p.step and p.last_saved != p.step:
    p = _save(ctx, p)
  ctx.manager.wait_until_finished()
  raise Preempted(
    f'checkpoint saved at step {p.step} of {ctx.total}'
    if p.last_saved
    else 'stopped before the first step; nothing to save'
  )


def _write(ctx: _Context, p: _Progress, row: dict) -> _Progress:
  """`row` to metrics.jsonl, and the running totals of `timing` with
  `train_s` (training's wall clock, evaluations excluded) to
  timing.jsonl."""
  p = _charge(p, 'other')
  ctx.writer.write(p.step, row, {'train_s': p.train_s, **p.ledger.row()})
  return p


def _evaluate_initial(ctx: _Context, p: _Progress) -> _Progress:
  """Row 0 of metrics.jsonl: every curve starts at the initial networks."""
  p = _charge(p, 'startup')
  row = {'epoch': 0, 'step': 0}
  row.update(_evaluate_all(ctx, p.carry.state))
  p = _write(ctx, _charge(p, 'eval'), row)
  console.say(console.evaluation_line(row, ctx.options.epochs))
  return p._replace(tick=time.perf_counter())


def _kind(ctx: _Context, step: int) -> str:
  """The step function of global step `step`: its schedule kind, with
  `+signal` on every `meta_signal_every`-th θ2 step (what trains g)."""
  schedule, every = ctx.run.schedule, ctx.options.meta_signal_every
  kind = schedule.kind(step)
  if kind == PRIMARY or not every or schedule.meta_index(step) % every:
    return kind
  signal = f'{kind}+signal'
  return signal if signal in ctx.fns else kind


def _train_step(ctx: _Context, p: _Progress) -> _Progress:
  """One global step of the schedule, and its progress report."""
  run, mesh, step = ctx.run, ctx.mesh, p.step
  kind = _kind(ctx, step)
  batches = [global_batch(next(ctx.data.train), mesh)]
  if run.held_out and kind != PRIMARY:
    batches.append(global_batch(next(ctx.data.meta), mesh))
  carry = ctx.fns[kind](p.carry, *batches)
  carry = carry.replace(state=run.refresh(carry.state, step, ctx.images))
  p = p._replace(step=step + 1, carry=carry)
  speed = (p.step - ctx.first) / (time.perf_counter() - ctx.session_tick)
  console.progress(p.step, ctx.total, speed)
  if cadence.reports(ctx.options, p.step):
    _check_guard(ctx, p)
    epoch = step // run.schedule.epoch_steps
    logging.info('epoch %d step %d/%d', epoch + 1, p.step, ctx.total)
  return p


def _epoch_row(ctx: _Context, p: _Progress, epoch: int) -> tuple[dict, dict]:
  """(the epoch's row of metrics.jsonl before evaluation, the probe's
  entries): the epoch's means, the probe, the guard and the lr."""
  row = {'epoch': epoch + 1, 'step': p.step}
  row.update(metrics.epoch_means(to_host(p.carry.sums)))
  probed = _probe(ctx, p.carry.state)
  row.update(probed)
  row['nonfinite_steps'] = _check_guard(ctx, p)
  row['lr'] = float(ctx.run.lr_schedule(int(to_host(p.carry.state.step1))))
  return row, probed


def _zero_sums(carry, mesh):
  """`carry` with the metric sums of a new epoch."""
  zero = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), carry.sums)
  return carry.replace(sums=jax.device_put(zero, replicated(mesh)))


def _end_epoch(ctx: _Context, p: _Progress) -> _Progress:
  """The epoch's row (and evaluation), new sums, and a checkpoint if due."""
  epoch, options = p.step // ctx.run.schedule.epoch_steps - 1, ctx.options
  jax.block_until_ready(p.carry)
  p = p._replace(train_s=p.train_s + time.perf_counter() - p.tick)
  p = _charge(p, 'steps')
  row, probed = _epoch_row(ctx, p, epoch)
  final = p.final
  if cadence.evaluates(options, epoch, p.step, ctx.total):
    final = _evaluate_all(ctx, p.carry.state)
    row.update(final)
  p = _charge(p, 'eval')
  p = p._replace(
    carry=_zero_sums(p.carry, ctx.mesh), final=final, probed=probed
  )
  p = _write(ctx, p, row)
  if 'test/accuracy' in row:
    console.say(console.evaluation_line(row, options.epochs))
  if cadence.checkpoints(options, epoch, p.step, ctx.total):
    p = _save(ctx, p, wait=p.step == ctx.total)
  return p._replace(tick=time.perf_counter())


def _loop(ctx: _Context, p: _Progress) -> _Progress:
  """Steps to the end: epoch ends, checkpoints, preemption."""
  per_epoch = ctx.run.schedule.epoch_steps
  try:
    while p.step < ctx.total:
      _stop_if_preempted(ctx, p)
      p = _train_step(ctx, p)
      if p.step % per_epoch == 0:
        p = _end_epoch(ctx, p)
      elif cadence.saves_within_epoch(ctx.options, p.step):
        p = _save(ctx, p)
  finally:
    ctx.manager.wait_until_finished()
    ctx.writer.flush()
  return _charge(p, 'checkpoint')  # The last asynchronous writes.


def _result(ctx: _Context, p: _Progress, start: float) -> dict:
  """result.json's fields (the final evaluation, repeated if missing)."""
  final, probed = p.final, p.probed
  if final is None:  # Resumed from the final checkpoint without a result.
    final = _evaluate_all(ctx, p.carry.state)
    probed = _probe(ctx, p.carry.state)
    p = _charge(p, 'eval')
  run = ctx.run
  sha, norms = params_digest(*run.digested(p.carry.state))
  return {
    'method': run.method,
    'dataset': run.info.name,
    'seed': run.seed,
    'epochs': ctx.options.epochs,
    'steps': p.step,
    'test_accuracy': final['test/accuracy'],
    **run.result_fields({**final, **probed}),
    'wall_time_s': time.time() - start,
    'params_sha256': sha,
    'git_commit': git_commit(),  # HEAD, '-dirty' if edited; None.
    'param_norms': norms,
    'timing': _charge(p, 'other').ledger.summary(),
  }


def _announce(run, options: cadence.LoopOptions, total: int):
  """The run's first line: what trains, on what, how long."""
  console.say(
    f'Training {run.method} on {run.info.name}: {total} steps '
    f'({options.epochs} epochs of {run.schedule.epoch_steps}) on '
    f'{jax.device_count()} {jax.default_backend()} device(s) '
    f'(process {jax.process_index()} of {jax.process_count()}).'
  )


def _train(
  run, options, config_json, data, workdir, manager, watch, started
) -> dict:
  """The training loop of `train_and_evaluate`."""
  lead, mesh = jax.process_index() == 0, make_mesh()
  total = options.epochs * run.schedule.epoch_steps
  step, carry, last_saved = resumption.initial(run, data, manager, mesh)
  state = carry.state
  if step:
    console.say('Resuming from the checkpoint at step %d of %d.', step, total)
  else:
    console.say('Starting from scratch: no checkpoint in %s.', workdir)
  finished = resumption.finished(step, total, workdir)
  if finished is not None:
    return finished
  _announce(run, options, total)
  if lead:
    workdir_lib.write_run_files(workdir, config_json, run.info)
    parameter_overview.log_parameter_overview(state.theta1)
  start = time.time()
  ctx = _context(run, options, data, manager, watch, mesh, step, workdir)
  drift = DriftProbe.create(run, state, data.eval, mesh, options.drift_images)
  ctx = ctx._replace(drift=drift)
  ledger = timing.Ledger.open(started, ctx.writer.carried_row())
  p = _Progress(
    step, carry, last_saved, ctx.writer.carried('train_s'), 0.0, ledger
  )
  if step == 0:
    p = _evaluate_initial(ctx, p)
  p = _charge(p, 'startup')._replace(tick=time.perf_counter())
  p = _loop(ctx, p)
  result = _result(ctx, p, start)
  if lead:
    (workdir / workdir_lib.RESULT).write_text(json.dumps(result, indent=2))
  sha = result['params_sha256']
  logging.info('Finished at step %d; params sha256 %s.', p.step, sha)
  return result


def _context(run, options, data, manager, watch, mesh, step, workdir):
  """The loop's `_Context` for a session that starts at `step`."""
  total = options.epochs * run.schedule.epoch_steps
  lead = jax.process_index() == 0
  # A run from scratch drops every row an earlier attempt wrote.
  first_row = step // run.schedule.epoch_steps if step else -1
  writer = metrics.EpochWriter(workdir, first_row, lead, options.tensorboard)
  return _Context(
    run=run,
    options=options,
    data=data,
    manager=manager,
    watch=watch,
    mesh=mesh,
    fns=run.jit_steps(mesh),
    writer=writer,
    images=resumption.training_images(data.train),
    probe_batch=global_batch(run.probe_batch(data), mesh),
    drift=None,
    total=total,
    first=step,
    session_tick=time.perf_counter(),  # For steps/s and ETA.
  )
