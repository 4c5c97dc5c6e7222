"""Where a training step's time goes: a profile of its XLA operations.

Builds one step as `bench_steps.py` does (the real step functions, jitted
as training jits them, one synthetic batch), runs `--steps` of it under
`jax.profiler.trace` and sums the trace's events by name: each XLA thunk
(a fusion, a library matmul such as `ynn_fusion`, a copy) with its total
milliseconds per step and share of the step. `--group` folds names that
differ only by a numeric suffix (`fusion.12` -> `fusion`).

COMMAND:
  python benchmarks/profile_step.py --backbones=vgg16 --kinds=single --steps=3
  XLA_FLAGS=--xla_cpu_experimental_xnn_fusion_type=... \
    python benchmarks/profile_step.py --kinds=meta_structured --group
"""

import collections
import glob
import gzip
import json
import re
import tempfile
import time

import bench_steps
import jax
from absl import app, flags

# Shares bench_steps.py's --backbones, --kinds, --conv_impl, --remat,
# --batch, --steps (profiled steps, after one warm-up) and --json.
_TOP = flags.DEFINE_integer('top', 25, 'Rows printed per step.')
_GROUP = flags.DEFINE_bool('group', False, 'Fold numeric name suffixes.')

# Events of the host runtime and of Python, not of the step's computation.
_RUNTIME = re.compile(r'^(\$|PjitFunction|CommonPjRt|PjRt|Thunk|end: )')


def thunk_ms(trace_events, steps: int, group: bool) -> dict[str, float]:
  """{event name: ms per step} of the trace's complete events ('X')."""
  totals = collections.Counter()
  for event in trace_events:
    name = event.get('name', '')
    if event.get('ph') != 'X' or _RUNTIME.match(name):
      continue
    if group:
      name = re.sub(r'[._]\d+$', '', name)
    totals[name] += event.get('dur', 0) / 1e3 / steps
  return dict(totals)


def profile(backbone: str, kind: str) -> dict:
  """{'wall_ms', 'thunks_ms': {name: ms per step}} of one step."""
  flag = flags.FLAGS
  steps = flag.steps or 3
  jitted, state, batches = bench_steps.build_step(
    backbone, kind, flag.conv_impl, flag.batch, flag.remat[0]
  )
  step = jitted.lower(state, *batches).compile()
  state = jax.block_until_ready(step(state, *batches))  # Warm-up.
  folder = tempfile.mkdtemp(prefix='profile_step_')
  start = time.perf_counter()
  with jax.profiler.trace(folder, create_perfetto_trace=True):
    for _ in range(steps):
      state = jax.block_until_ready(step(state, *batches))
  wall_ms = (time.perf_counter() - start) * 1e3 / steps
  (path,) = glob.glob(f'{folder}/**/perfetto_trace.json.gz', recursive=True)
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  rows = sorted(
    thunk_ms(events, steps, _GROUP.value).items(), key=lambda r: -r[1]
  )
  return {'wall_ms': wall_ms, 'thunks_ms': dict(rows)}


def main(argv):
  del argv
  flag, results = flags.FLAGS, {}
  for backbone in flag.backbones or ['vgg16']:
    for kind in flag.kinds or ['single']:
      result = results[f'{backbone}:{kind}'] = profile(backbone, kind)
      # The thunks of both threads add up to more than the wall clock:
      # shares are of the summed thunk time.
      total = sum(result['thunks_ms'].values())
      print(
        f'\n{backbone} {kind} conv_impl={flag.conv_impl}: '
        f'{result["wall_ms"]:.0f} ms per step (profiled), thunks '
        f'{total:.0f} ms summed over threads\n'
        '| thunk | ms / step | share |\n|---|--:|--:|'
      )
      for name, ms in list(result['thunks_ms'].items())[: _TOP.value]:
        print(f'| {name} | {ms:.1f} | {ms / total:.1%} |')
  if flag.json:
    with open(flag.json, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  app.run(main)
