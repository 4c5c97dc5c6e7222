"""The PyTorch peer: MAXL's training steps as the original code writes them.

A PyTorch implementation of the steps `bench_steps.py` times, in the style
of the original MAXL code: the weights are a dict of leaf tensors and the
forward is functional (`F.conv2d`, `F.batch_norm`, `F.max_pool2d`,
`F.linear`), so the lookahead runs on fast weights. The networks, losses
and settings are this repository's (`maxl_jax.networks`, `maxl_jax.losses`,
`experiments/configs/default.py`); tests/test_peer.py checks that, from the
same weights, the peer's gradients equal ours in float64.

Step kinds (the matching kinds of ours: `PEER_KINDS` of step_tables.py):
  single          the single-task network: f fwd + bwd, SGD.
  theta1          MAXL's θ1 step: g fwd (no grad), f fwd + bwd on
                  L_pri + L_aux(g), SGD.
  meta2           the exact meta step: θ1⁺ = θ1 − α∇θ1 L_train through
                  `torch.autograd.grad(create_graph=True)`, then
                  ∇θ2 [L_pri(θ1⁺) + λH(g)] by a second backward, SGD on θ2.
  fd              the original's finite-difference meta step:
                  v = ∇θ1⁺ L_pri(θ1⁺), the auxiliary focal terms at θ1 ± εv
                  (ε = fd_eps / ‖v‖), one backward through g with their
                  central difference and λ∇H, SGD on θ2.
  interleaved2    meta2, and θ1's SGD step with the lookahead's ∇θ1 L_train.
  interleaved_fd  fd, and θ1's SGD step with the lookahead's ∇θ1 L_train.

As ours: every training-mode forward normalises with batch statistics; the
forward at θ1⁺ (and at θ1 ± εv) never updates running statistics; a meta
step updates g's running statistics only, a θ1 step f's only (g's labels
use batch statistics, which are discarded). BatchNorm's momentum is
torch's 0.1 (flax's 0.9) and eps 1e-5; torch keeps the unbiased batch
variance in its running variance where flax keeps the biased one (only
evaluation reads it). Parameters: Xavier-uniform kernels, zero biases,
BatchNorm scale 1 and bias 0, as ours. Images are NCHW (ours NHWC): the
first head layer's inputs are in (C, H, W) order (`from_flax` permutes
ours).

Each (backbone, kind) runs in a fresh child process, so its peak RSS is
its own. Threads: torch's default (intra-op = the cores; OMP_NUM_THREADS
respected).

COMMAND:
  python benchmarks/peer_torch.py --quick      # ConvNet-4, a few steps
  python benchmarks/peer_torch.py --json=/tmp/peer.json
  python benchmarks/bench_steps.py --peer      # ours, then this, ratios
"""

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# experiments/configs/default.py's values (tests/test_peer.py checks them).
GAMMA, LAM, FD_EPS = 2.0, 0.2, 0.01
LR1, MOMENTUM1, WD1 = 0.01, 0.0, 0.0  # θ1's SGD; α = LR1 (lookahead).
LR2, MOMENTUM2, WD2 = 1e-3, 0.0, 5e-4  # θ2's SGD, coupled weight decay.
BN_MOMENTUM, BN_EPS = 0.1, 1e-5  # torch's convention: 1 - flax's 0.9.


@dataclasses.dataclass(frozen=True)
class Arch:
  """A trunk of conv3x3-BN-ReLU blocks and two-layer heads.

  Attributes:
    blocks: (width, convolutions) of each block; a 2x2 max-pool after each.
    hidden: hidden units of each head.
    channels: image channels.
    size: image height and width.
    num_primary: P, primary classes.
    psi: auxiliary classes of each primary class; K = sum(psi).
  """

  blocks: tuple[tuple[int, int], ...]
  hidden: int
  channels: int
  size: int
  num_primary: int
  psi: tuple[int, ...]

  def features(self):
    """(C, H, W) of the trunk's output."""
    side = self.size // 2 ** len(self.blocks)
    return self.blocks[-1][0], side, side


# bench_steps.BACKBONES' shapes (ConvNet-4 and VGG-16 of trunks.py).
ARCHS = {
  'convnet4': Arch(
    ((32, 1), (64, 1), (128, 1), (256, 1)), 256, 1, 32, 10, (3,) * 10
  ),
  'vgg16': Arch(
    ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 512, 3, 32, 20, (5,) * 20
  ),
}
KINDS = ('single', 'theta1', 'meta2', 'fd', 'interleaved2', 'interleaved_fd')
RESULT = 'RESULT '


