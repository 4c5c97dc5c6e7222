"""Step functions (maxl_jax/steps.py): what each update changes,
the guard, compile-once."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from toy_problems import make_problem

from maxl_jax import meta_grad
from maxl_jax import state as state_lib
from maxl_jax import steps as step_fns
from maxl_jax.labels.base import masked_targets_ok
from maxl_jax.labels.generated import GeneratedSource
from maxl_jax.labels.kmeans import KMeansSource
from maxl_jax.networks.autoencoder import AutoEncoder
from maxl_jax.problem import generated_labels

ALPHA = 0.1


def _setup(psi=(2, 3), dtype=jnp.float32):
  problem, theta1, model_state1, theta2, model_state2, batch = make_problem(
    'conv', psi, n=6, dtype=dtype
  )
  tx1, tx2 = optax.sgd(0.1), optax.sgd(0.05)
  state = state_lib.initial_state(
    theta1, model_state1, theta2, model_state2, tx1, tx2, {}
  )
  source = GeneratedSource(psi=np.asarray(psi))
  deps = {
    'problem': problem,
    'estimator': meta_grad.unrolled,
    'tx2': tx2,
    'alpha_schedule': lambda count: ALPHA,
  }
  primary = functools.partial(
    step_fns.primary_step, problem=problem, label_source=source, tx1=tx1
  )
  return state, batch, primary, deps, tx1


def _changed(a, b):
  return float(jnp.max(jnp.abs(ravel_pytree(a)[0] - ravel_pytree(b)[0]))) > 0


def test_meta_step_moves_only_theta2_and_returns_its_metrics():
  state, batch, _, deps, _ = _setup()
  new, metrics = step_fns.meta_step(state, batch, **deps)
  assert _changed(new.theta2, state.theta2)
  chex.assert_trees_all_equal(new.theta1, state.theta1)
  chex.assert_trees_all_equal(
    new.model_state1, state.model_state1
  )  # f's BN stats.
  assert int(new.step2) == 1 and int(new.step1) == 0
  at = meta_grad.MetaInputs(
    state.theta1,
    state.model_state1,
    state.theta2,
    state.model_state2,
    batch,
    ALPHA,
  )
  meta_loss = meta_grad.meta_objective(deps['problem'], at)
  np.testing.assert_allclose(metrics['meta/meta_loss'], meta_loss, rtol=1e-6)
  assert float(metrics['grad_norm']) > 0
  assert not any(k.startswith(('train/', 'signal/')) for k in metrics)


def test_the_signal_is_logged_on_request_and_changes_no_update():
  """`signal=True` adds what trains g; the update is the same, bitwise."""
  state, batch, _, deps, _ = _setup()
  plain, _ = jax.jit(functools.partial(step_fns.meta_step, **deps))(
    state, batch
  )
  signal = functools.partial(step_fns.meta_step, **deps, signal=True)
  logged, metrics = jax.jit(signal)(state, batch)
  chex.assert_trees_all_equal(plain, logged)
  assert 0 < float(metrics['signal/meta_share']) < 1
  assert float(metrics['signal/grad_entropy_norm']) > 0


def test_generator_labels_stay_in_mask_after_meta_steps():
  state, batch, _, deps, _ = _setup(psi=(1, 4, 2))
  for _ in range(3):
    state, _ = step_fns.meta_step(state, batch, **deps)
  labels, _ = generated_labels(
    deps['problem'], state.theta2, state.model_state2, batch
  )
  probs = labels.probs
  assert bool(masked_targets_ok(probs, batch['label'], deps['problem'].mask))
  # A float32 softmax row of <= 4 terms sums to 1 within ~14u = 8e-7.
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_interleaved_theta1_update_equals_primary_step():
  """The shared lookahead gives the θ1 step exactly its own gradient."""
  # float64: three different programs compute the same updates, so they
  # round differently: ~1e-16 relative here (float32: ~1e-7, and a bias or
  # BN mean near 0 would fail a relative 1e-5), 1e-10 on any CPU.
  with jax.enable_x64(True):
    state, batch, primary, deps, tx1 = _setup(dtype=jnp.float64)
    both, m = step_fns.interleaved_step(state, batch, tx1=tx1, **deps)
    only_theta1, m1 = primary(state, batch)
    only_theta2, m2 = step_fns.meta_step(state, batch, **deps)
    close = functools.partial(
      chex.assert_trees_all_close, rtol=1e-10, atol=1e-13
    )
    close(both.theta1, only_theta1.theta1)
    close(both.model_state1, only_theta1.model_state1)
    close(both.theta2, only_theta2.theta2)
    assert int(both.step1) == 1 and int(both.step2) == 1
    # Both groups of metrics, each as its own step reports it.
    close(m['train/loss_pri'], m1['train/loss_pri'])
    close(m['meta/meta_loss'], m2['meta/meta_loss'])


def test_steps_compile_once():
  state, batch, primary, deps, _ = _setup()
  step = jax.jit(chex.assert_max_traces(lambda s, b: primary(s, b), n=1))
  for _ in range(3):
    state, _ = step(state, batch)
  meta = jax.jit(
    chex.assert_max_traces(lambda s, b: step_fns.meta_step(s, b, **deps), n=1)
  )
  for _ in range(2):
    state, _ = meta(state, batch)
  assert int(state.step1) == 3 and int(state.step2) == 2


def test_eval_step_counts_only_real_examples():
  state, batch, _, deps, _ = _setup()
  mask = jnp.array([1, 1, 1, 0, 0, 0], jnp.float32)
  out = step_fns.eval_step(
    state, dict(batch, mask=mask), problem=deps['problem']
  )
  (logits, _), _ = deps['problem'].f_apply(
    state.theta1, state.model_state1, batch['image'], False
  )
  correct = np.sum(np.argmax(logits[:3], -1) == np.asarray(batch['label'][:3]))
  assert float(out['count']) == 3.0
  assert float(out['correct']) == correct


# ------------------------------------------------- what the labels know ---


def _softmax_in_range(logits, lo, hi):
  z = np.exp(logits[lo:hi] - logits[lo:hi].max())
  out = np.zeros_like(logits)
  out[lo:hi] = z / z.sum()
  return out


def test_eval_step_sums_label_statistics_of_real_examples():
  """Sums of g's eval-mode labels equal numpy's; padding rows count not."""
  state, batch, _, deps, _ = _setup(psi=(2, 3))
  problem = deps['problem']
  # Running averages unlike the batch's statistics: eval mode must use them.
  state = state.replace(
    model_state2=jax.tree.map(lambda s: s + 0.3, state.model_state2)
  )
  labels = np.asarray(batch['label'])
  fine_to_primary = np.array([0, 1, 0, 1, 1])
  fine = np.array([np.flatnonzero(fine_to_primary == y)[0] for y in labels])
  fine[np.flatnonzero(labels == 1)[:1]] = 4  # Class 1 has fine 1 and 4.
  mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
  image = batch['image']
  padded = dict(
    batch,
    image=image,
    mask=jnp.asarray(mask),
    fine_label=jnp.asarray(fine, jnp.int32),
  )
  out = step_fns.eval_step(
    state,
    padded,
    problem=problem,
    label_source=GeneratedSource(psi=np.array([2, 3])),
    num_fine=5,
  )
  logits, _ = problem.g_apply(state.theta2, state.model_state2, image, False)
  logits = np.asarray(logits, np.float64)
  bounds = {0: (0, 2), 1: (2, 5)}
  sums, gaps = np.zeros((2, 5)), np.zeros(2)
  counts, table = np.zeros(2), np.zeros((5, 5))
  for n in np.flatnonzero(mask):
    y = labels[n]
    p = _softmax_in_range(logits[n], *bounds[y])
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    sums[y] += p
    gaps[y] += np.log((2, 3)[y]) - entropy
    counts[y] += 1
    table[np.argmax(p), fine[n]] += 1
  np.testing.assert_allclose(out['label_sums'], sums, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['entropy_gaps'], gaps, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(out['label_counts'], counts)
  np.testing.assert_array_equal(out['contingency'], table)
  assert float(out['count']) == 4.0
  # Without fine classes there is no contingency; without a source, no stats.
  plain = step_fns.eval_step(
    state,
    padded,
    problem=problem,
    label_source=GeneratedSource(psi=np.array([2, 3])),
  )
  assert 'contingency' not in plain and 'label_sums' in plain
  assert 'label_sums' not in step_fns.eval_step(state, padded, problem=problem)


def test_kmeans_test_targets_are_the_nearest_centroid_of_the_class():
  psi = np.array([2, 3])
  ae = AutoEncoder(widths=(4,), latent_dim=3, channels=1)
  source = KMeansSource(psi=psi, ae=ae, num_train=4)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(8, 32, 32, 1)), jnp.float32)
  params = ae.init(jax.random.key(0), images)['params']
  centroids = rng.normal(size=(5, 3)).astype(np.float32)
  labels = np.array([0, 1, 1, 0, 1, 0, 1, 1])
  batch = {'image': images, 'label': jnp.asarray(labels)}
  got = source.test_targets(
    {'ae_params': params, 'centroids': jnp.asarray(centroids)},
    None,
    None,
    batch,
    problem=None,
  )
  codes = np.asarray(ae.apply({'params': params}, images, method='encode'))
  dist = ((codes[:, None, :] - centroids[None]) ** 2).sum(-1)
  lo = np.array([0, 2])[labels]
  hi = lo + psi[labels]
  want = [lo[n] + np.argmin(dist[n, lo[n] : hi[n]]) for n in range(8)]
  np.testing.assert_array_equal(np.argmax(got, -1), want)
  np.testing.assert_array_equal(np.asarray(got).sum(-1), 1.0)
