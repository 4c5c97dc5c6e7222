"""Step-time benchmark: the real jitted training steps on synthetic data.

Times `steps.primary_step` (Single, and MAXL's θ1 step), `steps.meta_step`
and `steps.interleaved_step` (each with every estimator of
`meta_grad.ESTIMATORS`), built by `contract.build_run` and jitted by
`maxl_run.jit_steps` exactly as training does, with the shapes of the
paper's settings: ConvNet-4 32x32x1
psi=[3]*10 hidden 256, VGG-16 32x32x3 psi=[5]*20 hidden 512, and ResNet-32
32x32x3 psi=[5]*10 hidden 512 (no peer). Batch 100; optimisers, γ, λ, α of
experiments/configs/default.py.

Each (backbone, kind) runs in a fresh child process, so its peak RSS is its
own. The child imports no TFDS/TensorFlow (the input pipeline does: +~570 MB
RSS): `contract.build_run` builds a run from a dataset description alone.
Columns and ratios: benchmarks/README.md; the tables: step_tables.py.

Memory: XLA's compiled memory analysis of each step (temporaries, arguments,
outputs, aliased = donated bytes; what a device allocator would need,
deterministic), beside the peak RSS of its child process (the peer's too).
`--memory_only` compiles each step without running it: the XLA numbers in
seconds.

Like `experiments.run`, the benchmark restarts itself under jemalloc when it
can (`experiments/allocator.py`), so it times what training runs; children
inherit it. MAXL_ALLOCATOR=system times the system allocator instead. The
peer runs on `--peer_allocator` (default: the system allocator, as its
authors run it). `--peer` runs the PyTorch peer, peer_torch.py (the same
steps in the original's style; `--peer_script` another), each of its
(backbone, kind) in its own process too, and prints ours / peer per step.

COMMAND:
  python benchmarks/bench_steps.py --json=/tmp/bench_steps.json
  python benchmarks/bench_steps.py --quick            # ConvNet-4, < 2 min
  python benchmarks/bench_steps.py --quick --peer     # and the PyTorch peer
  python benchmarks/bench_steps.py --memory_only --remat=none,blocks
"""

import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import repo_path  # noqa: F401 - experiments/ from the checkout.
import step_tables
from absl import app, flags

from experiments import allocator
from experiments.configs import default
from maxl_jax import meta_grad
from maxl_jax.data.info import DatasetInfo
from maxl_jax.networks import layers, trunks
from maxl_jax.training import carry, contract, maxl_run
from maxl_jax.training import mesh as mesh_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_SCRIPT = os.path.join(REPO, 'benchmarks', 'peer_torch.py')
BACKBONES = {  # name: (image channels, primary classes, psi[c], head hidden)
  'convnet4': (1, 10, 3, 256),
  'vgg16': (3, 20, 5, 512),
  'resnet32': (3, 10, 5, 512),
}
# Every estimator; implicit_cg: implicit with the CG solver (both K = 3).
METHODS = (*meta_grad.ESTIMATORS, 'implicit_cg')
KINDS = ('single', 'theta1', *(f'{g}_{m}' for g in ('meta', 'interleaved')
                               for m in METHODS),
         'meta+signal_structured', 'interleaved+signal_structured')  # fmt: skip
RESULT = 'RESULT '

_BACKBONES = flags.DEFINE_list('backbones', None, f'Of {list(BACKBONES)}.')
_KINDS = flags.DEFINE_list('kinds', None, f'Of {list(KINDS)}; default all.')
_STEPS = flags.DEFINE_integer('steps', None, 'Timed steps (20; quick 5).')
_WARMUP = flags.DEFINE_integer('warmup', None, 'Untimed steps (3; quick 1).')
_QUICK = flags.DEFINE_bool('quick', False, 'ConvNet-4 only, few steps.')
_BATCH = flags.DEFINE_integer('batch', 100, 'Batch size.')
_CONV = flags.DEFINE_enum('conv_impl', 'auto', layers.CONV_IMPLS, '')
_REMAT = flags.DEFINE_list(
  'remat', ['none'], f'config.model.remat: some of {list(trunks.REMAT_MODES)}.'
)
_MEMORY_ONLY = flags.DEFINE_bool(
  'memory_only', False, 'Compile only: XLA memory analysis, no timed steps.'
)
_JSON = flags.DEFINE_string('json', None, 'Write all results to this file.')
_PEER = flags.DEFINE_bool('peer', False, 'Also run the PyTorch peer.')
_PEER_SCRIPT = flags.DEFINE_string(
  'peer_script', PEER_SCRIPT, "The peer's script (peer_torch.py's flags)."
)
_QUIET = flags.DEFINE_float(
  'quiet_wait', None, 'Max s to wait for a quiet machine per config (60/5).'
)
_PEER_ALLOC = flags.DEFINE_enum(
  'peer_allocator', 'system', allocator.CHOICES, 'Host allocator of the peer.'
)
_CHILD = flags.DEFINE_string('child', None, 'Internal: backbone:kind.')


