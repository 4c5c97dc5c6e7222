"""The PyTorch peer (benchmarks/peer_torch.py) computes what we compute.

From the same weights and batch, in float64, each of the peer's steps
applies the gradient of ours: `meta2` ∇θ2 J of `structured` (exact, equal
to `unrolled`: tests/test_meta_grad.py), `fd` that of `first_order`,
`theta1` and `single` ∇θ1 L_train, and its optimisers and BatchNorm
running statistics follow ours (torch keeps the unbiased variance). At full
size its networks have our shapes and initialisation, and its settings are
experiments/configs/default.py's.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import bench_steps  # noqa: E402
import peer_torch  # noqa: E402

from experiments.configs import default  # noqa: E402
from maxl_jax import MaxlProblem, MetaInputs, get_estimator, hierarchy  # noqa: E402
from maxl_jax.networks import models, trunks  # noqa: E402
from maxl_jax.problem import generated_labels, train_loss  # noqa: E402
from maxl_jax.training import optim  # noqa: E402

CONFIG = default.get_config()
PSI, N, HIDDEN = (2, 1, 3), 6, 8
# A conv block of one convolution (ConvNet-4's) and one of two (VGG-16's) on
# 8x8 images: 2x2x6 features, so the heads see the flattening order.
BLOCKS, SIDE = ((4, 1), (6, 2)), 8
ARCH = peer_torch.Arch(BLOCKS, HIDDEN, 1, SIDE, len(PSI), PSI)
# Each program runs once: optimise its compile time (a third), not its run.
FAST_COMPILE = {
  'xla_backend_optimization_level': 0,
  'xla_llvm_disable_expensive_passes': True,
}


def run_once(fn, *args):
  """`jax.jit(fn)(*args)`, compiled with `FAST_COMPILE`."""
  return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def rel(a, b):
  """‖a − b‖ / ‖b‖ over every array of two {name: array} dicts."""
  assert a.keys() == b.keys()
  diff = sum(np.sum((np.asarray(a[k]) - np.asarray(b[k])) ** 2) for k in b)
  return float(np.sqrt(diff / sum(np.sum(np.asarray(b[k]) ** 2) for k in b)))


def numpy(tensors):
  return {k: v.detach().numpy() for k, v in tensors.items()}


def weights(tree):
  """The peer's weights of one of our parameter trees (or gradients)."""
  return peer_torch.from_flax(ARCH, tree)[0]


def stats(params, model_state):
  """The peer's running statistics of our `model_state`."""
  return peer_torch.from_flax(ARCH, params, model_state['batch_stats'])[1]


def unbiased(before, after):
  """Our new running statistics `after`, the variance made unbiased as
  torch keeps it (`before`: the old ones)."""
  sizes = [
    SIDE // 2**b for b, (_, depth) in enumerate(BLOCKS) for _ in range(depth)
  ]
  keep = 0.9  # flax's momentum: running = keep * running + (1 - keep) * x.
  out = dict(after)
  for i, side in enumerate(sizes):
    n = N * side * side
    new = after[f'bn{i}.var'] - keep * before[f'bn{i}.var']
    out[f'bn{i}.var'] = keep * before[f'bn{i}.var'] + new * n / (n - 1)
  return out


def updated(opt_config, params, grads):
  """Our optimiser's first update of `params` (SGD, weight decay)."""
  tx = optim.make_optimizer(opt_config, 100)
  updates, _ = tx.update(grads, tx.init(params), params)
  return jax.tree.map(jnp.add, params, updates)


