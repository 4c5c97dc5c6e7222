"""maxl_jax/diagnostics.py: gradient cosine, label usage, what the labels
know."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxl_jax import diagnostics, hierarchy


def _tree(rng):
  return {
    'conv': {
      'kernel': rng.normal(size=(3, 3, 2, 4)),
      'bias': rng.normal(size=4),
    },
    'dense': {'kernel': rng.normal(size=(5, 3))},
  }


def test_cosine_matches_plain_loop():
  rng = np.random.default_rng(0)
  a, b = _tree(rng), _tree(rng)
  want = []
  for key in ('conv', 'dense'):
    ka, kb = a[key]['kernel'], b[key]['kernel']
    ka, kb = ka.reshape(-1, ka.shape[-1]), kb.reshape(-1, kb.shape[-1])
    cos = [
      ka[:, u] @ kb[:, u] / np.linalg.norm(ka[:, u]) / np.linalg.norm(kb[:, u])
      for u in range(ka.shape[1])
    ]
    want.append(np.mean(cos))
  # float64 (the arrays stay float64): the two round in different orders,
  # ~1e-16 here; in float32 up to ~40u per cosine against a mean of 0.06.
  with jax.enable_x64(True):
    got = diagnostics.gradient_cosine(a, b)
  np.testing.assert_allclose(got, np.mean(want), rtol=1e-12)


def test_cosine_extremes():
  rng = np.random.default_rng(1)
  a = _tree(rng)
  neg = {k: {n: -x for n, x in v.items()} for k, v in a.items()}
  # float64: Σab / (‖a‖‖b‖) rounds ~40u from ±1 at worst (float32: 2.4e-6).
  with jax.enable_x64(True):
    same = diagnostics.gradient_cosine(a, a)
    opposite = diagnostics.gradient_cosine(a, neg)
  np.testing.assert_allclose(same, 1.0, rtol=1e-12)
  np.testing.assert_allclose(opposite, -1.0, rtol=1e-12)


def test_cosine_needs_a_weight():
  with pytest.raises(ValueError, match='ndim >= 2'):
    diagnostics.gradient_cosine({'b': jnp.ones(3)}, {'b': jnp.ones(3)})


def test_label_usage():
  probs = jnp.array(
    [[0.9, 0.1, 0.0, 0.0], [0.8, 0.2, 0.0, 0.0], [0.0, 0.0, 0.3, 0.7]]
  )
  usage = diagnostics.label_usage(probs)
  np.testing.assert_allclose(usage['aux_usage'], 0.5)
  np.testing.assert_allclose(usage['aux_hist'], probs.mean(0), rtol=1e-6)
  ent = -np.mean(
    [
      0.9 * np.log(0.9) + 0.1 * np.log(0.1),
      0.8 * np.log(0.8) + 0.2 * np.log(0.2),
      0.3 * np.log(0.3) + 0.7 * np.log(0.7),
    ]
  )
  # float32 against float64: terms of one sign, each within ~(3 + 1.2)u, so
  # the mean is within ~10u = 6e-7 on any CPU.
  np.testing.assert_allclose(usage['aux_entropy'], ent, rtol=1e-5)


# ------------------------------------------------- what the labels know ---


def _scores(targets, labels, psi, mask=None, fine=None, fine_to_primary=None):
  """label_stats on device, then label_scores on the host."""
  n = len(labels)
  mask = np.ones(n, np.float32) if mask is None else mask
  stats = diagnostics.label_stats(
    jnp.asarray(targets, jnp.float32),
    jnp.asarray(labels),
    jnp.asarray(mask),
    jnp.log(jnp.asarray(psi, jnp.float32)),
    None if fine is None else jnp.asarray(fine),
    0 if fine_to_primary is None else len(fine_to_primary),
  )
  stats = {k: np.asarray(v) for k, v in stats.items()}
  return diagnostics.label_scores(stats, psi, fine_to_primary)


def _one_hot(aux, k):
  return np.eye(k, dtype=np.float32)[aux]


def test_information_of_balanced_one_hot_labels_is_log_psi():
  # psi = (3, 2): class 0 uses aux 0, 1, 2 twice each, class 1 aux 3, 4.
  labels = np.array([0] * 6 + [1] * 4)
  aux = np.array([0, 1, 2, 0, 1, 2, 3, 4, 4, 3])
  got = _scores(_one_hot(aux, 5), labels, (3, 2))['aux_information']
  assert got == pytest.approx((np.log(3) + np.log(2)) / 2, rel=1e-6)
  # Collapsed onto one class each: the labels know nothing.
  collapsed = _one_hot(np.array([0] * 6 + [3] * 4), 5)
  got = _scores(collapsed, labels, (3, 2))['aux_information']
  assert got == pytest.approx(0.0, abs=1e-7)


def test_information_of_uniform_labels_is_zero_over_many_examples():
  rng = np.random.default_rng(0)
  psi = np.array([3, 5, 7, 2])
  labels = rng.integers(0, 4, 20000)
  mask = hierarchy.class_mask(psi)[labels].astype(np.float32)
  targets = mask / mask.sum(1, keepdims=True)
  got = _scores(targets, labels, psi)['aux_information']
  assert abs(got) < 1e-6


def test_information_by_hand_on_soft_labels():
  # Class 0 (aux 0-1): [.5, .5] and [1, 0]; class 1 (aux 2-3): [.9, .1] x 2.
  targets = np.array(
    [[0.5, 0.5, 0, 0], [1, 0, 0, 0], [0, 0, 0.9, 0.1], [0, 0, 0.9, 0.1]]
  )
  labels = np.array([0, 0, 1, 1])
  h_mean = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))  # Of [.75, .25].
  class0 = h_mean - (np.log(2) + 0.0) / 2  # 0.2158 nats.
  want = (class0 + 0.0) / 2
  got = _scores(targets, labels, (2, 2))['aux_information']
  assert got == pytest.approx(want, rel=1e-6)
  assert want == pytest.approx(0.10788, abs=1e-5)
  per_class = diagnostics.class_information(
    [[1.5, 0.5, 0, 0], [0, 0, 1.8, 0.2]], [np.log(2), 2 * 0.3250830], [2, 2]
  )
  np.testing.assert_allclose(per_class, [class0, 0.0], atol=1e-7)


def test_information_ignores_padding_and_absent_classes():
  labels = np.array([0, 0, 1, 1, 2])
  aux = np.array([0, 1, 2, 2, 4])
  mask = np.array([1, 1, 1, 1, 0], np.float32)  # Class 2 only as padding.
  targets = _one_hot(aux, 6)
  targets[4] = np.nan  # A padding row's label never counts.
  got = _scores(targets, labels, (2, 2, 2), mask=mask)['aux_information']
  assert got == pytest.approx(np.log(2) / 2, rel=1e-6)  # (log 2 + 0) / 2.


def _recovery(aux, fine, fine_to_primary, num_aux):
  table = np.zeros((num_aux, len(fine_to_primary)))
  np.add.at(table, (aux, fine), 1)
  return diagnostics.recovery(table, fine_to_primary)


def test_recovery_of_a_permutation_of_the_fine_classes_is_one():
  fine_to_primary = np.array([0, 0, 0, 1, 1])  # Fine 0-2 in 0, 3-4 in 1.
  fine = np.array([0, 1, 2, 0, 1, 2, 3, 4, 3, 4, 4])
  to_aux = np.array([2, 0, 1, 4, 3])  # A permutation within each class.
  got = _recovery(to_aux[fine], fine, fine_to_primary, 5)
  assert got == pytest.approx({'nmi': 1.0, 'ari': 1.0})


def test_recovery_of_an_independent_assignment_is_zero():
  # Every (aux, fine) pair of a class equally often: no information.
  fine = np.repeat([0, 1, 2, 3], 60)
  aux = np.tile([0, 1, 2], 80)
  got = _recovery(aux, fine, np.array([0, 0, 0, 0]), 3)
  assert got['nmi'] == pytest.approx(0.0, abs=1e-12)
  assert got['ari'] == pytest.approx(0.0, abs=0.02)  # -0.010 here.


def test_recovery_is_sklearns_score_averaged_over_classes():
  from sklearn import metrics

  rng = np.random.default_rng(3)
  fine_to_primary = np.array([0, 1, 0, 2, 1, 0, 2, 3])  # Class 3: one fine.
  psi = np.array([3, 2, 4, 1])
  offs = np.concatenate([[0], np.cumsum(psi)[:-1]])
  fine = rng.integers(0, 8, 300)
  labels = fine_to_primary[fine]
  aux = offs[labels] + rng.integers(0, psi[labels])
  aux[fine == 0] = 0  # Some structure, so that NMI is not ~0.
  got = _recovery(aux, fine, fine_to_primary, int(psi.sum()))
  nmi, ari = [], []
  for c in range(4):
    rows = labels == c
    nmi.append(metrics.normalized_mutual_info_score(fine[rows], aux[rows]))
    ari.append(metrics.adjusted_rand_score(fine[rows], aux[rows]))
  assert nmi[3] == 1.0 and ari[3] == 1.0  # One fine class, one aux class.
  assert got['nmi'] == pytest.approx(np.mean(nmi), rel=1e-12)
  assert got['ari'] == pytest.approx(np.mean(ari), rel=1e-12)
  assert 0.05 < got['nmi'] < 0.95


def test_recovery_degenerate_classes_and_absent_ones():
  fine_to_primary = np.array([0, 1, 1, 2])  # Class 0 has one fine class.
  # Class 0: one fine class split over two aux classes -> NMI = ARI = 0;
  # class 1: perfect; class 2: no examples (left out of the mean).
  aux = np.array([0, 1, 0, 1, 2, 3, 2, 3])
  fine = np.array([0, 0, 0, 0, 1, 2, 1, 2])
  nmi, ari = diagnostics.class_recovery(
    np.histogram2d(aux, fine, bins=[5, 4], range=[[0, 5], [0, 4]])[0],
    fine_to_primary,
  )
  np.testing.assert_array_equal(nmi[:2], [0.0, 1.0])
  np.testing.assert_array_equal(ari[:2], [0.0, 1.0])
  assert np.isnan(nmi[2]) and np.isnan(ari[2])
  got = _recovery(aux, fine, fine_to_primary, 5)
  assert got == pytest.approx({'nmi': 0.5, 'ari': 0.5})


def test_contingency_counts_argmax_against_fine_labels():
  targets = np.array([[0.7, 0.3, 0, 0], [0.2, 0.8, 0, 0], [0, 0, 0.5, 0.5]])
  stats = diagnostics.label_stats(
    jnp.asarray(targets, jnp.float32),
    jnp.array([0, 0, 1]),
    jnp.array([1.0, 1.0, 0.0]),
    jnp.log(jnp.array([2.0, 2.0])),
    jnp.array([1, 1, 2]),
    3,
  )
  want = np.zeros((4, 3))
  want[0, 1] = want[1, 1] = 1  # The padding row (aux 2, fine 2) is left out.
  np.testing.assert_array_equal(stats['contingency'], want)
  np.testing.assert_array_equal(stats['label_counts'], [2, 0])
