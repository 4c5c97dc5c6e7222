"""Diagnostics: gradient cosine (paper Fig. 4), label usage, what labels know.

Pure functions of arrays and pytrees: on device (jnp) for what the steps
sum, on the host (numpy, float64) for scores of those sums.
"""

import jax
import jax.numpy as jnp
import numpy as np

from maxl_jax import estimators, losses
from maxl_jax.problem import lookahead, optimizer_lookahead, train_loss


def _unit_rows(leaf):
  """A weight as [units, fan_in]: one row per output unit (last axis)."""
  return jnp.reshape(jnp.moveaxis(leaf, -1, 0), (leaf.shape[-1], -1))


def gradient_cosine(grads_a, grads_b, eps=1e-12):
  """Per-output-unit cosine similarity of two gradients, averaged (Fig. 4).

  For every weight (leaf with >= 2 dims: conv kernels [kh, kw, Cin, Cout],
  dense kernels [in, out]) each output unit's incoming weights form one row;
  the cosine of the two gradients is taken per row, averaged over the rows
  of a layer, then over layers. Biases and norm scales (1-D) are skipped.

  Args:
    grads_a: gradient pytree, e.g. ∇ L_pri on the shared trunk.
    grads_b: gradient pytree of the same structure, e.g. ∇ L_aux.

  Returns:
    Scalar in [-1, 1].
  """
  per_layer = []
  for a, b in zip(
    jax.tree.leaves(grads_a), jax.tree.leaves(grads_b), strict=True
  ):
    if a.ndim < 2:
      continue
    a, b = _unit_rows(a), _unit_rows(b)
    dot = jnp.sum(a * b, axis=1)
    norms = jnp.linalg.norm(a, axis=1) * jnp.linalg.norm(b, axis=1)
    per_layer.append(jnp.mean(dot / jnp.maximum(norms, eps)))
  if not per_layer:
    raise ValueError('gradient_cosine needs at least one weight of ndim >= 2.')
  return jnp.mean(jnp.stack(per_layer))


def gradient_parts_stats(meta, entropy, eps=1e-30) -> dict[str, jax.Array]:
  """What trains g: the two parts of θ2's gradient (DESIGN §1-2).

  Args:
    meta: the meta part ∇θ2 L_pri(θ1⁺), a pytree.
    entropy: the entropy part λ∇θ2 H, of the same structure.

  Returns:
    `grad_meta_norm`, `grad_entropy_norm` (global L2 norms),
    `grad_parts_cosine` (of the two flattened parts) and `meta_share`
    (‖meta‖ / (‖meta‖ + ‖entropy‖): 1/2 when both pull as hard).
  """
  meta, entropy = jax.tree.leaves(meta), jax.tree.leaves(entropy)
  inner = lambda xs, ys: sum(  # noqa: E731
    jnp.vdot(x, y).astype(jnp.float32) for x, y in zip(xs, ys, strict=True)
  )
  dot = inner(meta, entropy)
  norm_m = jnp.sqrt(inner(meta, meta))
  norm_e = jnp.sqrt(inner(entropy, entropy))
  return {
    'grad_meta_norm': norm_m,
    'grad_entropy_norm': norm_e,
    'grad_parts_cosine': dot / jnp.maximum(norm_m * norm_e, eps),
    'meta_share': norm_m / jnp.maximum(norm_m + norm_e, eps),
  }


def label_drift(labels, initial, mask) -> dict[str, jax.Array]:
  """Sums of the total variation `½ Σ_k |g_nk - g⁰_nk|` between the labels
  now and at step 0, over a batch's real (mask 1) examples, and their count.
  0: g's labels are where its initialisation put them; 1: disjoint."""
  tv = 0.5 * jnp.sum(jnp.abs(labels - initial), axis=-1)
  return {'drift': jnp.sum(mask * tv), 'count': jnp.sum(mask)}