@pytest.fixture(scope='module')
def ours():
  """Our initial weights, batch and every step's results, as the peer's
  {name: array} (float64, one compiled program)."""
  with jax.enable_x64(True):
    trunk = trunks.VGG16(blocks=BLOCKS, conv_impl='xla', dtype=jnp.float64)
    k, p = sum(PSI), len(PSI)
    f = models.MultiTaskNet(trunk, p, k, HIDDEN, jnp.float64)
    g = models.LabelGenerator(trunk.clone(), k, HIDDEN, jnp.float64)
    single = models.MultiTaskNet(trunk.clone(), p, 0, HIDDEN, jnp.float64)
    shape, keys = (SIDE, SIDE, 1), jax.random.split(jax.random.key(0), 3)
    nets = (f, g, single)

    def init(keys):
      image = jnp.zeros((1, *shape))
      return [
        net.init(key, image, False) for net, key in zip(nets, keys, strict=True)
      ]

    # Each net's float32 initialisation, exactly in float64 (as
    # `models.init_variables`, without a compiled cast per parameter).
    (theta1, ms1), (theta2, ms2), (theta0, ms0) = [
      (v.pop('params'), v)
      for v in jax.tree.map(
        lambda a: np.asarray(a, np.float64), run_once(init, keys)
      )
    ]
    rng = np.random.default_rng(0)
    batch = {
      'image': rng.standard_normal((N, *shape)),
      'label': np.array([0, 1, 2, 0, 2, 1], np.int32),
    }
    problem = MaxlProblem(
      f_apply=models.make_apply(f),
      g_apply=models.make_apply(g),
      mask=hierarchy.class_mask(PSI),
      gamma=CONFIG.maxl.gamma,
      lam=CONFIG.maxl.lam,
      fd_eps=CONFIG.maxl.fd_eps,
    )
    alpha = CONFIG.primary_opt.lr
    single_problem = MaxlProblem(f_apply=models.make_apply(single))

    def steps(theta1, ms1, theta2, ms2, theta0, ms0, batch):
      inputs = MetaInputs(theta1, ms1, theta2, ms2, batch, alpha)
      out = {}
      for name in ('structured', 'first_order'):
        out[name], meta = get_estimator(name)(problem, inputs)
      out['entropy'] = meta.entropy_grads
      out['interleaved1'] = meta.theta1_grads
      out['meta_ms2'] = meta.new_model_state2
      out['theta2_after'] = updated(CONFIG.label_opt, theta2, out['structured'])
      labels, _ = generated_labels(problem, theta2, ms2, batch)
      out['theta1'], (out['theta1_ms1'], _) = jax.grad(
        train_loss, 1, has_aux=True
      )(problem, theta1, ms1, labels.targets, batch)
      out['theta1_after'] = updated(CONFIG.primary_opt, theta1, out['theta1'])
      out['single'], (out['single_ms0'], _) = jax.grad(
        train_loss, 1, has_aux=True
      )(single_problem, theta0, ms0, None, batch)
      return out

    out = jax.device_get(
      run_once(steps, theta1, ms1, theta2, ms2, theta0, ms0, batch)
    )
    result = {
      name: weights(out[name])
      for name in (
        'structured',
        'first_order',
        'entropy',
        'interleaved1',
        'theta2_after',
        'theta1',
        'theta1_after',
        'single',
      )
    }
    before = {1: stats(theta1, ms1), 2: stats(theta2, ms2)}
    before[0] = stats(theta0, ms0)
    result['stats'] = before
    result['meta_ms2'] = unbiased(before[2], stats(theta2, out['meta_ms2']))
    result['theta1_ms1'] = unbiased(before[1], stats(theta1, out['theta1_ms1']))
    result['single_ms0'] = unbiased(before[0], stats(theta0, out['single_ms0']))
    result['start'] = {
      1: (weights(theta1), before[1]),
      2: (weights(theta2), before[2]),
      0: (weights(theta0), before[0]),
    }
    result['batch'] = batch
    return result


def make_peer(ours, single=False):
  """The peer with our initial weights, statistics and batch."""
  images = np.transpose(ours['batch']['image'], (0, 3, 1, 2))
  labels = ours['batch']['label'].astype(np.int64)
  peer = peer_torch.Peer(
    torch, ARCH, torch.tensor(images), torch.tensor(labels), single
  )
  start = ours['start']
  if single:
    peer.load(*start[0])
  else:
    peer.load(*start[1], *start[2])
  return peer


@pytest.mark.parametrize(
  'estimator, kind',
  [('structured', 'meta2'), ('first_order', 'fd')],
)
def test_meta_steps_apply_our_meta_gradient(ours, estimator, kind):
  peer = make_peer(ours)
  applied = numpy(getattr(peer, f'step_{kind}')())
  assert rel(applied, ours[estimator]) < 1e-9
  # The meta part ∇θ2 L_pri(θ1⁺) alone (λ∇H is most of it at init).
  entropy = ours['entropy']
  meta = {k: v - entropy[k] for k, v in applied.items()}
  assert rel(meta, {k: v - entropy[k] for k, v in ours[estimator].items()}) < (
    1e-8
  )
  if kind == 'meta2':  # θ2's SGD with weight decay.
    assert rel(numpy(peer.g), ours['theta2_after']) < 1e-8
  # A meta step updates g's running statistics, not f's.
  assert rel(numpy(peer.g_stats), ours['meta_ms2']) < 1e-12
  assert rel(numpy(peer.f_stats), ours['stats'][1]) == 0


