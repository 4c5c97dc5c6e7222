"""Tests of trunks.py and models.py: shapes, parameter layout, impl
equivalence, BatchNorm."""

import dataclasses
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxl_jax.errors import UsageError
from maxl_jax.networks import models, trunks

P, K = 10, 30
FEATURES = {'convnet4': 1024, 'vgg16': 512, 'resnet32': 64}
HIDDEN = {'convnet4': 256, 'vgg16': 512, 'resnet32': 0}


def _spec(name, conv_impl='im2col', compute_dtype='float32', hidden=None):
  return models.ModelSpec(
    name=name,
    conv_impl=conv_impl,
    compute_dtype=compute_dtype,
    head_hidden=HIDDEN[name] if hidden is None else hidden,
  )


def _images(n, channels=3, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(n, 32, 32, channels)), jnp.float32)


def _abstract_init(module, channels=3):
  """Shapes of (params, model_state) without computing anything."""
  return jax.eval_shape(
    lambda key: models.init_variables(module, key, (32, 32, channels)),
    jax.random.key(0),
  )


def _size(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _to64(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('name', sorted(trunks.TRUNKS))
def test_output_shapes(name, channels):
  f, g = models.build_models(_spec(name), num_primary=P, num_aux=K)
  params, state = _abstract_init(f, channels)
  assert set(params) == {'trunk', 'primary_head', 'aux_head'}
  assert set(state) == {'batch_stats'}
  x = jax.ShapeDtypeStruct((3, 32, 32, channels), jnp.float32)
  for train in (True, False):
    (primary, aux), new_state = jax.eval_shape(
      functools.partial(models.make_apply(f), train=train), params, state, x
    )
    chex.assert_shape([primary, aux], [(3, P), (3, K)])
    chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
  features = jax.eval_shape(
    lambda p, s, x: f.apply({'params': p, **s}, x, False, method=_trunk),
    params,
    state,
    x,
  )
  chex.assert_shape(features, (3, FEATURES[name]))
  params_g, _ = _abstract_init(g, channels)
  assert set(params_g) == {'trunk', 'aux_head'}
  chex.assert_trees_all_equal_shapes(params_g['trunk'], params['trunk'])
  logits, _ = jax.eval_shape(
    functools.partial(models.make_apply(g), train=True), params_g, state, x
  )
  chex.assert_shape(logits, (3, K))


def _trunk(module, x, train):
  return module.trunk(x, train)


def test_head_layout():
  f, _ = models.build_models(_spec('vgg16'), num_primary=P, num_aux=K)
  params, _ = _abstract_init(f)
  chex.assert_trees_all_equal_shapes(
    params['primary_head'],
    {
      'Dense_0': {'kernel': jnp.zeros((512, 512)), 'bias': jnp.zeros(512)},
      'Dense_1': {'kernel': jnp.zeros((512, P)), 'bias': jnp.zeros(P)},
    },
  )
  f, _ = models.build_models(
    _spec('convnet4', hidden=0), num_primary=P, num_aux=K
  )
  params, _ = _abstract_init(f)
  assert jax.tree.map(lambda a: a.shape, params['aux_head']) == {
    'Dense_0': {'kernel': (1024, K), 'bias': (K,)}
  }


def test_param_counts():
  f, _ = models.build_models(_spec('vgg16'), num_primary=P, num_aux=K)
  trunk = _abstract_init(f)[0]['trunk']
  convs = {k: v for k, v in trunk.items() if k.startswith('Conv_')}
  assert len(convs) == 13
  assert _size(convs) == 14_714_688  # 3x3 kernels + biases, 64..512.
  assert _size(trunk) - _size(convs) == 2 * 4224  # BN scale, bias.
  f, _ = models.build_models(_spec('resnet32'), num_primary=P, num_aux=K)
  trunk = _abstract_init(f)[0]['trunk']
  assert 0.45e6 < _size(trunk) < 0.48e6  # ResNet-32: ~0.46M.
  f, _ = models.build_models(_spec('convnet4'), num_primary=P, num_aux=K)
  trunk = _abstract_init(f, channels=1)[0]['trunk']
  assert _size(trunk) == 9 * (32 + 32 * 64 + 64 * 128 + 128 * 256) + 3 * 480


@pytest.mark.parametrize(
  'trunk_cls, kwargs',
  [
    (trunks.ConvNet4, {}),
    (trunks.VGG16, {}),
    # One block per stage has every kind of layer of ResNet-32 (strided
    # convolutions, projections) and compiles faster.
    (trunks.ResNet32, {'blocks_per_stage': 1}),
  ],
)
def test_xla_and_im2col_agree(trunk_cls, kwargs):
  # float64: the two sum in different orders; through up to 13 conv+BN
  # layers that is ~3e-5 in float32 (CPU-dependent) and ~1e-13 in float64,
  # so 1e-9 holds on any CPU.
  with jax.enable_x64(True):
    nets = {
      impl: models.MultiTaskNet(
        trunk_cls(conv_impl=impl, dtype=jnp.float64, **kwargs),
        P,
        K,
        32,
        dtype=jnp.float64,
      )
      for impl in ('xla', 'im2col')
    }
    params, state = models.init_variables(
      nets['xla'], jax.random.key(1), (32, 32, 3)
    )
    chex.assert_trees_all_equal_shapes_and_dtypes(
      (params, state), _abstract_init(nets['im2col'])
    )
    params, state, x = _to64((params, state, _images(2, seed=1)))
    # Training mode: outputs and the updated running averages. (Evaluation
    # mode runs the same convolutions and pools.)
    got, want = (
      jax.jit(models.make_apply(nets[impl]), static_argnums=3)(
        params, state, x, True
      )
      for impl in ('im2col', 'xla')
    )
    chex.assert_trees_all_close(got, want, rtol=1e-9, atol=1e-9)


def test_xla_and_im2col_param_grads_agree():
  # BN+ReLU zeros tie inside max-pool windows; the gradients still agree.
  # float64: a near-tie within rounding noise (two positive maxima of a
  # window, or a pre-ReLU value near 0) would send a cotangent elsewhere in
  # one program than in the other. With ~8k windows per layer that has
  # probability ~1e-2 at float32 noise (and depends on the CPU's kernels),
  # ~1e-10 at float64's; the summation-order difference is then ~1e-14.
  with jax.enable_x64(True):
    x = _to64(_images(4, channels=1, seed=2))
    onehot = jax.nn.one_hot(jnp.arange(4) % P, P, dtype=jnp.float64)
    nets = [
      models.MultiTaskNet(
        trunks.ConvNet4((8, 8, 8, 8), impl, jnp.float64),
        P,
        K,
        16,
        dtype=jnp.float64,
      )
      for impl in ('xla', 'im2col')
    ]
    params, state = _to64(
      models.init_variables(nets[0], jax.random.key(2), (32, 32, 1))
    )

    def loss(params, apply):
      (primary, aux), _ = apply(params, state, x, True)
      log_p = jax.nn.log_softmax(primary)
      return -jnp.mean(jnp.sum(onehot * log_p, -1)) + jnp.mean(aux**2)

    want, got = (
      jax.jit(jax.grad(loss), static_argnums=1)(params, models.make_apply(f))
      for f in nets
    )
    chex.assert_trees_all_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.fixture(scope='module')
def small_net():
  """(net, params, model_state): a 2-layer ConvNet with BatchNorm."""
  trunk = trunks.ConvNet4(widths=(4, 8), conv_impl='im2col')
  f = models.MultiTaskNet(trunk, P, K, head_hidden=6)
  return (f, *models.init_variables(f, jax.random.key(3), (32, 32, 3)))


def test_batch_norm_train_updates_running_averages(small_net):
  # float64: BatchNorm's one-pass variance E[x²] - E[x]² against jnp.var's
  # two passes differ by ~n·u relative (n = 5120 values): up to ~3e-4 in
  # float32 (as large as the biased/unbiased difference, 2e-4), ~1e-12 in
  # float64, so 1e-9 holds on any CPU and tells the two variances apart.
  _, params, state = small_net
  with jax.enable_x64(True):
    trunk = trunks.ConvNet4(
      widths=(4, 8), conv_impl='im2col', dtype=jnp.float64
    )
    f = models.MultiTaskNet(trunk, P, K, head_hidden=6, dtype=jnp.float64)
    params, state = _to64((params, state))
    x = _to64(_images(5, seed=3))
    variables = {'params': params, **state}
    _, inter = f.apply(
      variables,
      x,
      True,
      mutable=['batch_stats', 'intermediates'],
      capture_intermediates=lambda m, _: isinstance(m, nn.Conv),
    )
    _, new_state = models.make_apply(f)(params, state, x, True)
    conv0 = inter['intermediates']['trunk']['Conv_0']['__call__'][0]
    bn0 = new_state['batch_stats']['trunk']['BatchNorm_0']
    # Momentum 0.9 (PyTorch 0.1) from mean 0, var 1; biased batch variance.
    chex.assert_trees_all_close(
      bn0,
      {
        'mean': 0.1 * jnp.mean(conv0, axis=(0, 1, 2)),
        'var': 0.9 + 0.1 * jnp.var(conv0, axis=(0, 1, 2)),
      },
      rtol=1e-9,
      atol=1e-9,
    )
    chex.assert_trees_all_equal_structs(new_state, state)


def test_batch_norm_eval_uses_running_averages(small_net):
  f, params, state = small_net
  apply = jax.jit(models.make_apply(f), static_argnums=3)
  x, other = _images(3, seed=4), _images(2, seed=5)
  _, state = apply(params, state, x, True)  # Non-trivial running stats.
  batch_a, batch_b = x[:2], jnp.concatenate([x[:1], other[:1]])
  (eval_a, _), state_a = apply(params, state, batch_a, False)
  (eval_b, _), _ = apply(params, state, batch_b, False)
  chex.assert_trees_all_equal(state_a, state)
  chex.assert_trees_all_close(eval_a[0], eval_b[0], rtol=1e-5, atol=1e-6)
  # In training mode the example's output depends on the rest of the batch.
  (train_a, _), _ = apply(params, state, batch_a, True)
  (train_b, _), _ = apply(params, state, batch_b, True)
  assert not np.allclose(train_a[0], train_b[0], atol=1e-3)
  assert not np.allclose(train_a[0], eval_a[0], atol=1e-3)


@pytest.mark.parametrize('name', sorted(trunks.TRUNKS))
def test_bfloat16_compute_float32_params(name):
  f, g = models.build_models(
    _spec(name, compute_dtype='bfloat16'), num_primary=P, num_aux=K
  )
  params, state = _abstract_init(f)
  for leaf in jax.tree.leaves((params, state)):
    assert leaf.dtype == jnp.float32
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  features = jax.eval_shape(
    lambda p, s, x: f.apply({'params': p, **s}, x, False, method=_trunk),
    params,
    state,
    x,
  )
  assert features.dtype == jnp.bfloat16
  (primary, aux), new_state = jax.eval_shape(
    functools.partial(models.make_apply(f), train=True), params, state, x
  )
  assert primary.dtype == aux.dtype == jnp.float32  # Logits: float32.
  chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)


def test_single_task_net():
  f = models.build_single(_spec('convnet4'), num_primary=P)
  params, state = _abstract_init(f, channels=1)
  assert set(params) == {'trunk', 'primary_head'}
  x = jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32)
  (primary, aux), _ = jax.eval_shape(
    functools.partial(models.make_apply(f), train=True), params, state, x
  )
  chex.assert_shape(primary, (2, P))
  assert aux is None


