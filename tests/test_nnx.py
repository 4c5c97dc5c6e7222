"""NNX modules in the library API (maxl_jax/networks/functional.py).

The reference is the same network written in Linen: `nnx_models` mirrors
`models.MultiTaskNet`/`LabelGenerator` on `trunks.ConvNet4` layer for
layer, Linen's initial weights are copied into the NNX modules, and every
update of the NNX learner must then be the Linen learner's: θ1's and θ2's
steps (with SGD, θ2's step is -lr2 x the meta-gradient), BatchNorm's
running averages and the evaluation that reads them. In float64 the two
differ only by rounding order (1e-10 relative); in float32 by the bound
stated at `F32_RTOL`.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, traverse_util

import maxl_jax
from maxl_jax import combiner_problem, loss_combiner
from maxl_jax.errors import UsageError
from maxl_jax.networks import functional, models, nnx_models, trunks

PSI = (2, 3)
SHAPE = (8, 8, 2)
WIDTHS = (3,)
HIDDEN = 5
LR1, LR2 = 0.1, 0.05
# float32: each leaf of a step's change agrees to this fraction of its
# norm. Both networks run the same operations on the same values: the
# states agreed bitwise here, the metrics to 1.2e-7 (grad_norm sums its
# leaves in another order: Linen's and NNX's names sort differently). The
# bound leaves room for another fusion order, ~100 float32 roundings of
# 6e-8 through a meta-gradient. float64 measured 1.4e-16 (metrics).
F32_RTOL = 1e-5

pytestmark = pytest.mark.usefixtures('fast_compiles')


def _linen(dtype):
  k = sum(PSI)
  trunk = lambda: trunks.ConvNet4(WIDTHS, conv_impl='xla', dtype=dtype)  # noqa: E731
  f = models.MultiTaskNet(trunk(), len(PSI), k, HIDDEN, dtype)
  g = models.LabelGenerator(trunk(), k, HIDDEN, dtype)
  return f, g


def _nnx(dtype, seed=0):
  rngs = nnx.Rngs(seed)
  kind = {'dtype': dtype, 'param_dtype': dtype}
  trunk = lambda: nnx_models.ConvNet4(SHAPE[-1], WIDTHS, **kind, rngs=rngs)  # noqa: E731
  d = nnx_models.feature_size(trunk(), SHAPE)
  k = sum(PSI)
  f = nnx_models.MultiTaskNet(
    trunk(), d, len(PSI), k, HIDDEN, **kind, rngs=rngs
  )
  g = nnx_models.LabelGenerator(trunk(), d, k, HIDDEN, **kind, rngs=rngs)
  return f, g


_AUTO_NAME = re.compile(r'^(Dense|Conv|BatchNorm)_(\d+)$')
_LIST_NAME = {'Dense': 'layers', 'Conv': 'convs', 'BatchNorm': 'norms'}


def _to_nnx(tree):
  """A Linen variable tree with NNX's paths (`nnx_models`' docstring)."""
  flat = {}
  for path, value in traverse_util.flatten_dict(tree).items():
    parts = []
    for part in path:
      auto = _AUTO_NAME.match(part)
      if auto:
        parts += [_LIST_NAME[auto.group(1)], int(auto.group(2))]
      else:
        parts.append(part)
    flat[tuple(parts)] = value
  return traverse_util.unflatten_dict(flat)


def _copy_into(module, params, model_state):
  """Sets an NNX module's weights and statistics to a Linen module's."""
  flat = traverse_util.flatten_dict(_to_nnx(params))
  for collection in model_state.values():
    flat.update(traverse_util.flatten_dict(_to_nnx(collection)))
  _, state = nnx.split(module)
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(flat))
  nnx.update(module, state)


def _linen_as_nnx(state):
  """A Linen learner's state with NNX's paths, for comparison."""
  return {
    'theta1': _to_nnx(state.theta1),
    'theta2': _to_nnx(state.theta2),
    'model_state1': _to_nnx(state.model_state1),
    'model_state2': _to_nnx(state.model_state2),
  }


def _nnx_parts(state):
  return {
    'theta1': state.theta1,
    'theta2': state.theta2,
    'model_state1': state.model_state1,
    'model_state2': state.model_state2,
  }


def _assert_rel(actual, expected, rtol, what):
  """Every leaf: ||actual - expected|| <= rtol ||expected||."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected), what
  for path, a, b in zip(
    jax.tree_util.tree_flatten_with_path(expected)[0],
    jax.tree.leaves(actual),
    jax.tree.leaves(expected),
    strict=True,
  ):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    err, scale = np.linalg.norm(a - b), np.linalg.norm(b)
    assert err <= rtol * scale, (what, path[0], err, scale)


