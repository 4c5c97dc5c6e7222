"""The MAXL problem (maxl_jax/problem.py): L_train's terms, the per-example
weights, label smoothing and the lookahead, each checked by hand."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_problems import estimate, make_problem, rel_err

from maxl_jax import losses
from maxl_jax.problem import (
  aux_focal_terms,
  generated_labels,
  lookahead,
  primary_loss_at,
  train_loss,
)


def test_weighted_aux_loss_and_entropy_by_hand():
  """L_aux = mean_n w_n Σ_k g_nk ℓ_nk with w in (0, 1); H of the unweighted
  g; without weights the targets are the labels and there is no weight."""
  # float64: two programs compute each value; no CPU-dependent margin.
  with jax.enable_x64(True):
    args = make_problem(
      'conv', (2, 3), 8, example_weights=True, dtype=jnp.float64
    )
    problem, theta1, model_state1, theta2, model_state2, batch = args
    labels, _ = generated_labels(problem, theta2, model_state2, batch)
    w = np.asarray(labels.weights)
    assert w.shape == (8,) and np.all((w > 0) & (w < 1)) and np.ptp(w) > 1e-3
    (g_logits, w_logits), _ = problem.g_apply(
      theta2, model_state2, batch['image'], True
    )
    np.testing.assert_allclose(
      w, 1 / (1 + np.exp(-np.asarray(w_logits))), rtol=1e-12
    )
    probs = np.asarray(labels.probs)
    np.testing.assert_array_equal(
      probs, losses.mask_softmax(g_logits, batch['label'], problem.mask)
    )
    np.testing.assert_allclose(labels.targets, w[:, None] * probs, rtol=1e-12)
    _, out = estimate('structured', args, 0.1)
    terms = np.asarray(aux_focal_terms(problem, theta1, model_state1, batch))
    by_hand = np.mean(w * np.sum(probs * terms, -1))
    np.testing.assert_allclose(
      out.train_metrics['loss_aux'], by_hand, rtol=1e-12
    )
    np.testing.assert_allclose(
      out.entropy, losses.entropy_regularizer(labels.probs), rtol=1e-12
    )
    np.testing.assert_allclose(out.aux_weights, w, rtol=1e-12)

    plain = make_problem('conv', (2, 3), 8, dtype=jnp.float64)
    labels, _ = generated_labels(plain[0], *plain[3:])
    assert labels.targets is labels.probs and labels.weights is None
    assert estimate('structured', plain, 0.1)[1].aux_weights is None


def test_label_smoothing_in_the_theta1_loss_only():
  """ε smooths L_pri in L_train (θ1's step, so the lookahead), not the meta
  objective's L_pri(θ1⁺); structured still equals unrolled (float64)."""
  with jax.enable_x64(True):
    args = make_problem(
      'conv', (2, 3), 6, dtype=jnp.float64, label_smoothing=0.3
    )
    problem, theta1, model_state1, theta2, model_state2, batch = args
    labels, _ = generated_labels(problem, theta2, model_state2, batch)
    (logits, _), _ = problem.f_apply(theta1, model_state1, batch['image'], True)
    smoothed = losses.primary_loss(logits, batch['label'], 2.0, 0.3)
    plain = losses.primary_loss(logits, batch['label'], 2.0)
    assert abs(smoothed - plain) > 1e-3
    for targets in (labels.targets, None):  # MAXL and Single.
      _, (_, values) = train_loss(problem, theta1, model_state1, targets, batch)
      np.testing.assert_allclose(values['loss_pri'], smoothed, rtol=1e-12)
    np.testing.assert_allclose(
      primary_loss_at(problem, theta1, model_state1, batch), plain, rtol=1e-12
    )
    alpha = 0.3
    exact, out = estimate('unrolled', args, alpha)
    theta1_plus, *_ = lookahead(
      problem, theta1, model_state1, labels.targets, batch, alpha
    )
    (logits, _), _ = problem.f_apply(
      theta1_plus, model_state1, batch['image'], True
    )
    np.testing.assert_allclose(
      out.loss_pri_after,
      losses.primary_loss(logits, batch['label'], 2.0),
      rtol=1e-12,
    )
    unsmoothed = dataclasses.replace(problem, label_smoothing=0.0)
    _, out_plain = estimate('unrolled', (unsmoothed, *args[1:]), alpha)
    assert abs(out.loss_pri_after - out_plain.loss_pri_after) > 1e-6
    structured, _ = estimate('structured', args, alpha)
    assert rel_err(structured, exact) < 1e-10


def test_lookahead_forward_leaves_batch_stats_alone():
  # float64: the jitted estimator and the eager forward round the batch
  # statistics differently, ~1e-17 here (float32: ~1e-10 against values
  # near 0, relative 1e-6); θ1⁺'s statistics differ by ~1e-3.
  close = functools.partial(chex.assert_trees_all_close, rtol=1e-10, atol=1e-13)
  with jax.enable_x64(True):
    args = make_problem('conv', (2, 3), 6, dtype=jnp.float64)
    problem, theta1, model_state1, theta2, model_state2, batch = args
    _, out = estimate('unrolled', args, 0.5)
    images = batch['image']
    _, stats_at_theta1 = problem.f_apply(theta1, model_state1, images, True)
    close(out.new_model_state1, stats_at_theta1)
    labels, _ = generated_labels(problem, theta2, model_state2, batch)
    theta1_plus, *_ = lookahead(
      problem, theta1, model_state1, labels.targets, batch, 0.5
    )
    _, stats_at_plus = problem.f_apply(theta1_plus, model_state1, images, True)
    with pytest.raises(AssertionError):
      close(out.new_model_state1, stats_at_plus)