class _MyTrunk(nn.Module):
  """A user trunk without BatchNorm."""

  @nn.compact
  def __call__(self, x, train):
    del train
    x = nn.avg_pool(x, (4, 4), (4, 4)).reshape(x.shape[0], -1)
    return nn.relu(nn.Dense(16)(x))


def test_user_trunk_without_batch_norm():
  f = models.MultiTaskNet(trunk=_MyTrunk(), num_primary=P, num_aux=K)
  g = models.LabelGenerator(trunk=_MyTrunk(), num_aux=K, head_hidden=8)
  for net in (f, g):
    params, state = models.init_variables(net, jax.random.key(6), (32, 32, 3))
    assert state == {}
    assert set(params['trunk']) == {'Dense_0'}
    out, new_state = models.make_apply(net)(params, state, _images(2), True)
    assert new_state == {}
  chex.assert_shape(out, (2, K))


def test_xavier_init_zero_biases(small_net):
  _, params, _ = small_net
  kernel = params['trunk']['Conv_1']['kernel']  # [3, 3, 4, 8].
  limit = np.sqrt(6.0 / (9 * 4 + 9 * 8))  # Xavier-uniform bound.
  assert np.abs(kernel).max() <= limit
  assert np.abs(kernel).max() > 0.8 * limit
  kernel = params['primary_head']['Dense_0']['kernel']  # [512, 6].
  limit = np.sqrt(6.0 / (512 + 6))
  assert 0.8 * limit < np.abs(kernel).max() <= limit
  for bias in (
    params['trunk']['Conv_1']['bias'],
    params['aux_head']['Dense_1']['bias'],
  ):
    assert not np.any(bias)


