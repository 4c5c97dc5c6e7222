"""The loop's checkpoints: one at a step, and the one a SIGTERM asks for
before the run stops (`Preempted`)."""

from maxl_jax.errors import Preempted
from maxl_jax.training import checkpointing, resumption, session


def save(
  ctx: session.Context, p: session.Progress, wait: bool = False
) -> session.Progress:
  """A checkpoint at `p.step` (after the non-finite guard)."""
  session.check_guard(ctx, p)
  p = session.charge(p, 'steps')
  position = resumption.data_position(ctx.data)
  checkpointing.save(ctx.manager, p.step, p.carry, position, wait=wait)
  return session.charge(p._replace(last_saved=p.step), 'checkpoint')


def stop_if_preempted(ctx: session.Context, p: session.Progress):
  """On SIGTERM: a checkpoint at `p.step` (unless saved), then `Preempted`."""
  if not ctx.watch.reached(p.step):
    return
  if p.step and p.last_saved != p.step:
    p = save(ctx, p)
  ctx.manager.wait_until_finished()
  raise Preempted(
    f'checkpoint saved at step {p.step} of {ctx.total}'
    if p.last_saved
    else 'stopped before the first step; nothing to save'
  )