def make_params(torch, arch, heads, generator, dtype):
  """(params, running statistics): flat dicts, Xavier-uniform kernels."""
  init = torch.nn.init
  params, stats = {}, {}

  def xavier(*shape):
    return init.xavier_uniform_(
      torch.empty(shape, dtype=dtype), generator=generator
    )

  cin, i = arch.channels, 0
  for width, depth in arch.blocks:
    for _ in range(depth):
      params[f'conv{i}.weight'] = xavier(width, cin, 3, 3)
      params[f'conv{i}.bias'] = torch.zeros(width, dtype=dtype)
      params[f'bn{i}.weight'] = torch.ones(width, dtype=dtype)
      params[f'bn{i}.bias'] = torch.zeros(width, dtype=dtype)
      stats[f'bn{i}.mean'] = torch.zeros(width, dtype=dtype)
      stats[f'bn{i}.var'] = torch.ones(width, dtype=dtype)
      cin, i = width, i + 1
  c, h, w = arch.features()
  for head, out in heads.items():
    params[f'{head}.fc1.weight'] = xavier(arch.hidden, c * h * w)
    params[f'{head}.fc1.bias'] = torch.zeros(arch.hidden, dtype=dtype)
    params[f'{head}.fc2.weight'] = xavier(out, arch.hidden)
    params[f'{head}.fc2.bias'] = torch.zeros(out, dtype=dtype)
  for p in params.values():
    p.requires_grad_(True)
  return params, stats


def forward(torch, arch, weights, x, heads, stats=None):
  """{head: logits} of the functional network at `weights` (any tensors).

  BatchNorm normalises with batch statistics; with `stats` it also updates
  those running statistics in place, as `nn.BatchNorm2d` in training mode.
  """
  fn = torch.nn.functional
  h, i = x, 0
  for _, depth in arch.blocks:
    for _ in range(depth):
      h = fn.conv2d(
        h, weights[f'conv{i}.weight'], weights[f'conv{i}.bias'], padding=1
      )
      h = fn.batch_norm(
        h,
        None if stats is None else stats[f'bn{i}.mean'],
        None if stats is None else stats[f'bn{i}.var'],
        weights[f'bn{i}.weight'],
        weights[f'bn{i}.bias'],
        training=True,
        momentum=BN_MOMENTUM,
        eps=BN_EPS,
      )
      h, i = fn.relu(h), i + 1
    h = fn.max_pool2d(h, 2)
  h = h.flatten(1)
  out = {}
  for head in heads:
    z = fn.relu(
      fn.linear(h, weights[f'{head}.fc1.weight'], weights[f'{head}.fc1.bias'])
    )
    out[head] = fn.linear(
      z, weights[f'{head}.fc2.weight'], weights[f'{head}.fc2.bias']
    )
  return out


def focal_terms(torch, logits):
  """[N, K] focal terms `-(1 - p)^γ log p` of the softmax of `logits`."""
  log_p = torch.log_softmax(logits, 1)
  return -((-torch.expm1(log_p)) ** GAMMA) * log_p


def entropy(torch, probs):
  """`Σ_k m_k log m_k`, m the batch mean of `probs` (0 log 0 = 0)."""
  m = probs.mean(0)
  return (m * torch.log(torch.where(m > 0, m, torch.ones_like(m)))).sum()


def class_mask(torch, psi):
  """[P, K] bool: the auxiliary classes of each primary class."""
  mask = torch.zeros(len(psi), sum(psi), dtype=torch.bool)
  start = 0
  for c, n in enumerate(psi):
    mask[c, start : start + n] = True
    start += n
  return mask