def make_run(backbone, conv_impl='auto', single=False, batch_size=100,
             meta_grad_name='structured', remat='none',
             lookahead_steps=1):  # fmt: skip
  """(run, initial state, batches): `contract.build_run`, synthetic batches.

  The dataset description has 500 steps of `batch_size` per epoch (this only
  places the, here irrelevant, learning-rate decay). `batches` is (training
  batch,), plus a held-out batch for `implicit` (default `config.inverse_hvp`:
  Neumann, K = 3). `lookahead_steps`: config.maxl.lookahead_steps.
  """
  channels, classes, psi_per_class, hidden = BACKBONES[backbone]
  config = default.get_config()
  config.method = 'single' if single else 'maxl'
  config.model.name, config.model.head_hidden = backbone, hidden
  config.model.conv_impl, config.model.remat = conv_impl, remat
  config.maxl.psi_per_class = psi_per_class
  config.data.batch_size = batch_size
  if meta_grad_name == 'implicit_cg':
    meta_grad_name = 'implicit'
    config.inverse_hvp.solver = 'cg'
    config.inverse_hvp.cg_steps = config.inverse_hvp.neumann_steps
  config.maxl.meta_grad = meta_grad_name
  config.maxl.lookahead_steps = lookahead_steps
  held_out = meta_grad_name == 'implicit' and not single
  config.data.meta_fraction = 0.1 if held_out else 0.0
  shape = (32, 32, channels)
  info = DatasetInfo(
    'synthetic', classes, shape, 500 * batch_size, 0,
    num_meta=50 * batch_size if held_out else 0,
  )  # fmt: skip
  run = contract.build_run(config, info)
  rng = np.random.default_rng(0)

  def batch():
    return {
      'image': rng.standard_normal((batch_size, *shape), np.float32),
      'label': rng.integers(0, classes, batch_size).astype(np.int32),
      'index': np.arange(batch_size, dtype=np.int32),
    }

  batches = (batch(), batch()) if held_out else (batch(),)
  return run, carry.start(run.create_state({}), run.zero_sums()), batches


# A group's step; `+signal`: with what trains g (`log.meta_signal_every`).
STEP_OF_GROUP = {'single': 'primary', 'theta1': 'primary', 'meta': 'meta',
                 'interleaved': 'interleaved', 'meta+signal': 'meta+signal',
                 'interleaved+signal': 'interleaved+signal'}  # fmt: skip


def build_step(backbone, kind, conv_impl, batch_size, remat='none'):
  """(jitted step, state, batches), from `maxl_run.jit_steps` as training."""
  group, _, method = kind.partition('_')
  run, state, batches = make_run(
    backbone, conv_impl, group == 'single', batch_size,
    method or 'structured', remat,
  )  # fmt: skip
  if group in ('single', 'theta1'):
    batches = batches[:1]
  mesh = mesh_lib.make_mesh()
  jitted = maxl_run.jit_steps(run, mesh)[STEP_OF_GROUP[group]]
  return (
    jitted,
    jax.device_put(state, mesh_lib.replicated(mesh)),
    jax.device_put(batches, mesh_lib.sharded(mesh)),
  )


def _busy_cpu_s():
  """Busy CPU seconds of the whole machine (all cores), from /proc/stat."""
  with open('/proc/stat') as f:
    user, nice, system, _, _, irq, soft = map(int, f.readline().split()[1:8])
  return (user + nice + system + irq + soft) / os.sysconf('SC_CLK_TCK')


def _wait_quiet(max_s, threshold=0.15):
  """Waits (up to max_s) until other processes use < threshold of the CPUs."""
  start = time.time()
  while time.time() - start < max_s:
    busy = _busy_cpu_s()
    time.sleep(0.5)
    if (_busy_cpu_s() - busy) / (0.5 * os.cpu_count()) < threshold:
      break
  return time.time() - start


MB = 2**20


