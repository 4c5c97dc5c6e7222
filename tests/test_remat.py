"""`config.model.remat` and `conv_impl='im2col_tiled'`: the same parameters
and meta-gradients, less memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from experiments.configs import default
from maxl_jax import hierarchy, meta_grad
from maxl_jax.errors import UsageError
from maxl_jax.networks import layers, models, trunks
from maxl_jax.problem import MaxlProblem
from maxl_jax.training import contract

pytestmark = pytest.mark.usefixtures('fast_compiles')  # conftest.py.

# Small trunks of each architecture: (trunk class, its kwargs, image shape).
SMALL = {
  'convnet4': (trunks.ConvNet4, {'widths': (2, 3, 3, 2)}, (16, 16, 1)),
  'vgg16': (trunks.VGG16, {'blocks': ((3, 1), (2, 2))}, (8, 8, 1)),
  'resnet32': (
    trunks.ResNet32,
    {'widths': (2, 3, 2), 'blocks_per_stage': 1},
    (8, 8, 1),
  ),
}
PSI = (2, 1, 3)


def rel_err(a, b):
  a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def _problem(name, remats, n=4, seed=0, conv_impl='im2col'):
  """{remat: (problem, θ1, model_state1, θ2, model_state2, batch)} in float64.

  Every remat setting shares the variables of 'none' (the same tree and
  values: `test_parameters_are_the_same_with_and_without_remat`).
  """
  cls, kwargs, shape = SMALL[name]
  psi = hierarchy.validate_psi(PSI)
  num_primary, num_aux = psi.size, int(psi.sum())
  problems, variables = {}, None
  for remat in remats:
    trunk = functools.partial(
      cls, conv_impl=conv_impl, dtype=jnp.float64, remat=remat, **kwargs
    )
    f = models.MultiTaskNet(trunk(), num_primary, num_aux, 5, jnp.float64)
    g = models.LabelGenerator(trunk(), num_aux, 5, jnp.float64)
    if variables is None:
      theta1, model_state1 = models.init_variables(
        f, jax.random.key(seed), shape
      )
      theta2, model_state2 = models.init_variables(
        g, jax.random.key(seed + 1), shape
      )
      rng = np.random.default_rng(seed)
      batch = {
        'image': jnp.asarray(rng.normal(size=(n, *shape)), jnp.float64),
        'label': jnp.asarray(rng.integers(0, num_primary, n), jnp.int32),
      }
      variables = (theta1, model_state1, theta2, model_state2, batch)
    problem = MaxlProblem(
      f_apply=models.make_apply(f),
      g_apply=models.make_apply(g),
      mask=hierarchy.class_mask(psi),
    )
    problems[remat] = (problem, *variables)
  return problems


def _estimate(estimator, args, alpha=0.1):
  """(grads, MetaOutput, number of checkpoint regions in the program)."""
  problem, *rest = args
  fn = functools.partial(meta_grad.ESTIMATORS[estimator], problem)
  inputs = meta_grad.MetaInputs(*rest, alpha)
  traced = jax.jit(fn).trace(inputs)
  text = str(traced.jaxpr)
  regions = text.count('checkpoint[') + text.count('remat2[')
  return (*traced.lower().compile()(inputs), regions)


def test_parameters_are_the_same_with_and_without_remat():
  """Same tree, same initial values: checkpoints move between settings."""
  cls, kwargs, shape = SMALL['vgg16']
  x = jnp.zeros((1, *shape))
  variables = {}
  for remat in ('none', 'blocks'):
    trunk = cls(conv_impl='im2col', remat=remat, **kwargs)
    init = jax.jit(trunk.init, static_argnums=2)
    variables[remat] = init(jax.random.key(0), x, False)
  assert jax.tree.structure(variables['blocks']) == jax.tree.structure(
    variables['none']
  )
  for a, b in zip(
    jax.tree.leaves(variables['blocks']),
    jax.tree.leaves(variables['none']),
    strict=True,
  ):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('name', list(trunks.TRUNKS))
def test_full_trunks_keep_their_parameter_tree(name):
  """The real backbones (shapes only, no compute): one tree for every mode."""
  config = default.get_config()
  config.model.name = name
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  trees = set()
  for remat in trunks.REMAT_MODES:
    config.model.remat = remat
    trunk = models.ModelSpec(**config.model).trunk()
    assert trunk.remat == remat
    shapes = jax.eval_shape(
      lambda x, trunk=trunk: trunk.init(jax.random.key(0), x, False), x
    )
    trees.add(str(jax.tree.map(lambda a: a.shape, shapes)))
  assert len(trees) == 1


# ConvNet-4 and VGG-16 blocks are alike (conv-BN-ReLU, pool); ResNet's has
# shortcuts. Each compile takes seconds, so: the exact estimators on
# ConvNet-4 with both policies; `structured` on ResNet-32 (~15 s) is slow.
CASES = [
  ('convnet4', 'structured', ('blocks', 'blocks_dots')),
  ('convnet4', 'unrolled', ('blocks',)),
  pytest.param('resnet32', 'structured', ('blocks',), marks=pytest.mark.slow),
]


@pytest.mark.parametrize('name,estimator,remats', CASES)
def test_meta_gradient_is_the_same_with_remat_float64(name, estimator, remats):
  """Exact in float64: remat recomputes the same values.

  The program with remat has checkpoint regions (one per block of f and of
  g), so the option is not a no-op; without it, none.
  """
  with jax.enable_x64(True):
    problems = _problem(name, ('none', *remats))
    plain, out_plain, regions = _estimate(estimator, problems['none'])
    assert regions == 0
    assert rel_err(plain, jax.tree.map(jnp.zeros_like, plain)) > 0
    for remat in remats:
      grads, out, regions = _estimate(estimator, problems[remat])
      assert regions >= 2 * (4 if name == 'convnet4' else 6), remat
      assert rel_err(grads, plain) < 1e-10, remat
      assert rel_err(out.theta1_grads, out_plain.theta1_grads) < 1e-10
      assert rel_err(out.new_model_state1, out_plain.new_model_state1) < 1e-12
      np.testing.assert_allclose(out.meta_loss, out_plain.meta_loss, 1e-12)


@pytest.mark.parametrize(
  'estimator', ['structured', pytest.param('unrolled', marks=pytest.mark.slow)]
)
def test_tiled_im2col_gives_the_same_meta_gradient_float64(
  estimator, monkeypatch
):
  """conv_impl='im2col_tiled' (patches rebuilt per batch tile) against
  'im2col', with tiles small enough that every layer is tiled."""
  monkeypatch.setattr(layers, 'PATCH_TILE_BYTES', 2000)
  with jax.enable_x64(True):
    plain, out_plain, _ = _estimate(
      estimator, _problem('convnet4', ('none',))['none']
    )
    args = _problem('convnet4', ('none',), conv_impl='im2col_tiled')['none']
    grads, out, regions = _estimate(estimator, args)
    assert regions >= 2 * 4  # Every tile of every conv of f and g.
    # Compared in x64 too: outside it, ravel_pytree truncates to float32.
    assert rel_err(grads, plain) < 1e-10
    assert rel_err(out.theta1_grads, out_plain.theta1_grads) < 1e-10
    np.testing.assert_allclose(out.meta_loss, out_plain.meta_loss, 1e-12)


def test_batch_tiles_bound_the_patch_bytes():
  x = jnp.zeros((100, 32, 32, 64))
  w = jnp.zeros((3, 3, 64, 64))
  pads = ((1, 1), (1, 1))
  per_example = 32 * 32 * 9 * 64 * 4  # 2.25 MiB of float32 patches.
  assert layers._batch_tiles(x, w, (1, 1), pads, 100 * per_example) == 1
  assert layers._batch_tiles(x, w, (1, 1), pads, 32 * 2**20) == 10
  assert layers._batch_tiles(x, w, (1, 1), pads, per_example - 1) == 100


def test_unknown_remat_is_a_usage_error():
  config = default.get_config()
  assert config.model.remat == 'none'
  config.model.remat = 'layers'
  with pytest.raises(UsageError, match="unknown remat 'layers'"):
    models.ModelSpec(**config.model).trunk()
  with pytest.raises(UsageError, match='--config.model.remat=<one of them>'):
    contract.validate(config)
