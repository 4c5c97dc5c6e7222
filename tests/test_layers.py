"""Tests of layers.py: im2col conv and reshape max-pool equal XLA's."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax import lax
from jax.test_util import check_grads

from maxl_jax.errors import UsageError
from maxl_jax.networks import layers

_NHWC = ('NHWC', 'HWIO', 'NHWC')

# (batch, height, width, cin, cout, kernel, stride).
CONV_CASES = (
  (2, 8, 8, 3, 4, 3, 1),
  (1, 5, 5, 5, 7, 3, 1),  # Batch 1, odd sizes and channels.
  (2, 2, 2, 7, 3, 3, 1),  # 2x2 input with padding 1.
  (2, 7, 6, 3, 5, 3, 2),  # Strided, odd input.
  (2, 6, 6, 3, 5, 1, 2),  # 1x1 projection.
)

# (batch, height, width, channels).
POOL_CASES = ((2, 8, 8, 3), (1, 5, 7, 5), (2, 2, 2, 1))


def _normal(seed, shape, dtype=jnp.float32):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


U32 = 2.0**-24  # float32 unit roundoff.


def _gamma(n):
  """Higham's γ_n: |fl(Σᵢ aᵢbᵢ) - Σᵢ aᵢbᵢ| <= γ_n Σᵢ|aᵢbᵢ| for n float32
  products summed in ANY order, with or without FMA: every CPU's kernel."""
  return n * U32 / (1 - n * U32)


def _abs_conv(x, kernel, stride):
  """|x| * |kernel| with 'SAME' padding, exactly (float64 numpy): the sum of
  |x w| over the products of each output of the convolution."""
  x = np.abs(np.asarray(x, np.float64))
  kernel = np.abs(np.asarray(kernel, np.float64))
  k, h, w = kernel.shape[0], x.shape[1], x.shape[2]
  (pt, pb), (pl, pr) = lax.padtype_to_pads(
    (h, w), (k, k), (stride, stride), 'SAME'
  )
  x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho, wo = -(-h // stride), -(-w // stride)
  rows = lambda i: slice(i, i + (ho - 1) * stride + 1, stride)  # noqa: E731
  cols = lambda j: slice(j, j + (wo - 1) * stride + 1, stride)  # noqa: E731
  return sum(
    x[:, rows(i), cols(j), :] @ kernel[i, j] for i in range(k) for j in range(k)
  )


def _to64(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _conv_modules(cout, k, stride):
  kw = dict(strides=stride, kernel_init=nn.initializers.xavier_uniform())
  return (
    nn.Conv(cout, (k, k), **kw),
    layers.conv(cout, (k, k), conv_impl='im2col', **kw),
  )


def _second_order(apply_fn, params, x, v):
  """grad_{params, x} of <v, grad_params sum(sin(apply_fn(params, x)))>."""

  def loss(p, x):
    return jnp.sum(jnp.sin(apply_fn(p, x)))

  def directional(p, x):
    g = jax.grad(loss)(p, x)
    return sum(
      jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), v, strict=True)
    )

  return jax.grad(loss, (0, 1))(params, x), jax.grad(directional, (0, 1))(
    params, x
  )


class ConvTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*CONV_CASES)
  def test_values_and_params_match_nn_conv(self, n, h, w, cin, cout, k, s):
    xla, im2col = _conv_modules(cout, k, s)
    x = _normal(0, (n, h, w, cin))
    params = xla.init(jax.random.key(0), x)
    # Same module class and names: identical parameters from the same key.
    chex.assert_trees_all_equal(params, im2col.init(jax.random.key(0), x))
    got = self.variant(im2col.apply)(params, x)
    want = self.variant(xla.apply)(params, x)
    chex.assert_equal_shape([got, want])
    # Each output is k*k*cin products plus the bias: both within γ of the
    # exact value (any order), so within 2γ |x|*|W| (+|b|) of each other.
    size = _abs_conv(x, params['params']['kernel'], s)
    size += np.abs(np.asarray(params['params']['bias'], np.float64))
    bound = 2 * _gamma(k * k * cin + 1) * size
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    assert np.all(diff <= bound), np.max(diff / bound)

  @parameterized.parameters(*CONV_CASES)
  def test_first_and_second_order_grads_match(self, n, h, w, cin, cout, k, s):
    # float64: the two sum in different orders, ~1e-14 here (float32: ~1e-5,
    # CPU-dependent); 1e-10 holds on any CPU.
    with jax.enable_x64(True):
      xla, im2col = _conv_modules(cout, k, s)
      x = _normal(1, (n, h, w, cin), jnp.float64)
      params = _to64(xla.init(jax.random.key(1), x))
      v = [
        _normal(i + 2, a.shape, jnp.float64)
        for i, a in enumerate(jax.tree.leaves(params))
      ]
      fn = functools.partial(_second_order, im2col.apply)
      got = jax.jit(fn)(params, x, v)
      want = jax.jit(functools.partial(_second_order, xla.apply))(params, x, v)
      chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-10)

  @parameterized.parameters((2, 5, 5, 3, 4, 3, 1), (1, 2, 2, 3, 5, 3, 1))
  def test_float64_grads(self, n, h, w, cin, cout, k, s):
    with jax.enable_x64(True):
      x = _normal(3, (n, h, w, cin), jnp.float64)
      kernel = _normal(4, (k, k, cin, cout), jnp.float64)
      im2col = functools.partial(
        layers.im2col_conv_general_dilated,
        window_strides=(s, s),
        padding='SAME',
        dimension_numbers=_NHWC,
      )
      xla = functools.partial(
        lax.conv_general_dilated,
        window_strides=(s, s),
        padding='SAME',
        dimension_numbers=_NHWC,
      )
      check_grads(im2col, (x, kernel), order=2, modes=['rev', 'fwd'])
      v = [_normal(5, kernel.shape, jnp.float64)]
      got = _second_order(lambda p, x: im2col(x, p), kernel, x, v)
      want = _second_order(lambda p, x: xla(x, p), kernel, x, v)
      chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-10)

  def test_unsupported_settings_fall_back_to_lax(self):
    x = _normal(6, (2, 7, 7, 4))
    kernel = _normal(7, (3, 3, 2, 6))
    kw = dict(
      window_strides=(1, 1),
      padding='SAME',
      rhs_dilation=(2, 2),
      dimension_numbers=_NHWC,
      feature_group_count=2,
    )
    chex.assert_trees_all_close(
      layers.im2col_conv_general_dilated(x, kernel, **kw),
      lax.conv_general_dilated(x, kernel, **kw),
    )

  def test_bfloat16_compute_keeps_float32_params(self):
    conv = layers.conv(5, (3, 3), conv_impl='im2col', dtype=jnp.bfloat16)
    x = _normal(8, (2, 4, 4, 3))
    params = conv.init(jax.random.key(0), x)
    chex.assert_trees_all_equal_dtypes(
      params, jax.tree.map(lambda a: a.astype(jnp.float32), params)
    )
    self.assertEqual(conv.apply(params, x).dtype, jnp.bfloat16)


def _pool(impl):
  return functools.partial(layers.max_pool, conv_impl=impl)


class MaxPoolTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*POOL_CASES)
  def test_values_match_nn_max_pool(self, n, h, w, c):
    x = _normal(0, (n, h, w, c))  # Continuous: no ties.
    got = self.variant(_pool('im2col'))(x)
    chex.assert_shape(got, (n, h // 2, w // 2, c))
    chex.assert_trees_all_equal(got, self.variant(_pool('xla'))(x))

  @parameterized.parameters(*POOL_CASES)
  def test_first_and_second_order_grads_match(self, n, h, w, c):
    # float64 (continuous inputs: no ties): the two programs may round the
    # sin/cos chain differently; ~1e-15 here, so 1e-10 holds on any CPU.
    with jax.enable_x64(True):
      x = _normal(1, (n, h, w, c), jnp.float64)
      v = [_normal(2, x.shape, jnp.float64)]
      as_fn = lambda pool: lambda p, x: pool(p * x)  # noqa: E731
      got = _second_order(as_fn(_pool('im2col')), x, 1.5 * x, v)
      want = _second_order(as_fn(_pool('xla')), x, 1.5 * x, v)
      chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-10)
      check_grads(_pool('im2col'), (x,), order=2)

  def test_ties_send_the_cotangent_to_one_element(self):
    # Like select-and-scatter, a window's whole cotangent goes to one of its
    # tied maxima (no division by the tie count, which can be 0 under XLA's
    # recomputation in the second-order graph).
    x = jnp.zeros((1, 4, 4, 1)).at[0, 2:, 2:, 0].set(1.0)
    got = jax.grad(lambda x: jnp.sum(_pool('im2col')(x)))(x)
    want = jax.grad(lambda x: jnp.sum(_pool('xla')(x)))(x)
    chex.assert_trees_all_equal(got, want)
    self.assertEqual(int(jnp.sum(got != 0)), 4)

  def test_ties_after_relu_give_the_same_param_grads(self):
    # Conv-ReLU-pool: ReLU zeros tie in most windows, yet the gradients agree
    # because relu'(0) = 0 removes whatever reaches the tied zeros.
    # float64: a near-tie (two positive maxima, or a pre-ReLU value near 0)
    # within rounding noise would switch the gradient's path between the two
    # programs; at ~1e-16 noise that has probability ~1e-12 (float32: ~1e-3,
    # and which ties flip depends on the CPU).
    with jax.enable_x64(True):
      x = _normal(3, (2, 8, 8, 3), jnp.float64) - 1.0
      xla, im2col = _conv_modules(6, 3, 1)
      params = _to64(xla.init(jax.random.key(3), x))

      def loss(pool, conv, p):
        y = pool(nn.relu(conv.apply(p, x)))
        return jnp.sum(jnp.sin(y))

      relu_out = nn.relu(xla.apply(params, x))
      windows = relu_out.reshape(2, 4, 2, 4, 2, 6)
      num_zero_windows = int(jnp.sum(jnp.all(windows == 0, axis=(2, 4))))
      self.assertGreater(num_zero_windows, 10)  # Many ties in this test.
      got = jax.grad(functools.partial(loss, _pool('im2col'), im2col))(params)
      want = jax.grad(functools.partial(loss, _pool('xla'), xla))(params)
      chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-10)

  def test_overlapping_windows_use_nn_max_pool(self):
    x = _normal(4, (2, 6, 6, 3))
    chex.assert_trees_all_equal(
      layers.max_pool(x, (3, 3), (1, 1), 'SAME', conv_impl='im2col'),
      nn.max_pool(x, (3, 3), (1, 1), 'SAME'),
    )


