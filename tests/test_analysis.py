"""Diagnostics: per-unit gradient cosine similarity and label usage."""

import jax.numpy as jnp
import numpy as np
import pytest

from maxl_jax import diagnostics


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
  got = diagnostics.gradient_cosine(a, b)
  np.testing.assert_allclose(got, np.mean(want), rtol=1e-5)


def test_cosine_extremes():
  rng = np.random.default_rng(1)
  a = _tree(rng)
  neg = {k: {n: -x for n, x in v.items()} for k, v in a.items()}
  np.testing.assert_allclose(diagnostics.gradient_cosine(a, a), 1.0, rtol=1e-6)
  np.testing.assert_allclose(
    diagnostics.gradient_cosine(a, neg), -1.0, rtol=1e-6
  )


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
  np.testing.assert_allclose(usage['aux_entropy'], ent, rtol=1e-5)