class Peer:
  """The networks, their optimisers and one batch; a method per step kind.

  Every `step_<kind>` updates the weights and returns the gradients it
  applied ({name: tensor}; interleaved: (θ1's, θ2's)).

  Args:
    torch: the torch module.
    arch: the `Arch`.
    images: [N, C, H, W]; labels: [N] int64 primary classes.
    single: only f with a primary head (the `single` kind).
    seed: seeds the initial weights.
  """

  def __init__(self, torch, arch, images, labels, single=False, seed=0):
    self.t, self.arch, self.x, self.y = torch, arch, images, labels
    gen = torch.Generator().manual_seed(seed)
    dtype, k = images.dtype, sum(arch.psi)
    heads = {'primary': arch.num_primary, **({} if single else {'aux': k})}
    self.f, self.f_stats = make_params(torch, arch, heads, gen, dtype)
    self.opt1 = torch.optim.SGD(
      self.f.values(), lr=LR1, momentum=MOMENTUM1, weight_decay=WD1
    )
    if not single:
      self.g, self.g_stats = make_params(torch, arch, {'aux': k}, gen, dtype)
      self.opt2 = torch.optim.SGD(
        self.g.values(), lr=LR2, momentum=MOMENTUM2, weight_decay=WD2
      )
      self.rows = class_mask(torch, arch.psi)[labels]  # [N, K]

  def load(self, f, f_stats, g=None, g_stats=None):
    """Copies the given weights and statistics ({name: array}) in place."""
    import numpy as np

    with self.t.no_grad():
      for mine, theirs in (
        (self.f, f),
        (self.f_stats, f_stats),
        (getattr(self, 'g', {}), g or {}),
        (getattr(self, 'g_stats', {}), g_stats or {}),
      ):
        for name, value in theirs.items():
          mine[name].copy_(self.t.from_numpy(np.array(value)))

  def _f(self, weights, heads, stats=None):
    return forward(self.t, self.arch, weights, self.x, heads, stats)

  def labels(self, update_stats):
    """[N, K] mask-softmax labels of g (exact zeros outside the mask)."""
    stats = self.g_stats if update_stats else None
    logits = forward(self.t, self.arch, self.g, self.x, ('aux',), stats)['aux']
    return logits.masked_fill(~self.rows, float('-inf')).softmax(1)

  def _primary(self, logits):
    """L_pri: the focal loss against the one-hot labels."""
    return focal_terms(self.t, logits).gather(1, self.y[:, None]).mean()

  def _train_loss(self, weights, targets, stats=None):
    out = self._f(weights, ('primary', 'aux'), stats)
    aux = (targets * focal_terms(self.t, out['aux'])).sum(1).mean()
    return self._primary(out['primary']) + aux

  def _apply(self, params, grads, opt):
    for p, d in zip(params.values(), grads, strict=True):
      p.grad = d.detach()
    opt.step()
    return dict(zip(params, grads, strict=True))

  def step_single(self):
    loss = self._primary(self._f(self.f, ('primary',), self.f_stats)['primary'])
    return self._apply(
      self.f, self.t.autograd.grad(loss, list(self.f.values())), self.opt1
    )

  def step_theta1(self):
    with self.t.no_grad():
      targets = self.labels(update_stats=False)
    loss = self._train_loss(self.f, targets, self.f_stats)
    return self._apply(
      self.f, self.t.autograd.grad(loss, list(self.f.values())), self.opt1
    )

  def _meta2(self, f_stats):
    """(∇θ2 J exact, ∇θ1 L_train): the second-order graph of the original."""
    t, names = self.t, list(self.f)
    probs = self.labels(update_stats=True)
    loss = self._train_loss(self.f, probs, f_stats)
    grads1 = t.autograd.grad(loss, list(self.f.values()), create_graph=True)
    fast = {n: self.f[n] - LR1 * d for n, d in zip(names, grads1, strict=True)}
    after = self._primary(self._f(fast, ('primary',))['primary'])
    objective = after + LAM * entropy(t, probs)
    return t.autograd.grad(objective, list(self.g.values())), grads1

  def _fd(self, f_stats):
    """(∇θ2 J by the central finite difference, ∇θ1 L_train)."""
    t = self.t
    probs = self.labels(update_stats=True)
    loss = self._train_loss(self.f, probs.detach(), f_stats)
    grads1 = t.autograd.grad(loss, list(self.f.values()))
    with t.no_grad():
      fast = {
        n: (p - LR1 * d).requires_grad_(True)
        for (n, p), d in zip(self.f.items(), grads1, strict=True)
      }
    after = self._primary(self._f(fast, ('primary',))['primary'])
    v = t.autograd.grad(after, list(fast.values()), allow_unused=True)
    v = [
      t.zeros_like(p) if d is None else d
      for p, d in zip(fast.values(), v, strict=True)
    ]
    with t.no_grad():
      eps = FD_EPS / (t.sqrt(sum((d * d).sum() for d in v)) + 1e-30)

      def aux_terms(sign):
        moved = {
          n: p + sign * eps * d
          for (n, p), d in zip(self.f.items(), v, strict=True)
        }
        return focal_terms(t, self._f(moved, ('aux',))['aux'])

      diff = (aux_terms(1.0) - aux_terms(-1.0)) / (2 * eps)
      targets_cot = -LR1 * diff / probs.shape[0]
    surrogate = (targets_cot * probs).sum() + LAM * entropy(t, probs)
    return t.autograd.grad(surrogate, list(self.g.values())), grads1

  def step_meta2(self):
    return self._apply(self.g, self._meta2(None)[0], self.opt2)

  def step_fd(self):
    return self._apply(self.g, self._fd(None)[0], self.opt2)

  def step_interleaved2(self):
    grads2, grads1 = self._meta2(self.f_stats)
    return (
      self._apply(self.f, grads1, self.opt1),
      self._apply(self.g, grads2, self.opt2),
    )

  def step_interleaved_fd(self):
    grads2, grads1 = self._fd(self.f_stats)
    return (
      self._apply(self.f, grads1, self.opt1),
      self._apply(self.g, grads2, self.opt2),
    )