def test_resolve_impl():
  assert layers.resolve_impl('xla') == 'xla'
  assert layers.resolve_impl('im2col') == 'im2col'
  cpu = jax.default_backend() == 'cpu'
  assert layers.resolve_impl('auto') == ('im2col' if cpu else 'xla')
  inference = layers.resolve_impl('auto', train=False)
  assert inference == ('mixed' if cpu else 'xla')
  assert layers.resolve_impl('im2col', train=False) == 'im2col'
  assert layers.resolve_impl('im2col_bf16') == 'im2col_bf16'
  choices = 'xla, im2col, im2col_bf16, im2col_tiled, mixed, auto'
  with pytest.raises(UsageError, match=choices):
    layers.resolve_impl('cudnn')
  with pytest.raises(UsageError, match='cudnn'):
    layers.conv(4, conv_impl='cudnn')


def _round_bf16(x):
  return x.astype(jnp.bfloat16).astype(jnp.float32)


def _bf16_matmul_bound(*products):
  """How far two float32 evaluations of `Σ a @ b` over `products` (pairs of
  bf16-rounded operands) can be apart: bf16 x bf16 multiplies exactly in
  float32, so only the k - 1 additions per matmul and the p - 1 between
  them round: each result is within γ_{k+p} Σ|a| @ |b| of the exact one."""
  size = sum(
    np.abs(np.asarray(a, np.float64)) @ np.abs(np.asarray(b, np.float64))
    for a, b in products
  )
  k = products[0][0].shape[-1]
  return 2 * _gamma(k + len(products)) * size


def _assert_within(got, want, bound):
  diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
  assert np.all(diff <= bound), np.max(diff / bound)


def _matmul_case():
  a, b = _normal(20, (33, 17)), _normal(21, (17, 9))
  return a, b, _normal(22, (33, 9)), _normal(23, (33, 17)), _normal(24, (17, 9))


def test_bf16_matmul_is_a_float32_matmul_of_rounded_operands():
  a, b, *_ = _matmul_case()
  out = layers.bf16_matmul(a, b)
  assert out.dtype == jnp.float32
  r = _round_bf16
  bound = _bf16_matmul_bound((r(a), r(b)))
  _assert_within(out, r(a) @ r(b), bound)
  assert np.any(np.abs(out - a @ b) > 100 * bound)  # It does round.


def test_bf16_matmul_gradients_are_bf16_matmuls():
  """vjp: ct @ bᵀ and aᵀ @ ct, each with rounded operands (independent)."""
  a, b, ct, _, _ = _matmul_case()
  _, pullback = jax.vjp(layers.bf16_matmul, a, b)
  grad_a, grad_b = pullback(ct)
  r = _round_bf16
  _assert_within(grad_a, r(ct) @ r(b).T, _bf16_matmul_bound((r(ct), r(b).T)))
  _assert_within(grad_b, r(a).T @ r(ct), _bf16_matmul_bound((r(a).T, r(ct))))


