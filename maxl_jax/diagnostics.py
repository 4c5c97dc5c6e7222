"""Diagnostics: gradient cosine similarity (paper Fig. 4) and label usage.

Pure functions of arrays and pytrees.
"""

import jax
import jax.numpy as jnp


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