def from_flax(arch, params, batch_stats=None):
  """(weights, statistics) of the peer from our flax trees (arrays).

  `params`: a `MultiTaskNet`'s or `LabelGenerator`'s params (trunk Conv_i
  and BatchNorm_i, heads primary_head / aux_head of Dense_0, Dense_1);
  `batch_stats`: its 'batch_stats' collection. Kernels are transposed to
  torch's layouts and the first head layer's inputs permuted from our
  (H, W, C) flattening to (C, H, W).
  """
  import numpy as np

  def layers(tree, prefix):
    names = sorted(
      (n for n in tree if n.startswith(prefix)),
      key=lambda n: int(n.rsplit('_', 1)[1]),
    )
    return [tree[n] for n in names]

  trunk = params['trunk']
  weights, stats = {}, {}
  for i, conv in enumerate(layers(trunk, 'Conv_')):
    weights[f'conv{i}.weight'] = np.transpose(
      np.asarray(conv['kernel']), (3, 2, 0, 1)
    )
    weights[f'conv{i}.bias'] = np.asarray(conv['bias'])
  for i, bn in enumerate(layers(trunk, 'BatchNorm_')):
    weights[f'bn{i}.weight'] = np.asarray(bn['scale'])
    weights[f'bn{i}.bias'] = np.asarray(bn['bias'])
  if batch_stats is not None:
    for i, bn in enumerate(layers(batch_stats['trunk'], 'BatchNorm_')):
      stats[f'bn{i}.mean'] = np.asarray(bn['mean'])
      stats[f'bn{i}.var'] = np.asarray(bn['var'])
  c, h, w = arch.features()
  for head in ('primary', 'aux'):
    if f'{head}_head' not in params:
      continue
    fc1, fc2 = (
      params[f'{head}_head']['Dense_0'],
      params[f'{head}_head']['Dense_1'],
    )
    kernel = np.asarray(fc1['kernel']).reshape(h, w, c, -1)
    kernel = np.transpose(kernel, (2, 0, 1, 3)).reshape(c * h * w, -1)
    weights[f'{head}.fc1.weight'] = kernel.T
    weights[f'{head}.fc1.bias'] = np.asarray(fc1['bias'])
    weights[f'{head}.fc2.weight'] = np.asarray(fc2['kernel']).T
    weights[f'{head}.fc2.bias'] = np.asarray(fc2['bias'])
  return weights, stats


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


def run_child(backbone, kind, steps, warmup, batch):
  """Times one (backbone, kind) in this process; prints a RESULT line."""
  import torch

  arch = ARCHS[backbone]
  gen = torch.Generator().manual_seed(0)
  images = torch.randn(
    batch, arch.channels, arch.size, arch.size, generator=gen
  )
  labels = torch.randint(0, arch.num_primary, (batch,), generator=gen)
  peer = Peer(torch, arch, images, labels, single=kind == 'single')
  step = getattr(peer, f'step_{kind}')
  for _ in range(warmup):
    step()
  busy0, own0, wall0 = _busy_cpu_s(), time.process_time(), time.perf_counter()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()  # Eager CPU ops: done when it returns.
    times.append((time.perf_counter() - start) * 1e3)
  wall, own = time.perf_counter() - wall0, time.process_time() - own0
  other = max(0.0, _busy_cpu_s() - busy0 - own) / (wall * os.cpu_count())
  finite = all(bool(torch.isfinite(p).all()) for p in peer.f.values())
  result = {
    'backbone': backbone,
    'kind': kind,
    'median_ms': statistics.median(times),
    'min_ms': min(times),
    'max_ms': max(times),
    'n': len(times),
    'compile_s': None,
    'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    'other_cpu': round(other, 3),
    'finite': finite,
    'threads': torch.get_num_threads(),
    'torch': torch.__version__,
    'step_ms': [round(t, 2) for t in times],
  }
  print(RESULT + json.dumps(result), flush=True)