def test_bf16_matmul_jvp_and_its_zero_tangents():
  a, b, _, da, db = _matmul_case()
  r = _round_bf16
  _, tangent = jax.jvp(layers.bf16_matmul, (a, b), (da, db))
  want = r(da) @ r(b) + r(a) @ r(db)
  bound = _bf16_matmul_bound((r(da), r(b)), (r(a), r(db)))
  _assert_within(tangent, want, bound)
  # A constant operand (symbolic zero tangent) adds no term.
  _, tangent = jax.jvp(lambda b: layers.bf16_matmul(a, b), (b,), (db,))
  _assert_within(tangent, r(a) @ r(db), _bf16_matmul_bound((r(a), r(db))))


def _rel(x, y):
  return float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y))


@pytest.mark.parametrize('case', CONV_CASES)
def test_im2col_bf16_conv_is_nn_conv_to_bfloat16_precision(case):
  """Values, reverse- and forward-mode derivatives within bf16 rounding."""
  n, h, w, cin, cout, k, s = case
  ref, ours = (
    nn.Conv(cout, (k, k), strides=s),
    layers.conv(cout, (k, k), strides=s, conv_impl='im2col_bf16'),
  )
  x = _normal(25, (n, h, w, cin))
  params = ref.init(jax.random.key(0), x)
  tangent = jax.tree.map(lambda p: _normal(26, p.shape), params)

  def loss(module, p, x):
    return jnp.sum(jnp.sin(module.apply(p, x)))

  # 2e-2 ~ 10 bf16 unit roundoffs (2^-9); measured 0.15-0.45%. The bf16
  # rounding is the same on every CPU; float32 order noise is ~1e-7.
  want, got = loss(ref, params, x), loss(ours, params, x)
  assert abs(float(got - want)) <= 2e-2 * (1 + abs(float(want)))
  want = jax.grad(functools.partial(loss, ref), (0, 1))(params, x)
  got = jax.grad(functools.partial(loss, ours), (0, 1))(params, x)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert _rel(g, r) < 2e-2
  want = jax.jvp(lambda p: ref.apply(p, x), (params,), (tangent,))[1]
  got = jax.jvp(lambda p: ours.apply(p, x), (params,), (tangent,))[1]
  assert _rel(got, want) < 2e-2


@pytest.mark.parametrize('size', [2, 3, layers.XLA_MIN_SIZE, 8])
def test_mixed_conv_is_lax_from_its_size_and_im2col_below(size, monkeypatch):
  """'mixed' calls XLA's convolution exactly on inputs of XLA_MIN_SIZE and
  up, and matches it (float64, first and second order) at every size."""
  calls = []
  lax_conv = lax.conv_general_dilated

  def counted(*args, **kwargs):
    calls.append(args[0].shape)
    return lax_conv(*args, **kwargs)

  with jax.enable_x64(True):
    x = _normal(6, (2, size, size, 3), jnp.float64)
    kernel = _normal(7, (3, 3, 3, 4), jnp.float64)
    common = dict(
      window_strides=(1, 1), padding='SAME', dimension_numbers=_NHWC
    )
    monkeypatch.setattr(layers.lax, 'conv_general_dilated', counted)
    mixed = functools.partial(layers.mixed_conv_general_dilated, **common)
    got = mixed(x, kernel)
    assert bool(calls) == (size >= layers.XLA_MIN_SIZE)
    monkeypatch.undo()
    want = lax.conv_general_dilated(x, kernel, **common)
    chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)
    v = [_normal(8, kernel.shape, jnp.float64)]
    xla = functools.partial(lax.conv_general_dilated, **common)
    chex.assert_trees_all_close(
      _second_order(lambda p, x: mixed(x, p), kernel, x, v),
      _second_order(lambda p, x: xla(x, p), kernel, x, v),
      rtol=1e-10,
      atol=1e-10,
    )


def test_auto_infers_with_mixed_and_trains_with_im2col_on_a_cpu():
  """The same VGG-16 parameters; inference with 'auto' is 'mixed'."""
  if jax.default_backend() != 'cpu':
    pytest.skip('auto is xla off the CPU')
  from maxl_jax.networks import trunks

  x = _normal(9, (2, 32, 32, 3))
  nets = {i: trunks.VGG16(conv_impl=i) for i in ('auto', 'mixed', 'im2col')}
  variables = nets['auto'].init(jax.random.key(0), x, train=False)
  out = {i: nets[i].apply(variables, x, train=False) for i in ('auto', 'mixed')}
  chex.assert_trees_all_equal(out['auto'], out['mixed'])
  jaxpr = str(
    jax.make_jaxpr(
      lambda v: nets['auto'].apply(v, x, train=True, mutable=['batch_stats'])
    )(variables)
  )
  assert 'conv_general_dilated' not in jaxpr  # Training: im2col only.
  inference = str(
    jax.make_jaxpr(lambda v: nets['auto'].apply(v, x, train=False))(variables)
  )
  assert 'conv_general_dilated' in inference
