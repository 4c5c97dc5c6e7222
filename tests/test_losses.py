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


def _inputs(seed, n=8, scale=3.0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(scale * rng.normal(size=(n, sum(PSI))), dtype)
  labels = jnp.asarray(rng.integers(0, len(PSI), n), jnp.int32)
  return logits, labels


class MaskSoftmaxTest(chex.TestCase, parameterized.TestCase):
  @chex.all_variants(with_pmap=False)
  @parameterized.parameters(0, 1, 2)
  def test_rows_sum_to_one_and_zero_outside_mask(self, seed):
    logits, labels = _inputs(seed)
    probs = self.variant(losses.mask_softmax)(logits, labels, MASK)
    # <= 14u ~ 8e-7 on any CPU: k <= 4 terms, each p within (2|log p| + 4)u
    # (XLA's exp, log: <= 1.2 ulp), then k - 1 roundings of the sum.
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=2e-6)
    outside = ~MASK[np.asarray(labels)]
    assert np.all(np.asarray(probs)[outside] == 0.0)
    assert np.all(np.asarray(probs)[~outside] > 0.0)

  def test_masked_equals_sliced(self):
    # float64: exp(log_softmax) and softmax round differently, relative
    # ~(|log p| + k)u apart: ~1e-15 here, ~1e-6 in float32 (CPU-dependent).
    with jax.enable_x64(True):
      logits, labels = _inputs(3, dtype=jnp.float64)
      probs = losses.mask_softmax(logits, labels, MASK)
      offs = hierarchy.offsets(PSI)
      for n, y in enumerate(np.asarray(labels)):
        sl = slice(offs[y], offs[y] + PSI[y])
        np.testing.assert_allclose(
          probs[n, sl], jax.nn.softmax(logits[n, sl]), rtol=1e-12
        )

  def test_shift_invariance(self):
    logits, labels = _inputs(4)
    a = losses.mask_softmax(logits, labels, MASK)
    b = losses.mask_softmax(logits + 123.0, labels, MASK)
    # Adding 123 moves each logit by <= ulp(123)/2 = 3.8e-6, so each p by
    # <= 2 x 3.8e-6 (softmax is 2-Lipschitz), plus float32 rounding ~1e-6.
    np.testing.assert_allclose(a, b, atol=2e-5)

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
  # These three compare two formulas of one value; float64 makes the
  # rounding of either ~1e-15 relative on any CPU (float32: 1e-7 to 1e-5,
  # e.g. 1 - p near p = 1), far inside the tolerances.
  @chex.all_variants(with_pmap=False)
  def test_gamma_zero_is_cross_entropy(self):
    with jax.enable_x64(True):
      logits, _ = _inputs(7, dtype=jnp.float64)
      targets = jax.nn.softmax(_inputs(8, dtype=jnp.float64)[0])
      got = self.variant(losses.focal_loss, static_argnums=2)(
        jax.nn.log_softmax(logits), targets, 0
      )
      want = jnp.mean(optax.softmax_cross_entropy(logits, targets))
      np.testing.assert_allclose(got, want, rtol=1e-12)

  def test_focal_matches_plain_formula(self):
    with jax.enable_x64(True):
      logits, labels = _inputs(9, dtype=jnp.float64)
      probs = jax.nn.softmax(logits)
      targets = jax.nn.one_hot(labels * 2, sum(PSI), dtype=jnp.float64)
      plain = -targets * (1 - probs) ** 2 * np.log(probs)
      want = np.mean(np.sum(plain, axis=-1))
      got = losses.focal_loss(jax.nn.log_softmax(logits), targets, 2.0)
      np.testing.assert_allclose(got, want, rtol=1e-10)

  def test_focal_is_linear_in_target(self):
    with jax.enable_x64(True):
      logits, _ = _inputs(10, dtype=jnp.float64)
      a = jax.nn.softmax(_inputs(11, dtype=jnp.float64)[0])
      b = jax.nn.softmax(_inputs(12, dtype=jnp.float64)[0])
      logp = jax.nn.log_softmax(logits)
      mix = losses.focal_loss(logp, 0.3 * a + 0.7 * b, 2.0)
      parts = 0.3 * losses.focal_loss(logp, a, 2.0)
      parts += 0.7 * losses.focal_loss(logp, b, 2.0)
      np.testing.assert_allclose(mix, parts, rtol=1e-12)

  def test_focal_down_weights_confident_examples(self):
    logp = jax.nn.log_softmax(jnp.array([[4.0, 0.0], [0.5, 0.0]]))
    t = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    ce = -np.asarray(logp)[:, 0]
    focal = np.asarray(losses.focal_terms(logp, 2.0))[:, 0]
    assert focal[0] / ce[0] < focal[1] / ce[1]
    # Bitwise: one-hot t makes both a single rounding of ce[0] + ce[1].
    np.testing.assert_allclose(losses.focal_loss(logp, t, 0.0), ce.mean())


class EntropyTest(chex.TestCase):
  def test_minimal_at_uniform(self):
    # float64: ~12u from -log k in float32 (a 1.4x margin at rtol 1e-6 on
    # XLA's log), ~1e-15 in float64 on any CPU.
    with jax.enable_x64(True):
      k = 6
      uniform = jnp.full((4, k), 1.0 / k)
      np.testing.assert_allclose(
        losses.entropy_regularizer(uniform), -np.log(k), rtol=1e-12
      )
      rng = np.random.default_rng(0)
      for _ in range(20):
        probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(4, k)) * 2))
        assert losses.entropy_regularizer(probs) >= -np.log(k) - 1e-12

  def test_batch_mean_not_per_example(self):
    # Two one-hot rows on different classes: the batch mean is uniform.
    probs = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    # m = 0.5 exactly; float32 log(0.5) is -ln 2 rounded once (2.7e-9 off).
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


class LabelSmoothingTest(parameterized.TestCase):
  def test_zero_is_the_one_hot_loss_exactly(self):
    logits, labels = _inputs(14)
    pri = logits[:, :4]
    one_hot = jax.nn.one_hot(labels, 4)
    want = losses.focal_loss(jax.nn.log_softmax(pri), one_hot, 2.0)
    for got in (
      losses.primary_loss(pri, labels, 2.0),
      losses.primary_loss(pri, labels, 2.0, 0.0),
      losses.multi_task_loss(pri, logits, labels, 0 * logits, 2.0)[1][0],
    ):
      np.testing.assert_array_equal(got, want)

  @parameterized.parameters((0.1, 2.0), (0.3, 0.0), (0.9, 2.0))
  def test_matches_smoothed_targets_by_hand(self, eps, gamma):
    """`mean_n -Σ_c t_nc (1 - p_nc)^γ log p_nc`, t = (1 - ε) onehot + ε/P."""
    logits, labels = _inputs(15)
    pri = np.asarray(logits[:, :4], np.float64)
    log_p = pri - np.log(np.sum(np.exp(pri), -1, keepdims=True))
    t = (1 - eps) * np.eye(4)[np.asarray(labels)] + eps / 4
    want = np.mean(np.sum(-t * (1 - np.exp(log_p)) ** gamma * log_p, -1))
    got = losses.primary_loss(logits[:, :4], labels, gamma, eps)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    total, (loss_pri, _) = losses.multi_task_loss(
      logits[:, :4], logits, labels, jnp.zeros_like(logits), gamma, eps
    )
    np.testing.assert_allclose(loss_pri, want, rtol=1e-5)
    np.testing.assert_allclose(total, want, rtol=1e-5)
    plain = losses.primary_loss(logits[:, :4], labels, gamma)
    assert abs(float(got) - float(plain)) > 1e-3
