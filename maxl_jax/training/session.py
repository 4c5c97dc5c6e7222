"""What the loop's functions share (DESIGN §7): the fixed `Context`, the
`Progress` that each returns anew, and the small acts on them: charge the
wall clock, check the non-finite guard, probe, evaluate, write a row."""

from typing import Any, NamedTuple

from maxl_jax.training import cadence, checkpointing, metrics, protocol, timing
from maxl_jax.training.evaluation import DriftProbe, evaluate
from maxl_jax.training.mesh import to_host


class Context(NamedTuple):
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


class Progress(NamedTuple):
  """Where the loop is: each of its functions returns a new one."""

  step: int
  carry: Any  # The `carry.Carry`, replicated.
  last_saved: int | None  # The step of the newest checkpoint, if any.
  train_s: float  # Training's wall clock so far, evaluations excluded.
  tick: float  # perf_counter when the current epoch's training resumed.
  ledger: timing.Ledger  # Where the wall clock went (timing.jsonl).
  final: dict | None = None  # The last evaluation of the test set.
  probed: dict = {}  # The last probe's row entries.


def probe(ctx: Context, state) -> dict:
  """The 'probe' step's row entries on the fixed batch ({} without one)."""
  if 'probe' not in ctx.fns:
    return {}
  values = to_host(ctx.fns['probe'](state, ctx.probe_batch))
  return {k: float(v) for k, v in values.items()}


def check_guard(ctx: Context, p: Progress) -> int:
  """The non-finite steps so far; raises NonFiniteError per the run."""
  return metrics.check_guard(
    to_host(p.carry.guard), ctx.run.on_nonfinite, p.last_saved
  )


def charge(p: Progress, phase: str) -> Progress:
  """`p` with the wall clock since the last charge charged to `phase`."""
  return p._replace(ledger=p.ledger.charge(phase))


def write(ctx: Context, p: Progress, row: dict) -> Progress:
  """`row` to metrics.jsonl, and the running totals of `timing` with
  `train_s` (training's wall clock, evaluations excluded) to
  timing.jsonl."""
  p = charge(p, 'other')
  ctx.writer.write(p.step, row, {'train_s': p.train_s, **p.ledger.row()})
  return p


def evaluate_all(ctx, state) -> dict:
  """The test set's scores, and the label drift where there is a probe."""
  scoring = ctx.run.scoring()
  out = evaluate(ctx.fns['eval'], state, ctx.data.eval, ctx.mesh, **scoring)
  if ctx.drift is not None:
    out.update(ctx.drift.measure(state, ctx.mesh))
  return out