def label_usage(aux_probs):
  """Batch statistics of generated labels [N, K].

  Returns:
    dict with `aux_usage` (fraction of the K classes that are the argmax of
    at least one example), `aux_entropy` (mean per-example entropy, nats) and
    `aux_hist` ([K] mean probability of each class).
  """
  num_aux = aux_probs.shape[-1]
  hits = jnp.zeros(num_aux).at[jnp.argmax(aux_probs, -1)].add(1.0)
  logp = jnp.log(jnp.where(aux_probs > 0, aux_probs, 1.0))
  return {
    'aux_usage': jnp.mean(hits > 0),
    'aux_entropy': -jnp.mean(jnp.sum(aux_probs * logp, -1)),
    'aux_hist': jnp.mean(aux_probs, 0),
  }


# ------------------------------------------------- what the labels know ---
# DESIGN §6. On device, `label_stats` sums a test batch's labels into
# sufficient statistics; on the host, in float64, `label_information` and
# `recovery` turn the sums of a whole evaluation into scores.


def label_stats(targets, labels, mask, log_psi, fine=None, num_fine=0):
  """Sums over the real (mask 1) examples of one batch of labels.

  Args:
    targets: [N, K] auxiliary labels (distributions).
    labels: int [N] primary classes.
    mask: [N], 1 for real examples, 0 for padding.
    log_psi: [P] log psi[c]: each example's entropy is summed as its gap
      below log psi[y], which is ~0 for Uniform labels, so that float32
      sums over many examples keep Uniform's information at 0 (to 1e-7).
    fine: int [N] hidden fine classes, or None.
    num_fine: F, the number of fine classes (with `fine`).

  Returns:
    {'label_sums': [P, K] per-class sums of the labels, 'entropy_gaps':
    [P] per-class sums of log psi[y] - H(label) (nats), 'label_counts':
    [P] examples per class, and with `fine`, 'contingency': [K, F] counts
    of (argmax auxiliary class, fine class)}, all float32.
  """
  num_primary, num_aux = log_psi.shape[0], targets.shape[-1]
  real = mask > 0
  t = jnp.where(real[:, None], targets, 0.0).astype(jnp.float32)
  logt = jnp.log(jnp.where(t > 0, t, 1.0))
  gap = jnp.where(real, log_psi[labels] + jnp.sum(t * logt, -1), 0.0)
  real = real.astype(jnp.float32)
  stats = {
    'label_sums': jax.ops.segment_sum(t, labels, num_primary),
    'entropy_gaps': jax.ops.segment_sum(gap, labels, num_primary),
    'label_counts': jax.ops.segment_sum(real, labels, num_primary),
  }
  if fine is not None:
    aux = jnp.argmax(targets, -1)
    stats['contingency'] = (
      jnp.zeros((num_aux, num_fine), jnp.float32).at[aux, fine].add(real)
    )
  return stats


def _entropy(p, axis=-1):
  """Entropy in nats along `axis` (0 log 0 = 0)."""
  p = np.asarray(p, np.float64)
  return -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=axis)


def class_information(label_sums, entropy_sums, counts):
  """I(aux; x | y = c) per primary class c, in nats; NaN for absent classes.

  `H(mean label of c) - mean over c's examples of H(label)` (DESIGN §6),
  from per-class sums: label_sums [P, K], entropy_sums [P] (of the
  per-example entropies), counts [P]. The mean label is the label sum
  renormalised, which is the same for distributions and rounds better.
  """
  sums = np.asarray(label_sums, np.float64)
  counts = np.asarray(counts, np.float64)
  totals = sums.sum(-1, keepdims=True)
  mean_label = sums / np.where(totals > 0, totals, 1.0)
  present = counts > 0
  mean_entropy = np.asarray(entropy_sums, np.float64) / np.where(
    present, counts, 1.0
  )
  return np.where(present, _entropy(mean_label) - mean_entropy, np.nan)