def run_all(args, backbones, kinds):
  """Each (backbone, kind) in a fresh interpreter; the results."""
  results = []
  for backbone in backbones:
    for kind in kinds:
      waited = _wait_quiet(args.quiet_wait)
      cmd = [
        sys.executable,
        os.path.abspath(__file__),
        f'--child={backbone}:{kind}',
        f'--steps={args.steps}',
        f'--warmup={args.warmup}',
        f'--batch={args.batch}',
      ]
      start = time.time()
      proc = subprocess.run(cmd, capture_output=True, text=True)
      lines = [s for s in proc.stdout.splitlines() if s.startswith(RESULT)]
      if lines:
        results.append(json.loads(lines[-1][len(RESULT) :]))
      else:
        error = f'rc={proc.returncode}: {proc.stderr[-600:]}'
        results.append({'backbone': backbone, 'kind': kind, 'error': error})
      wait = f' (waited {waited:.0f}s for quiet)' if waited > 1 else ''
      note = results[-1].get('error', '')[-300:]
      print(
        f'  peer {backbone} {kind}: {time.time() - start:.0f}s{wait} {note}',
        flush=True,
      )
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--quick', action='store_true', help='ConvNet-4 only, few steps.'
  )
  parser.add_argument('--backbones', help=f'Of {list(ARCHS)}.')
  parser.add_argument('--kinds', help=f'Of {list(KINDS)}; default all.')
  parser.add_argument('--steps', type=int, help='Timed steps (20; quick 5).')
  parser.add_argument('--warmup', type=int, help='Untimed (3; quick 1).')
  parser.add_argument('--batch', type=int, default=100)
  parser.add_argument('--json', help='Write the results to this file.')
  parser.add_argument(
    '--quiet-wait',
    '--quiet_wait',
    type=float,
    help='Max s to wait for a quiet machine (60; quick 5).',
  )
  parser.add_argument('--child', help=argparse.SUPPRESS)
  args = parser.parse_args()
  quick = args.quick
  args.steps = args.steps or (5 if quick else 20)
  args.warmup = args.warmup if args.warmup is not None else 1 if quick else 3
  if args.child:
    backbone, kind = args.child.split(':')
    return run_child(backbone, kind, args.steps, args.warmup, args.batch)
  if args.quiet_wait is None:
    args.quiet_wait = 5 if quick else 60
  backbones = (
    args.backbones.split(',')
    if args.backbones
    else ['convnet4']
    if quick
    else list(ARCHS)
  )
  kinds = args.kinds.split(',') if args.kinds else list(KINDS)
  for name in backbones + kinds:
    if name not in ARCHS and name not in KINDS:
      parser.error(f'unknown backbone or kind {name!r}.')
  import torch

  print(
    f'PyTorch peer: torch {torch.__version__}, '
    f'{torch.get_num_threads()} threads, batch {args.batch}, '
    f'{args.warmup} warm-up + {args.steps} timed steps',
    flush=True,
  )
  results = run_all(args, backbones, kinds)
  print(
    '\n| backbone | kind | median ms | min ms | max ms | peak RSS MB |'
    ' other_cpu |\n|---|---|--:|--:|--:|--:|--:|'
  )
  for r in results:
    if 'error' in r:
      print(f'| {r["backbone"]} | {r["kind"]} | ERROR {r["error"][-80:]!r} |')
      continue
    print(
      f'| {r["backbone"]} | {r["kind"]} | {r["median_ms"]:.1f} | '
      f'{r["min_ms"]:.1f} | {r["max_ms"]:.1f} | {r["peak_rss_mb"]:.0f} | '
      f'{r["other_cpu"]:.2f} |'
    )
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'framework': 'torch', 'results': results}, f, indent=1)


if __name__ == '__main__':
  main()