def memory_analysis(compiled):
  """XLA's buffer assignment of a compiled step, in MB (None if absent).

  temp: the temporaries; argument/output: the inputs and results; alias:
  the outputs that reuse donated inputs (`donate_argnums=0`: the state).
  total = argument + output - alias + temp: what the device holds at the
  step's peak (XLA's own `peak_memory_in_bytes` where it reports one).
  """
  stats = compiled.memory_analysis()
  if stats is None:
    return {}
  out = {
    f'xla_{name}_mb': getattr(stats, f'{name}_size_in_bytes') / MB
    for name in ('temp', 'argument', 'output', 'alias')
  }
  out['xla_total_mb'] = (
    out['xla_argument_mb'] + out['xla_output_mb'] - out['xla_alias_mb']
    + out['xla_temp_mb']
  )  # fmt: skip
  peak = getattr(stats, 'peak_memory_in_bytes', 0)
  out['xla_peak_mb'] = peak / MB if peak else None
  return out


def _rss_mb(field='VmRSS'):
  """This process's resident set, MB: `VmRSS` now, `VmHWM` its peak."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(f'{field}:'):
        return int(line.split()[1]) / 1024
  return None


def _reset_peak_rss() -> bool:
  """Restarts VmHWM from the current RSS (Linux), so that the peak of the
  steps is read apart from the compiler's; False where not possible."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def device_peak_mb():
  """The device allocator's peak (GPU/TPU), MB; None on CPU."""
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return peak and peak / MB


def run_child(spec):
  """Compiles and times one (backbone, kind[, remat]); prints a RESULT line."""
  backbone, kind, *remat = spec.split(':')
  remat = remat[0] if remat else 'none'
  jitted, state, batches = build_step(
    backbone, kind, _CONV.value, _BATCH.value, remat
  )
  start = time.perf_counter()
  step = jitted.lower(state, *batches).compile()  # What jit would run.
  compile_s = time.perf_counter() - start
  cost = step.cost_analysis()  # XLA's estimate; a list on some versions.
  flops = ((cost[0] if isinstance(cost, list) else cost) or {}).get('flops')
  base = {
    'backbone': backbone,
    'kind': kind,
    'remat': remat,
    'compile_s': compile_s,
    'gflop': flops and flops / 1e9,
    **memory_analysis(step),
    # The process after compiling, before any step runs.
    'rss_compiled_mb': _rss_mb(),
    'peak_rss_compiled_mb': resource.getrusage(
      resource.RUSAGE_SELF
    ).ru_maxrss / 1024,
  }  # fmt: skip
  if _MEMORY_ONLY.value:
    base['peak_rss_mb'] = base['peak_rss_compiled_mb']
    print(RESULT + json.dumps(base), flush=True)
    return
  resettable = _reset_peak_rss()  # The steps' peak, without compiling's.
  for _ in range(_WARMUP.value):
    state = jax.block_until_ready(step(state, *batches))
  busy0, own0, wall0 = _busy_cpu_s(), time.process_time(), time.perf_counter()
  usage0 = resource.getrusage(resource.RUSAGE_SELF)
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    state = jax.block_until_ready(step(state, *batches))
    times.append((time.perf_counter() - start) * 1e3)
  wall, own = time.perf_counter() - wall0, time.process_time() - own0
  usage = resource.getrusage(resource.RUSAGE_SELF)
  other = max(0.0, _busy_cpu_s() - busy0 - own) / (wall * os.cpu_count())
  result = {
    **base,
    'median_ms': statistics.median(times),
    'min_ms': min(times),
    'max_ms': max(times),
    'n': len(times),
    'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    'rss_after_mb': _rss_mb(),  # After the steps (jemalloc keeps pages).
    # The peak while stepping (warm-up included), compilation excluded.
    'peak_rss_steps_mb': _rss_mb('VmHWM') if resettable else None,
    'device_peak_mb': device_peak_mb(),
    'other_cpu': round(other, 3),
    # Page faults and kernel time of the timed steps (see "Allocator").
    'page_faults_per_step': (usage.ru_minflt - usage0.ru_minflt) / len(times),
    'kernel_s_per_step': (usage.ru_stime - usage0.ru_stime) / len(times),
    'nonfinite_steps': int(state.guard['count']),  # The loop's carry.
    'step_ms': [round(t, 2) for t in times],
  }
  print(RESULT + json.dumps(result), flush=True)


def run_ours(jobs, steps_, warmup, quiet_wait):
  """Each (backbone, kind, remat) in a fresh interpreter; the results."""
  results = []
  for backbone, kind, remat in jobs:
    waited = _wait_quiet(quiet_wait)
    cmd = [sys.executable, os.path.abspath(__file__), f'--steps={steps_}']
    cmd += [f'--child={backbone}:{kind}:{remat}', f'--warmup={warmup}']
    cmd += [f'--batch={_BATCH.value}', f'--conv_impl={_CONV.value}']
    cmd += ['--memory_only'] * _MEMORY_ONLY.value
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [s for s in proc.stdout.splitlines() if s.startswith(RESULT)]
    if lines:
      results.append(json.loads(lines[-1][len(RESULT) :]))
    else:
      error = f'rc={proc.returncode}: {proc.stderr[-600:]}'
      results.append(
        {'backbone': backbone, 'kind': kind, 'remat': remat, 'error': error}
      )
    note = results[-1].get('error', '')[-300:]
    wait = f' (waited {waited:.0f}s for quiet)' if waited > 1 else ''
    name = step_tables.label(results[-1])
    print(
      f'  {name} {kind}: {time.time() - start:.0f}s{wait} {note}', flush=True
    )
  return results


