"""An epoch's end in the loop: its row of metrics.jsonl (the means, the
probe, the guard, the lr), the test set's evaluation and the checkpoint
when `cadence` says so, new metric sums; and row 0 (the initial
networks)."""

import time

import jax
import numpy as np

from maxl_jax.training import cadence, console, metrics, saves, session
from maxl_jax.training.mesh import replicated, to_host


def evaluate_initial(
  ctx: session.Context, p: session.Progress
) -> session.Progress:
  """Row 0 of metrics.jsonl: every curve starts at the initial networks."""
  p = session.charge(p, 'startup')
  row = {'epoch': 0, 'step': 0}
  row.update(session.evaluate_all(ctx, p.carry.state))
  p = session.write(ctx, session.charge(p, 'eval'), row)
  console.say(console.evaluation_line(row, ctx.options.epochs))
  return p._replace(tick=time.perf_counter())


def epoch_row(
  ctx: session.Context, p: session.Progress, epoch: int
) -> tuple[dict, dict]:
  """(the epoch's row of metrics.jsonl before evaluation, the probe's
  entries): the epoch's means, the probe, the guard and the lr."""
  row = {'epoch': epoch + 1, 'step': p.step}
  row.update(metrics.epoch_means(to_host(p.carry.sums)))
  probed = session.probe(ctx, p.carry.state)
  row.update(probed)
  row['nonfinite_steps'] = session.check_guard(ctx, p)
  row['lr'] = float(ctx.run.lr_schedule(int(to_host(p.carry.state.step1))))
  return row, probed


def zero_sums(carry, mesh):
  """`carry` with the metric sums of a new epoch."""
  zero = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), carry.sums)
  return carry.replace(sums=jax.device_put(zero, replicated(mesh)))


def end_epoch(ctx: session.Context, p: session.Progress) -> session.Progress:
  """The epoch's row (and evaluation), new sums, and a checkpoint if due."""
  epoch, options = p.step // ctx.run.schedule.epoch_steps - 1, ctx.options
  jax.block_until_ready(p.carry)
  p = p._replace(train_s=p.train_s + time.perf_counter() - p.tick)
  p = session.charge(p, 'steps')
  row, probed = epoch_row(ctx, p, epoch)
  final = p.final
  if cadence.evaluates(options, epoch, p.step, ctx.total):
    final = session.evaluate_all(ctx, p.carry.state)
    row.update(final)
  p = session.charge(p, 'eval')
  p = p._replace(carry=zero_sums(p.carry, ctx.mesh), final=final, probed=probed)
  p = session.write(ctx, p, row)
  if 'test/accuracy' in row:
    console.say(console.evaluation_line(row, options.epochs))
  if cadence.checkpoints(options, epoch, p.step, ctx.total):
    p = saves.save(ctx, p, wait=p.step == ctx.total)
  return p._replace(tick=time.perf_counter())
