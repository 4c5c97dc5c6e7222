"""Losses: mask softmax, focal loss, entropy regulariser."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized
from jax.test_util import check_grads

from maxl_jax import hierarchy, losses

PSI = (2, 3, 1, 4)
MASK = hierarchy.class_mask(PSI)


def _inputs(seed, n=8, scale=3.0):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(scale * rng.normal(size=(n, sum(PSI))), jnp.float32)
  labels = jnp.asarray(rng.integers(0, len(PSI), n), jnp.int32)
  return logits, labels


class MaskSoftmaxTest(chex.TestCase, parameterized.TestCase):
  @chex.all_variants(with_pmap=False)
  @parameterized.parameters(0, 1, 2)
  def test_rows_sum_to_one_and_zero_outside_mask(self, seed):
    logits, labels = _inputs(seed)
    probs = self.variant(losses.mask_softmax)(logits, labels, MASK)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    outside = ~MASK[np.asarray(labels)]
    assert np.all(np.asarray(probs)[outside] == 0.0)
    assert np.all(np.asarray(probs)[~outside] > 0.0)

  def test_masked_equals_sliced(self):
    logits, labels = _inputs(3)
    probs = losses.mask_softmax(logits, labels, MASK)
    offs = hierarchy.offsets(PSI)
    for n, y in enumerate(np.asarray(labels)):
      sl = slice(offs[y], offs[y] + PSI[y])
      np.testing.assert_allclose(
        probs[n, sl], jax.nn.softmax(logits[n, sl]), rtol=1e-6
      )

  def test_shift_invariance(self):
    logits, labels = _inputs(4)
    a = losses.mask_softmax(logits, labels, MASK)
    b = losses.mask_softmax(logits + 123.0, labels, MASK)
    np.testing.assert_allclose(a, b, atol=2e-5)  # ulp(123) in float32.

  @parameterized.parameters(1e4, -1e4)
  def test_finite_values_and_gradients_at_extreme_logits(self, scale):
    logits, labels = _inputs(5, scale=1.0)
    logits = logits.at[:, ::2].set(scale)

    def loss(x):
      probs = losses.mask_softmax(x, labels, MASK)
      return jnp.sum(probs * jnp.arange(sum(PSI))) + losses.entropy_regularizer(
        probs
      )

    chex.assert_tree_all_finite(losses.mask_softmax(logits, labels, MASK))
    chex.assert_tree_all_finite(jax.grad(loss)(logits))

  def test_gradients_match_finite_differences(self):
    with jax.enable_x64(True):
      logits, labels = _inputs(6)
      logits = logits.astype(jnp.float64)
      target = jnp.asarray(np.random.default_rng(0).random((8, sum(PSI))))
      fn = lambda x: jnp.sum(  # noqa: E731
        target * losses.mask_softmax(x, labels, MASK)
      )
      check_grads(fn, (logits,), order=2, modes=['rev'])


class FocalLossTest(chex.TestCase, parameterized.TestCase):
  @chex.all_variants(with_pmap=False)
  def test_gamma_zero_is_cross_entropy(self):
    logits, _ = _inputs(7)
    targets = jax.nn.softmax(_inputs(8)[0])
    got = self.variant(losses.focal_loss, static_argnums=2)(
      jax.nn.log_softmax(logits), targets, 0
    )
    want = jnp.mean(optax.softmax_cross_entropy(logits, targets))
    np.testing.assert_allclose(got, want, rtol=1e-6)

  def test_focal_matches_plain_formula(self):
    logits, labels = _inputs(9)
    probs = jax.nn.softmax(logits)
    targets = jax.nn.one_hot(labels * 2, sum(PSI))
    want = np.mean(np.sum(-targets * (1 - probs) ** 2 * np.log(probs), axis=-1))
    got = losses.focal_loss(jax.nn.log_softmax(logits), targets, 2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5)

  def test_focal_is_linear_in_target(self):
    logits, _ = _inputs(10)
    a, b = jax.nn.softmax(_inputs(11)[0]), jax.nn.softmax(_inputs(12)[0])
    logp = jax.nn.log_softmax(logits)
    mix = losses.focal_loss(logp, 0.3 * a + 0.7 * b, 2.0)
    parts = 0.3 * losses.focal_loss(logp, a, 2.0) + 0.7 * losses.focal_loss(
      logp, b, 2.0
    )
    np.testing.assert_allclose(mix, parts, rtol=1e-6)

  def test_focal_down_weights_confident_examples(self):
    logp = jax.nn.log_softmax(jnp.array([[4.0, 0.0], [0.5, 0.0]]))
    t = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    ce = -np.asarray(logp)[:, 0]
    focal = np.asarray(losses.focal_terms(logp, 2.0))[:, 0]
    assert focal[0] / ce[0] < focal[1] / ce[1]
    np.testing.assert_allclose(losses.focal_loss(logp, t, 0.0), ce.mean())


class EntropyTest(chex.TestCase):
  def test_minimal_at_uniform(self):
    k = 6
    uniform = jnp.full((4, k), 1.0 / k)
    np.testing.assert_allclose(
      losses.entropy_regularizer(uniform), -np.log(k), rtol=1e-6
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
      probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(4, k)) * 2))
      assert losses.entropy_regularizer(probs) >= -np.log(k) - 1e-6

  def test_batch_mean_not_per_example(self):
    # Two one-hot rows on different classes: the batch mean is uniform.
    probs = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(losses.entropy_regularizer(probs), -np.log(2))
    chex.assert_tree_all_finite(jax.grad(losses.entropy_regularizer)(probs))

  def test_multi_task_loss_is_sum(self):
    logits, labels = _inputs(13)
    targets = losses.mask_softmax(logits, labels, MASK)
    total, (pri, aux) = losses.multi_task_loss(
      logits[:, :4], logits, labels, targets, 2.0
    )
    np.testing.assert_allclose(total, pri + aux, rtol=1e-6)
    np.testing.assert_allclose(
      pri, losses.primary_loss(logits[:, :4], labels, 2.0)
    )