def _delta(new, old):
  return jax.tree.map(lambda n, o: n - o, new, old)


def _batch(seed, dtype, n=6):
  rng = np.random.default_rng(seed)
  return {
    'image': jnp.asarray(rng.normal(size=(n, *SHAPE)), dtype),
    'label': jnp.asarray(rng.integers(0, len(PSI), n), jnp.int32),
  }


_UPDATES = ('theta1_update', 'theta2_update', 'interleaved_update', 'evaluate')


def _pair(dtype):
  """The Linen and the NNX learner from the same weights: for each, its
  jitted updates and its initial state."""
  f, g = _linen(dtype)
  learn = lambda f, g: maxl_jax.maxl(  # noqa: E731
    f, g, PSI, optax.sgd(LR1), optax.sgd(LR2), alpha=LR1, meta_signal=False
  )
  jitted = lambda learner: {n: jax.jit(getattr(learner, n)) for n in _UPDATES}  # noqa: E731
  linen = learn(f, g)
  state = linen.init(jax.random.key(0), SHAPE)
  f_nnx, g_nnx = _nnx(dtype)
  _copy_into(f_nnx, state.theta1, state.model_state1)
  _copy_into(g_nnx, state.theta2, state.model_state2)
  ours = learn(f_nnx, g_nnx)
  # Another key: NNX modules bring their weights, the key is Linen's.
  nnx_state = ours.init(jax.random.key(1), SHAPE)
  return (jitted(linen), state), (jitted(ours), nnx_state)


_float32_pair = functools.cache(lambda: _pair(jnp.float32))


def _same_steps(pair, dtype, rtol, names):
  """The updates `names` (each with a batch and a meta batch) and then
  evaluation of both learners agree to `rtol`."""
  (linen, s_linen), (ours, s_ours) = pair
  _assert_rel(_nnx_parts(s_ours), _linen_as_nnx(s_linen), 0.0, 'init')
  assert set(s_ours.model_state1) == {'batch_stats'}  # As Linen's.
  batch, meta_batch = _batch(0, dtype), _batch(1, dtype)
  for name in names:
    args = (batch, meta_batch)[: 1 if name == 'theta1_update' else 2]
    n_linen, m_linen = linen[name](s_linen, *args)
    n_ours, m_ours = ours[name](s_ours, *args)
    # The change, not the new value: the comparison sees the gradient and
    # the running averages' move.
    _assert_rel(
      jax.tree.map(_delta, _nnx_parts(n_ours), _nnx_parts(s_ours)),
      jax.tree.map(_delta, _linen_as_nnx(n_linen), _linen_as_nnx(s_linen)),
      rtol,
      name,
    )
    _assert_rel(m_ours, m_linen, rtol, f'{name} metrics')
    s_linen, s_ours = n_linen, n_ours
    batch, meta_batch = meta_batch, batch
  # θ2's step is -LR2 x the meta-gradient; it moved, so it was compared.
  moved = jax.tree.map(_delta, s_ours.theta2, pair[1][1].theta2)
  assert max(float(jnp.abs(d).max()) for d in jax.tree.leaves(moved)) > 0
  # Running averages moved (a dropped update fails the comparison above).
  stats = s_ours.model_state1['batch_stats']['trunk']['norms'][0]
  assert float(jnp.abs(stats['mean']).max()) > 1e-3
  test = _batch(2, dtype)
  _assert_rel(
    ours['evaluate'](s_ours, test),
    linen['evaluate'](s_linen, test),
    rtol,
    'evaluate',
  )


def test_nnx_steps_are_linen_steps_float64():
  with jax.enable_x64(True):
    names = ('theta1_update', 'theta1_update', 'theta2_update')
    _same_steps(_pair(jnp.float64), jnp.float64, 1e-10, names)


def test_nnx_steps_are_linen_steps_float32():
  """The interleaved update: a θ1 and a θ2 step in one program."""
  names = ('interleaved_update', 'interleaved_update')
  _same_steps(_float32_pair(), jnp.float32, F32_RTOL, names)


