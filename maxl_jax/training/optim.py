"""Optimisers of θ1 and θ2 from the config, and α = θ1's current rate."""

import optax


def lr_schedule(opt_config, steps_per_epoch: int) -> optax.Schedule:
  """Step schedule: `lr * decay_factor ** floor(epoch / decay_every_epochs)`.

  Steps count the updates of the optimiser that uses the schedule; each
  network takes `steps_per_epoch` updates per epoch in both schedules.
  """
  return optax.exponential_decay(
    init_value=opt_config.lr,
    transition_steps=max(1, opt_config.decay_every_epochs * steps_per_epoch),
    decay_rate=opt_config.decay_factor,
    staircase=True,
  )


# `opt_config.name` (θ2's `label_opt` may take Adam; θ1's is SGD).
OPTIMIZERS = ('sgd', 'adam')


def make_optimizer(opt_config, steps_per_epoch: int):
  """SGD (or Adam, `opt_config.name`) with coupled weight decay (as
  PyTorch's) and the step schedule."""
  schedule = lr_schedule(opt_config, steps_per_epoch)
  if opt_config.get('name', 'sgd') == 'adam':
    step = optax.adam(schedule)
  else:
    step = optax.sgd(schedule, momentum=opt_config.momentum or None)
  return optax.chain(optax.add_decayed_weights(opt_config.weight_decay), step)
