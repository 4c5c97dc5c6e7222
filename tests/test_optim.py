"""The optimisers and the step schedule: maxl_jax/training/optim.py.

Against values computed by hand: PyTorch's SGD (coupled weight decay, then
momentum), with the rate cut by `decay_factor` every
`decay_every_epochs * steps_per_epoch` updates.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from maxl_jax.training import optim


def _opt(**overrides):
  config = ml_collections.ConfigDict(
    {
      'lr': 0.1,
      'momentum': 0.9,
      'weight_decay': 0.01,
      'decay_every_epochs': 2,
      'decay_factor': 0.5,
    }
  )
  config.update(overrides)
  return config


def test_rate_is_cut_every_decay_every_epochs():
  # 2 epochs of 3 steps: steps 0-5 at lr, 6-11 at lr / 2, 12- at lr / 4.
  schedule = optim.lr_schedule(_opt(), steps_per_epoch=3)
  rates = [float(schedule(step)) for step in range(14)]
  np.testing.assert_allclose(
    rates, [0.1] * 6 + [0.05] * 6 + [0.025] * 2, rtol=1e-7
  )
  tenth = optim.lr_schedule(_opt(decay_factor=0.1, lr=1.0), steps_per_epoch=1)
  np.testing.assert_allclose(
    [float(tenth(s)) for s in (0, 1, 2, 4)], [1.0, 1.0, 0.1, 0.01], rtol=1e-6
  )


def _steps(opt_config, steps_per_epoch, params, grads):
  """The parameters after each update, one per gradient (float64)."""
  tx = optim.make_optimizer(opt_config, steps_per_epoch)
  history = []
  with jax.enable_x64(True):
    params = jnp.asarray(params, jnp.float64)
    state = tx.init(params)
    for g in grads:
      updates, state = tx.update(jnp.asarray(g), state, params)
      params = optax.apply_updates(params, updates)
      history.append(np.asarray(params))
  return history


GRADS = [np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.25, -0.5])] * 2
P0 = np.array([1.0, -2.0, 0.5])


@pytest.mark.parametrize('momentum', [0.9, 0.0])
def test_sgd_with_momentum_and_weight_decay_by_hand(momentum):
  """d = g + wd p; buf = μ buf + d (buf = d at first); p -= lr_t buf.

  One step per epoch, the rate halved every 2: 0.1, 0.1, 0.05, 0.05 (as
  float32, the schedule's dtype; all else float64).
  """
  got = _steps(_opt(momentum=momentum), 1, P0, GRADS)
  p, buf = P0.copy(), np.zeros(3)
  for t, (g, params) in enumerate(zip(GRADS, got, strict=True)):
    d = g + 0.01 * p
    buf = momentum * buf + d
    p = p - float(np.float32(0.1 if t < 2 else 0.05)) * buf
    np.testing.assert_allclose(params, p, rtol=1e-12, err_msg=f'step {t}')


def test_no_weight_decay_and_no_momentum_is_plain_sgd():
  config = _opt(momentum=0.0, weight_decay=0.0, decay_every_epochs=50)
  got = _steps(config, 3, P0, GRADS)
  np.testing.assert_allclose(
    got[-1], P0 - float(np.float32(0.1)) * np.sum(GRADS, axis=0), rtol=1e-12
  )