@pytest.mark.parametrize(
  'field, value, choices',
  [
    ('name', 'resnet50', 'convnet4, vgg16, resnet32'),
    ('conv_impl', 'cudnn', 'xla, im2col, im2col_bf16, im2col_tiled, mixed'),
    ('compute_dtype', 'float16', 'float32, bfloat16'),
  ],
)
def test_unknown_config_values_raise_usage_error(field, value, choices):
  spec = dataclasses.replace(_spec('vgg16'), **{field: value})
  with pytest.raises(UsageError, match=f'{value}.*{choices}'):
    models.build_models(spec, num_primary=P, num_aux=K)


def test_float64_compute_needs_x64_and_makes_float64_parameters():
  spec = _spec('convnet4', compute_dtype='float64', hidden=8)
  with pytest.raises(UsageError, match='JAX_ENABLE_X64=1'):
    models.build_models(spec, num_primary=2, num_aux=4)
  with jax.enable_x64(True):
    f, _ = models.build_models(spec, num_primary=2, num_aux=4)
    params, state = models.init_variables(f, jax.random.key(0), (32, 32, 1))
    dtypes = {x.dtype for x in jax.tree.leaves((params, state))}
    assert dtypes == {jnp.dtype(jnp.float64)}


def test_head_logits_are_the_wider_of_float32_and_the_compute_dtype():
  with jax.enable_x64(True):
    for dtype, expected in (
      (jnp.float64, jnp.float64),
      (jnp.float32, jnp.float32),
      (jnp.bfloat16, jnp.float32),
    ):
      head = models.Head(3, dtype=dtype)
      h = jnp.ones((2, 4), dtype)
      logits = head.apply(head.init(jax.random.key(0), h), h)
      assert logits.dtype == expected, (dtype, logits.dtype)