@pytest.mark.parametrize('kind', ['interleaved2', 'interleaved_fd'])
def test_interleaved_steps_apply_our_gradients(ours, kind):
  grads1, grads2 = getattr(make_peer(ours), f'step_{kind}')()
  assert rel(numpy(grads1), ours['interleaved1']) < 1e-9
  estimator = 'structured' if kind == 'interleaved2' else 'first_order'
  assert rel(numpy(grads2), ours[estimator]) < 1e-9


def test_theta1_step_applies_our_gradient(ours):
  peer = make_peer(ours)
  assert rel(numpy(peer.step_theta1()), ours['theta1']) < 1e-9
  assert rel(numpy(peer.f), ours['theta1_after']) < 1e-8
  # f's running statistics; g's labels use batch statistics, not kept.
  assert rel(numpy(peer.f_stats), ours['theta1_ms1']) < 1e-12
  assert rel(numpy(peer.g_stats), ours['stats'][2]) == 0


def test_single_step_applies_our_gradient(ours):
  peer = make_peer(ours, single=True)
  assert rel(numpy(peer.step_single()), ours['single']) < 1e-9
  assert rel(numpy(peer.f_stats), ours['single_ms0']) < 1e-12


def test_the_settings_are_ours():
  maxl, opt1, opt2 = CONFIG.maxl, CONFIG.primary_opt, CONFIG.label_opt
  assert (peer_torch.GAMMA, peer_torch.LAM, peer_torch.FD_EPS) == (
    maxl.gamma,
    maxl.lam,
    maxl.fd_eps,
  )
  assert maxl.lookahead_scale == 1 and maxl.lookahead_steps == 1
  assert (peer_torch.LR1, peer_torch.MOMENTUM1, peer_torch.WD1) == (
    opt1.lr,
    opt1.momentum,
    opt1.weight_decay,
  )
  assert opt2.name == 'sgd'
  assert (peer_torch.LR2, peer_torch.MOMENTUM2, peer_torch.WD2) == (
    opt2.lr,
    opt2.momentum,
    opt2.weight_decay,
  )
  for name, arch in peer_torch.ARCHS.items():
    channels, classes, psi, hidden = bench_steps.BACKBONES[name]
    assert (arch.channels, arch.num_primary, arch.hidden) == (
      channels,
      classes,
      hidden,
    )
    assert arch.psi == (psi,) * classes and arch.size == 32
  assert peer_torch.ARCHS['vgg16'].blocks == tuple(trunks.VGG16.blocks)
  convnet = peer_torch.ARCHS['convnet4'].blocks
  assert convnet == tuple((w, 1) for w in trunks.ConvNet4.widths)


@pytest.mark.parametrize('name', list(peer_torch.ARCHS))
def test_full_size_networks_have_our_shapes_and_scales(name):
  arch = peer_torch.ARCHS[name]
  spec = models.ModelSpec(name, head_hidden=arch.hidden)
  f, g = models.build_models(
    spec, num_primary=arch.num_primary, num_aux=sum(arch.psi)
  )
  image = jnp.zeros((1, arch.size, arch.size, arch.channels))
  gen = torch.Generator().manual_seed(0)
  for net, heads in ((f, ('primary', 'aux')), (g, ('aux',))):
    shapes = jax.eval_shape(
      lambda k, net=net: net.init(k, image, False), jax.random.key(0)
    )
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    ours = peer_torch.from_flax(arch, zeros['params'], zeros['batch_stats'])
    counts = {
      h: {'primary': arch.num_primary}.get(h, sum(arch.psi)) for h in heads
    }
    theirs = peer_torch.make_params(torch, arch, counts, gen, torch.float32)
    for mine, peer in zip(ours, theirs, strict=True):
      assert {k: v.shape for k, v in mine.items()} == {
        k: tuple(v.shape) for k, v in peer.items()
      }
  if name != 'convnet4':
    return
  # Initial scales (ConvNet-4: cheap to initialise): Xavier-uniform.
  params = run_once(lambda key: f.init(key, image, False), jax.random.key(1))
  params = params['params']
  ours = peer_torch.from_flax(arch, params)[0]
  theirs = numpy(
    peer_torch.make_params(
      torch, arch, {'primary': 10, 'aux': 30}, gen, torch.float32
    )[0]
  )
  for key, value in ours.items():
    if key.endswith('bias') or key.startswith('bn'):
      assert np.array_equal(value, theirs[key]), key
      continue
    assert np.std(theirs[key]) == pytest.approx(np.std(value), rel=0.15), key
    assert np.abs(theirs[key]).max() == pytest.approx(
      np.abs(value).max(), rel=0.1
    ), key
