"""`train_and_evaluate(config, workdir)`: one run, MAXL's or the combiner's.

Training = load the data, build the run (`contract.build_run`: any
`protocol.Run`, MAXL's `maxl_run.MaxlRun` or the loss combiner's
`combiner_run.CombinerRun`), initialise its label state (or restore a
checkpoint), then loop over the schedule's steps with evaluations, metrics
and checkpoints. The only module with side effects. What the loop asks of
a run is `protocol.Run`, and of its state `protocol.State`, nothing else.

The loop is short functions of a fixed `session.Context` and a
`session.Progress` that each returns anew: `_train_step` here, an
epoch's end and row 0 in `epochs`, checkpoints and SIGTERM in `saves`,
result.json in `outcome`; `cadence` says when each is due.

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

import jax
from absl import logging
from clu import parameter_overview

from maxl_jax.data import pipeline
from maxl_jax.data.spec import DataSpec
from maxl_jax.training import (
  cadence,
  checkpointing,
  console,
  contract,
  epochs,
  metrics,
  outcome,
  resumption,
  saves,
  session,
  timing,
)
from maxl_jax.training import workdir as workdir_lib
from maxl_jax.training.evaluation import DriftProbe
from maxl_jax.training.mesh import global_batch, make_mesh
from maxl_jax.training.schedule import PRIMARY


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


def _kind(ctx: session.Context, step: int) -> str:
  """The step function of global step `step`: its schedule kind, with
  `+signal` on every `meta_signal_every`-th θ2 step (what trains g)."""
  schedule, every = ctx.run.schedule, ctx.options.meta_signal_every
  kind = schedule.kind(step)
  if kind == PRIMARY or not every or schedule.meta_index(step) % every:
    return kind
  signal = f'{kind}+signal'
  return signal if signal in ctx.fns else kind


def _train_step(ctx: session.Context, p: session.Progress) -> session.Progress:
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
    session.check_guard(ctx, p)
    epoch = step // run.schedule.epoch_steps
    logging.info('epoch %d step %d/%d', epoch + 1, p.step, ctx.total)
  return p


def _loop(ctx: session.Context, p: session.Progress) -> session.Progress:
  """Steps to the end: epoch ends, checkpoints, preemption."""
  per_epoch = ctx.run.schedule.epoch_steps
  try:
    while p.step < ctx.total:
      saves.stop_if_preempted(ctx, p)
      p = _train_step(ctx, p)
      if p.step % per_epoch == 0:
        p = epochs.end_epoch(ctx, p)
      elif cadence.saves_within_epoch(ctx.options, p.step):
        p = saves.save(ctx, p)
  finally:
    ctx.manager.wait_until_finished()
    ctx.writer.flush()
  return session.charge(p, 'checkpoint')  # The last asynchronous writes.


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
  p = session.Progress(
    step, carry, last_saved, ctx.writer.carried('train_s'), 0.0, ledger
  )
  if step == 0:
    p = epochs.evaluate_initial(ctx, p)
  p = session.charge(p, 'startup')._replace(tick=time.perf_counter())
  p = _loop(ctx, p)
  result = outcome.result(ctx, p, start)
  if lead:
    (workdir / workdir_lib.RESULT).write_text(json.dumps(result, indent=2))
  sha = result['params_sha256']
  logging.info('Finished at step %d; params sha256 %s.', p.step, sha)
  return result


def _context(run, options, data, manager, watch, mesh, step, workdir):
  """The loop's `session.Context` for a session that starts at `step`."""
  total = options.epochs * run.schedule.epoch_steps
  lead = jax.process_index() == 0
  # A run from scratch drops every row an earlier attempt wrote.
  first_row = step // run.schedule.epoch_steps if step else -1
  writer = metrics.EpochWriter(workdir, first_row, lead, options.tensorboard)
  return session.Context(
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