def test_nnx_batch_norm_statistics_move_as_linen_ones_over_training():
  """Three more interleaved steps: the running averages of f and g follow
  Linen's, and they moved."""
  start = _float32_pair()[1][1]
  run = []
  for updates, state in _float32_pair():
    for step in range(3):  # The program of `_same_steps`.
      batch = _batch(10 + step, jnp.float32)
      state, _ = updates['interleaved_update'](state, batch, batch)
    run.append(state)
  linen, ours = run
  _assert_rel(_nnx_parts(ours), _linen_as_nnx(linen), F32_RTOL, 'run')
  for name in ('model_state1', 'model_state2'):
    moved = jax.tree.map(
      lambda a, b: float(jnp.abs(a - b).max()),
      getattr(ours, name),
      getattr(start, name),
    )
    assert min(jax.tree.leaves(moved)) > 1e-3, (name, moved)


@pytest.mark.parametrize('hidden', [0, 7])
def test_nnx_heads_have_the_linen_heads_parameters(hidden):
  """Every variable of `nnx_models`' networks is one of `models`' (by
  `_to_nnx`'s renaming), with its shape: weights copy one to one."""
  k, rngs = sum(PSI), nnx.Rngs(0)
  trunk = lambda: trunks.ConvNet4(WIDTHS, conv_impl='xla')  # noqa: E731
  nnx_trunk = lambda: nnx_models.ConvNet4(SHAPE[-1], WIDTHS, rngs=rngs)  # noqa: E731
  d = nnx_models.feature_size(nnx_trunk(), SHAPE)
  pairs = (
    (
      models.MultiTaskNet(trunk(), 2, k, hidden),
      nnx_models.MultiTaskNet(nnx_trunk(), d, 2, k, hidden, rngs=rngs),
    ),
    (
      models.LabelGenerator(trunk(), k, hidden, example_weights=True),
      nnx_models.LabelGenerator(
        nnx_trunk(), d, k, hidden, example_weights=True, rngs=rngs
      ),
    ),
    (
      models.MultiHeadNet(trunk(), 2, (3, 4), hidden),
      nnx_models.MultiHeadNet(nnx_trunk(), d, 2, (3, 4), hidden, rngs=rngs),
    ),
  )
  x = jnp.zeros((2, *SHAPE))
  for linen, ours in pairs:
    variables = jax.eval_shape(
      lambda net=linen: net.init(jax.random.key(0), x, False)
    )
    flat = {}
    for collection in variables.values():
      flat.update(traverse_util.flatten_dict(_to_nnx(collection)))
    _, state = nnx.split(ours)
    mine = traverse_util.flatten_dict(nnx.to_pure_dict(state))
    shapes = lambda tree: {p: v.shape for p, v in tree.items()}  # noqa: E731
    assert shapes(mine) == shapes(flat), type(ours).__name__
  # g's weights start at init_weight exactly, as Linen's.
  _, weights = pairs[1][1](x, False)
  np.testing.assert_allclose(jax.nn.sigmoid(weights), 0.9, rtol=1e-6)


def test_linen_path_is_unchanged_and_nnx_imports():
  f, _ = _linen(jnp.float32)
  key, x = jax.random.key(4), _batch(0, jnp.float32)['image']
  ours = functional.init_variables(f, key, SHAPE)
  theirs = models.init_variables(f, key, SHAPE)
  np.testing.assert_equal(jax.device_get(ours), jax.device_get(theirs))
  np.testing.assert_equal(
    jax.device_get(functional.make_apply(f)(*ours, x, True)),
    jax.device_get(models.make_apply(f)(*theirs, x, True)),
  )
  f_nnx, _ = _nnx(jnp.float32)
  assert functional.is_nnx(f_nnx) and not functional.is_nnx(f)


def test_nnx_init_copies_the_module_weights():
  """The module's weights, as copies: a jitted update may donate the
  state (the README's loop does) and the module still has its arrays."""
  module = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  params, _ = functional.init_variables(module, None, (3,))
  np.testing.assert_array_equal(params['kernel'], module.kernel[...])
  plus_one = jax.jit(
    lambda p: jax.tree.map(lambda a: a + 1, p), donate_argnums=0
  )
  plus_one(params)
  assert params['kernel'].is_deleted()  # Donated (CPU donates too).
  assert not module.kernel.get_value().is_deleted()
  again, _ = functional.init_variables(module, None, (3,))
  np.testing.assert_array_equal(again['kernel'], module.kernel[...])


