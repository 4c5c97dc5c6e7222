"""Optimisers of θ1 and θ2 from the config, and α = θ1's current rate."""

import optax


def lr_schedule(opt_config, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate by step, `lr * decay_factor ** floor(epoch / d)` with
  d = `decay_every_epochs`.

  Steps count the updates of the optimiser that uses it; each network takes
  `steps_per_epoch` updates per epoch under both step kinds' schedules
  (paper, interleaved).
  """
  return optax.exponential_decay(
    init_value=opt_config.lr,
    transition_steps=max(1, opt_config.decay_every_epochs * steps_per_epoch),
    decay_rate=opt_config.decay_factor,
    staircase=True,
  )


# `opt_config.name` (θ2's `label_opt` may take Adam; θ1's is SGD).
OPTIMIZERS = ('sgd', 'adam')


def make_optimizer(opt_config, steps_per_epoch: int, name: str = 'sgd'):
  """SGD (or Adam: `name`, θ2's `label_opt.name`) with coupled weight decay
  (as PyTorch's) and the learning rate of `lr_schedule`."""
  lr = lr_schedule(opt_config, steps_per_epoch)
  if name == 'adam':
    step = optax.adam(lr)
  else:
    step = optax.sgd(lr, momentum=opt_config.momentum or None)
  return optax.chain(optax.add_decayed_weights(opt_config.weight_decay), step)
