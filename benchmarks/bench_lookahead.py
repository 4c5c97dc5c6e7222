"""The K-step lookahead's cost per K (maxl.lookahead_steps, DESIGN §2h).

For each K: the jitted MAXL meta step (`maxl_run.jit_steps`, as training),
built by bench_steps' `make_run` (θ1's default optimiser, the paper's
plain SGD), on synthetic batches: XLA's buffer assignment of the compiled
step (deterministic) and its median wall time over `--timed` steps (after
waiting for a quiet machine; compare times within one sitting). K = 1 is
the published structured estimator; K > 1 differentiates through a scan,
whose body XLA's FLOP count includes once, so no FLOPs are reported.

COMMAND:
  python benchmarks/bench_lookahead.py --backbone=convnet4 --ks=1,2,5,10,20 \
    --json=/tmp/bench_lookahead.json
"""

import json
import statistics
import time

import jax
from absl import app, flags
from bench_steps import _BATCH, _JSON, _wait_quiet, make_run, memory_analysis

from maxl_jax.training import maxl_run
from maxl_jax.training import mesh as mesh_lib

# bench_steps' flags (--batch, --json, ...) are defined by its import.
_BACKBONE = flags.DEFINE_string('backbone', 'convnet4', 'A bench_steps one.')
_KS = flags.DEFINE_list('ks', ['1', '2', '5', '10', '20'], 'Values of K.')
_TIMED = flags.DEFINE_integer('timed', 5, 'Timed meta steps per K.')


def measure(k: int) -> dict:
  """{'k', XLA memory (MB), 'median_s'} of the meta step at K."""
  run, state, batches = make_run(
    _BACKBONE.value, batch_size=_BATCH.value, lookahead_steps=k
  )
  mesh = mesh_lib.make_mesh()
  step = maxl_run.jit_steps(run, mesh)['meta']
  state = jax.device_put(state, mesh_lib.replicated(mesh))
  batches = jax.device_put(batches, mesh_lib.sharded(mesh))
  compiled = step.lower(state, *batches).compile()
  row = {'k': k, **memory_analysis(compiled)}
  state = jax.block_until_ready(step(state, *batches))  # Warm-up.
  times = []
  for _ in range(_TIMED.value):
    _wait_quiet(30)
    start = time.perf_counter()
    state = jax.block_until_ready(step(state, *batches))
    times.append(time.perf_counter() - start)
  row['median_s'] = statistics.median(times)
  return row


def main(argv):
  del argv
  rows = [measure(int(k)) for k in _KS.value]
  base = rows[0]
  print('| K | XLA total (MB) | meta step (s) | × K=1 |')
  print('|--:|--:|--:|--:|')
  for r in rows:
    print(
      f'| {r["k"]} | {r.get("xla_total_mb", float("nan")):.0f} '
      f'| {r["median_s"]:.3f} | {r["median_s"] / base["median_s"]:.2f} |'
    )
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  app.run(main)