class _Dropout(nnx.Module):
  """A head on a dropout of the pixels: its masks come from `rngs`."""

  def __init__(self, rngs):
    self.drop = nnx.Dropout(0.5, rngs=rngs)
    self.primary = nnx.Linear(int(np.prod(SHAPE)), len(PSI), rngs=rngs)
    self.aux = nnx.Linear(int(np.prod(SHAPE)), sum(PSI), rngs=rngs)

  def __call__(self, x, train):
    h = self.drop(x.reshape(len(x), -1), deterministic=not train)
    return self.primary(h), self.aux(h)


def test_nnx_dropout_is_a_pure_function_of_the_state():
  learner = maxl_jax.uniform(
    _Dropout(nnx.Rngs(0, dropout=1)), PSI, optax.sgd(LR1)
  )
  state = learner.init(jax.random.key(0), SHAPE)
  assert set(state.model_state1) == {'rngs'}
  update, batch = jax.jit(learner.theta1_update), _batch(0, jnp.float32)
  once, _ = update(state, batch)
  again, _ = update(state, batch)
  for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(again), strict=True):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(a, b)
  count = lambda s: int(s.model_state1['rngs']['drop']['rngs']['count'])  # noqa: E731
  assert count(once) == count(state) + 1  # The next step, new masks.
  twice, _ = update(once, batch)
  assert not np.array_equal(
    twice.theta1['primary']['kernel'] - once.theta1['primary']['kernel'],
    once.theta1['primary']['kernel'] - state.theta1['primary']['kernel'],
  )


class _Grows(nnx.Module):
  """Creates a variable when called: its model state cannot be a carry."""

  def __init__(self, rngs):
    self.out = nnx.Linear(int(np.prod(SHAPE)), len(PSI), rngs=rngs)

  def __call__(self, x, train):
    self.seen = nnx.BatchStat(jnp.zeros(()))
    return self.out(x.reshape(len(x), -1)), None


def test_nnx_module_that_creates_variables_when_called_is_refused():
  module = _Grows(nnx.Rngs(0))
  params, model_state = functional.init_variables(module, None, SHAPE)
  apply = functional.make_apply(module)
  with pytest.raises(UsageError, match='created or removed variables'):
    apply(params, model_state, _batch(0, jnp.float32)['image'], True)


def test_loss_combiner_takes_an_nnx_multi_head_net_float64():
  """The combiner's L_T and its gradient, Linen vs NNX: the same."""
  with jax.enable_x64(True):
    dtype = jnp.float64
    tasks = {'coarse': combiner_problem.TASKS['coarse']}
    linen = models.MultiHeadNet(
      trunks.ConvNet4(WIDTHS, conv_impl='xla', dtype=dtype), 10, (4,), 0, dtype
    )
    params, model_state = models.init_variables(linen, jax.random.key(0), SHAPE)
    trunk = nnx_models.ConvNet4(
      SHAPE[-1], WIDTHS, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)
    )
    ours = nnx_models.MultiHeadNet(
      trunk,
      nnx_models.feature_size(trunk, SHAPE),
      10,
      (4,),
      dtype=dtype,
      param_dtype=dtype,
      rngs=nnx.Rngs(1),
    )
    _copy_into(ours, params, model_state)
    init_fn, apply_fn = loss_combiner.make_combiner('linear', 1, 4, dtype)
    phi = init_fn(jax.random.key(2))
    batch = _batch(0, dtype)
    batch['label'] = batch['label'] * 4  # Classes 0..9.
    results = []
    for net in (linen, ours):
      problem = combiner_problem.CombinerProblem(
        functional.make_apply(net), tasks, apply_fn, 0
      )
      theta, state = functional.init_variables(net, jax.random.key(0), SHAPE)
      loss = functools.partial(
        combiner_problem.combined_loss,
        problem,
        phi=phi,
        model_state=state,
        batch=batch,
      )
      grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
      (value, (new_state, _)), grad = grad_fn(theta)
      results.append((value, grad, new_state))
    (v_l, g_l, s_l), (v_n, g_n, s_n) = results
    _assert_rel(v_n, v_l, 1e-10, 'L_T')
    _assert_rel(g_n, _to_nnx(g_l), 1e-10, 'gradient')
    _assert_rel(s_n, _to_nnx(s_l), 1e-10, 'statistics')