def label_information(label_sums, entropy_sums, counts) -> float:
  """I(aux; x | y): `class_information` averaged over the classes present.

  0 for labels that do not depend on the image (Uniform), log psi for
  one-hot labels that use each of a class's psi auxiliary classes equally;
  NaN when no class is present.
  """
  per_class = class_information(label_sums, entropy_sums, counts)
  present = ~np.isnan(per_class)
  return float(np.mean(per_class[present])) if present.any() else np.nan


def class_recovery(contingency, fine_to_primary):
  """NMI and ARI of argmax auxiliary class vs fine class, per primary class.

  Args:
    contingency: [K, F] counts of (argmax auxiliary class, fine class).
    fine_to_primary: int [F] the primary class of each fine class.

  Returns:
    (nmi [P], ari [P]): scikit-learn's normalized_mutual_info_score
    (arithmetic normalisation) and adjusted_rand_score between the two
    labellings of class c's examples (NaN for a class without examples).
    Degenerate classes score as scikit-learn defines them: 1 when the
    examples have one fine class and one argmax class, 0 when exactly one
    of the two labellings has a single class.
  """
  from sklearn import metrics  # Slow import: host side only.

  counts = np.rint(np.asarray(contingency, np.float64)).astype(np.int64)
  fine_to_primary = np.asarray(fine_to_primary)
  num_primary = int(fine_to_primary.max()) + 1
  nmi, ari = np.full(num_primary, np.nan), np.full(num_primary, np.nan)
  for c in range(num_primary):
    table = counts[:, fine_to_primary == c]  # Class c's examples.
    aux, fine = np.nonzero(table)
    if not aux.size:
      continue
    pred = np.repeat(aux, table[aux, fine])
    true = np.repeat(fine, table[aux, fine])
    nmi[c] = metrics.normalized_mutual_info_score(true, pred)
    ari[c] = metrics.adjusted_rand_score(true, pred)
  return nmi, ari


def recovery(contingency, fine_to_primary) -> dict[str, float]:
  """{'nmi', 'ari'}: `class_recovery` averaged over the classes present.

  An unweighted mean: every primary class counts once, whatever its number
  of examples.
  """
  out = {}
  for name, per_class in zip(
    ('nmi', 'ari'), class_recovery(contingency, fine_to_primary), strict=True
  ):
    present = ~np.isnan(per_class)
    out[name] = float(np.mean(per_class[present])) if present.any() else np.nan
  return out


def label_scores(stats, psi, fine_to_primary=None) -> dict[str, float]:
  """A whole evaluation's `label_stats` sums (on the host) -> the scores.

  Returns:
    {'aux_information'} (nats), and with a 'contingency' and
    `fine_to_primary`, 'aux_recovery_nmi' and 'aux_recovery_ari'.
  """
  counts = np.asarray(stats['label_counts'], np.float64)
  gaps = np.asarray(stats['entropy_gaps'], np.float64)
  entropy_sums = counts * np.log(np.asarray(psi, np.float64)) - gaps
  out = {
    'aux_information': label_information(
      stats['label_sums'], entropy_sums, counts
    )
  }
  if 'contingency' in stats and fine_to_primary is not None:
    scores = recovery(stats['contingency'], fine_to_primary)
    out['aux_recovery_nmi'] = scores['nmi']
    out['aux_recovery_ari'] = scores['ari']
  return out


# ------------------------------------ Where the meta objective points ---


def one_step_meta_loss(problem, theta1, model_state1, batch, alpha, meta_batch):
  """t ↦ L_pri(θ1⁺(t); meta_batch), θ1⁺ = θ1 − α∇θ1 L_train(θ1, t; batch):
  the published meta objective's primary part as a function of the
  auxiliary targets t [N, K] (g's labels enter J only through them)."""

  def loss(targets):
    theta = lookahead(problem, theta1, model_state1, targets, batch, alpha)[0]
    return estimators.meta_primary_loss(
      problem, theta, model_state1, meta_batch
    )

  return loss


