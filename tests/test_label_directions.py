"""Where the meta objective points in label space (diagnostics'
`label_space_slopes` and the three meta objectives as functions of the
auxiliary targets), against finite differences and the estimators."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from toy_problems import make_problem

from maxl_jax import diagnostics, hierarchy, inverse_hvp, losses, meta_grad
from maxl_jax.problem import generated_labels

pytestmark = pytest.mark.usefixtures('fast_compiles')  # conftest.py.

PSI = (2, 3)
TX = optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.2, momentum=0.9))
INVERSE = inverse_hvp.InverseHvp()


def _setup(seed=0):
  """(args, labels, meta batch, allowed, directions) of a float64 toy."""
  args = make_problem('conv', psi=PSI, n=6, dtype=jnp.float64, seed=seed)
  problem, _, _, theta2, model_state2, batch = args
  labels, _ = generated_labels(problem, theta2, model_state2, batch)
  rng = np.random.default_rng(seed + 7)
  meta_batch = {
    'image': jnp.asarray(rng.normal(size=batch['image'].shape)),
    'label': jnp.asarray(rng.integers(0, len(PSI), 6), jnp.int32),
  }
  allowed = jnp.asarray(hierarchy.class_mask(PSI))[batch['label']]
  rows = allowed / jnp.sum(allowed, -1, keepdims=True)
  slot = jnp.argmax(jnp.where(allowed, rng.normal(size=allowed.shape), -9), -1)
  onehot = jax.nn.one_hot(slot, allowed.shape[1], dtype=jnp.float64)
  directions = {'human': onehot - labels.probs, 'uniform': rows - labels.probs}
  return args, labels, meta_batch, allowed, directions


def _objectives(args, labels, meta_batch):
  problem, theta1, model_state1, _, _, batch = args
  opt = TX.init(theta1)
  return {
    'one_step': diagnostics.one_step_meta_loss(
      problem, theta1, model_state1, batch, 0.3, meta_batch
    ),
    'k_step': diagnostics.k_step_meta_loss(
      problem, theta1, model_state1, batch, TX, opt, 4, meta_batch
    ),
    'held_out': diagnostics.held_out_meta_loss(
      problem, theta1, model_state1, batch, labels.targets, meta_batch, INVERSE
    ),
  }


@pytest.mark.parametrize('name', ['one_step', 'k_step', 'held_out'])
def test_slopes_match_finite_differences_float64(name):
  with jax.enable_x64(True):
    args, labels, meta_batch, allowed, directions = _setup()
    fn = jax.jit(_objectives(args, labels, meta_batch)[name])
    lam = args[0].lam
    slopes = diagnostics.label_space_slopes(
      fn, labels.probs, lam, directions, allowed
    )
    h = 1e-5
    for key, d in directions.items():
      t = labels.probs
      fd = (fn(t + h * d) - fn(t - h * d)) / (2 * h)
      np.testing.assert_allclose(slopes[key]['meta'], fd, rtol=1e-6)
      entropy = lambda x: lam * losses.entropy_regularizer(x)  # noqa: E731
      fd_h = (entropy(t + h * d) - entropy(t - h * d)) / (2 * h)
      np.testing.assert_allclose(slopes[key]['entropy'], fd_h, rtol=1e-6)
      assert -1 <= slopes[key]['meta_cosine'] <= 1
      np.testing.assert_allclose(slopes[key]['norm'], jnp.linalg.norm(d))


@pytest.mark.parametrize('name', ['one_step', 'k_step', 'held_out'])
def test_slopes_are_the_estimators_meta_part_by_the_chain_rule_float64(name):
  """⟨∇θ2 meta part, u⟩ = the label-space slope along d = J_g u, for the
  estimator of each objective (structured, OptimizerLookahead, implicit)."""
  with jax.enable_x64(True):
    args, labels, meta_batch, allowed, _ = _setup(seed=1)
    problem, theta1, _, theta2, model_state2, batch = args
    estimator, alpha, opt_state1 = {
      'one_step': (meta_grad.structured, 0.3, None),
      'k_step': (meta_grad.OptimizerLookahead(TX, 4), 0.0, TX.init(theta1)),
      'held_out': (
        functools.partial(meta_grad.implicit, inverse=INVERSE),
        0.0,
        None,
      ),
    }[name]
    at = meta_grad.MetaInputs(*args[1:], alpha, meta_batch, opt_state1)
    grads2, out = estimator(problem, at)
    meta, _ = meta_grad.gradient_parts(grads2, out)
    flat, unravel = ravel_pytree(theta2)
    u = unravel(jnp.asarray(np.random.default_rng(2).normal(size=flat.shape)))
    _, d = jax.jvp(
      lambda t2: generated_labels(problem, t2, model_state2, batch)[0].targets,
      (theta2,),
      (u,),
    )
    fn = _objectives(args, labels, meta_batch)[name]
    slopes = diagnostics.label_space_slopes(
      fn, labels.probs, problem.lam, {'u': d}, allowed
    )
    expected = jnp.dot(ravel_pytree(meta)[0], ravel_pytree(u)[0])
    np.testing.assert_allclose(slopes['u']['meta'], expected, rtol=1e-8)


def test_cosines_see_only_moves_that_keep_labels_distributions():
  """A gradient that is constant over a row's classes changes no feasible
  label: its cosine with any direction is 0."""
  allowed = jnp.asarray(hierarchy.class_mask(PSI))[jnp.array([0, 1])]
  flat = jnp.where(allowed, 3.0, -5.0)
  assert float(jnp.abs(diagnostics._tangent(flat, allowed)).max()) == 0.0