def run_peer(backbones, kinds, steps_, warmup, quiet_wait):
  """The PyTorch peer's kinds matching ours (`step_tables.PEER_KINDS`), each
  in its own process; [] without torch."""
  backbones = [b for b in backbones if b in ('convnet4', 'vgg16')]
  peer_kinds = step_tables.PEER_KINDS
  kinds = list(dict.fromkeys(peer_kinds[k] for k in kinds if k in peer_kinds))
  if not backbones or not kinds or importlib.util.find_spec('torch') is None:
    print('peer skipped: torch not importable, or no peer backbone or kind.')
    return []
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'peer.json')
    kinds = ','.join(kinds)
    cmd = [sys.executable, _PEER_SCRIPT.value, '--json', path, '--kinds']
    cmd += [kinds, '--backbones', ','.join(backbones), '--steps', str(steps_)]
    cmd += ['--warmup', str(warmup), '--batch', str(_BATCH.value)]
    cmd += ['--quiet-wait', str(quiet_wait)]
    env = {k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'}
    if _PEER_ALLOC.value == 'jemalloc':
      env['LD_PRELOAD'] = allocator.find_jemalloc()
      env.setdefault('MALLOC_CONF', allocator.JEMALLOC_CONF)
    subprocess.run(cmd + ['--quick'] * _QUICK.value, check=True, env=env)
    with open(path) as f:
      return json.load(f)['results']


def main(argv):
  del argv
  if _CHILD.value:
    return run_child(_CHILD.value)
  quick = _QUICK.value
  all_bb = ['convnet4'] if quick else list(BACKBONES)
  backbones, kinds = _BACKBONES.value or all_bb, _KINDS.value or list(KINDS)
  for name in backbones + kinds:
    if name not in BACKBONES and name not in KINDS:
      raise app.UsageError(f'unknown backbone or kind {name!r}.')
  steps_ = _STEPS.value or (5 if quick else 20)
  warmup = _WARMUP.value if _WARMUP.value is not None else (1 if quick else 3)
  quiet_wait = _QUIET.value if _QUIET.value is not None else 5 if quick else 60
  print(
    f'maxl_jax steps: jax {jax.__version__} ({jax.default_backend()}, '
    f'{os.cpu_count()} cpus), conv_impl={_CONV.value}, batch '
    f'{_BATCH.value}, {warmup} warm-up + {steps_} timed steps, host '
    f'allocator {allocator.active()} (peer {_PEER_ALLOC.value})',
    flush=True,
  )
  if _PEER_ALLOC.value == 'jemalloc' and not allocator.find_jemalloc():
    raise app.UsageError(
      '--peer_allocator=jemalloc: libjemalloc.so.2 not found '
      '(apt-get install libjemalloc2).'
    )
  if _CONV.value == 'im2col_bf16':  # Differentiable once: no grad of grad.
    kinds = [k for k in kinds if not k.endswith('_unrolled')]
  for remat in _REMAT.value:
    if remat not in trunks.REMAT_MODES:
      raise app.UsageError(f'unknown remat {remat!r}.')
  jobs = [
    (bb, kind, remat)
    for bb in backbones
    for remat in _REMAT.value
    for kind in kinds
  ]
  results = run_ours(jobs, steps_, warmup, quiet_wait)
  peer = []
  if _PEER.value:
    peer = run_peer(backbones, kinds, steps_, warmup, quiet_wait)
  step_tables.print_table(results, f'maxl_jax (jax {jax.__version__})')
  if peer:
    step_tables.print_table(
      peer, 'PyTorch peer (torch, same machine, same sitting)'
    )
  step_tables.print_memory(results, peer)
  step_tables.print_ratios(results, peer, METHODS)
  step_tables.print_peer(results, peer)
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      allocators = {'ours': allocator.active(), 'peer': _PEER_ALLOC.value}
      json.dump(
        {'results': results, 'peer': peer, 'allocator': allocators}, f, indent=1
      )


if __name__ == '__main__':
  allocator.maybe_reexec()
  app.run(main)