def k_step_meta_loss(
  problem, theta1, model_state1, batch, tx, opt_state, steps, meta_batch
):
  """t ↦ L_pri(θ1⁺_K(t); meta_batch), θ1⁺_K = `steps` updates of θ1's
  optimiser `tx` from `opt_state` (`problem.optimizer_lookahead`)."""

  def loss(targets):
    theta = optimizer_lookahead(
      problem, theta1, model_state1, targets, batch, tx, opt_state, steps
    )[0]
    return estimators.meta_primary_loss(
      problem, theta, model_state1, meta_batch
    )

  return loss


def held_out_meta_loss(
  problem, theta1, model_state1, batch, targets, meta_batch, inverse
):
  """t ↦ the first-order change of L_A(θ1*(t)) = L_pri(θ1*; meta_batch) at
  the fixed point θ1* of L_train(·, t; batch), by the implicit function
  theorem: `−⟨w, ∇θ1 L_train(θ1, t)⟩` with `w = (H + δI)⁻¹ ∇θ1 L_A`
  solved once at `targets` (`inverse`, as estimators.implicit). Linear in
  t; its gradient is the implicit hypergradient's label-space part."""

  def grads_of(t, t1=theta1):
    return jax.grad(train_loss, 1, has_aux=True)(
      problem, t1, model_state1, t, batch
    )[0]

  _, hvp = jax.linearize(lambda t1: grads_of(targets, t1), theta1)
  g = jax.grad(estimators.meta_primary_loss, argnums=1)(
    problem, theta1, model_state1, meta_batch
  )
  w = jax.lax.stop_gradient(inverse.solve(hvp, g))

  def loss(t):
    return -_dot(w, grads_of(t))

  return loss


def _dot(a, b) -> jax.Array:
  """⟨a, b⟩ over every leaf of two pytrees of one structure."""
  pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  return sum(jnp.vdot(x, y) for x, y in pairs)


def _tangent(x, allowed):
  """x projected onto the labels' tangent space: zero outside each row's
  allowed classes and summing to 0 over them (moves that keep a label a
  distribution over its primary class's auxiliary classes)."""
  x = jnp.where(allowed, x, 0.0)
  mean = jnp.sum(x, -1, keepdims=True) / jnp.sum(allowed, -1, keepdims=True)
  return jnp.where(allowed, x - mean, 0.0)


def _cosine(a, b):
  norm = jnp.linalg.norm(a) * jnp.linalg.norm(b)
  return jnp.where(norm > 0, jnp.vdot(a, b) / jnp.maximum(norm, 1e-30), 0.0)


def label_space_slopes(meta_loss, probs, lam, directions, allowed) -> dict:
  """Where J(t) = meta_loss(t) + λ H(t) points in label space, at g's
  labels t = `probs` [N, K].

  For each direction d [N, K] of `directions` (e.g. Human − g, Uniform −
  g): 'meta', the directional derivative ⟨∇t meta_loss, d⟩ (negative: J's
  meta part falls when the labels move towards it); 'entropy', λ⟨∇t H, d⟩
  likewise; 'meta_cosine' and 'entropy_cosine', the cosine of each part's
  descent direction (−∇, on the tangent space of `allowed` [N, K]: each
  row's auxiliary classes) with d; 'norm', ‖d‖. One reverse pass each
  gives every direction's slope at once.
  """
  meta = jax.grad(meta_loss)(probs)
  entropy = lam * jax.grad(losses.entropy_regularizer)(probs)
  out = {}
  for name, d in directions.items():
    out[name] = {
      'meta': jnp.vdot(meta, d),
      'entropy': jnp.vdot(entropy, d),
      'meta_cosine': _cosine(-_tangent(meta, allowed), d),
      'entropy_cosine': _cosine(-_tangent(entropy, allowed), d),
      'norm': jnp.linalg.norm(d),
    }
  return out
