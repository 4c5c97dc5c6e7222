"""Where a run starts: a restored checkpoint or step 0, or its result.

The loop's checkpoints hold the state and the data iterators' positions
(`data_position`); `initial` restores the newest usable one, or builds step
0 (the label source's initialisation: K-Means trains its autoencoder
here); `finished` is the result of a run that already ended.
"""

import json

import jax
import numpy as np
from jax.experimental import multihost_utils

from maxl_jax.labels import TrainingImages
from maxl_jax.training import carry, checkpointing, console
from maxl_jax.training import workdir as workdir_lib
from maxl_jax.training.mesh import replicated, with_sharding


def _lead_says(flag: bool) -> bool:
  """Process 0's `flag`, on every process (so that all take one branch)."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def training_images(train_it) -> TrainingImages:
  """The label sources' view of the training set (no augmentation)."""
  return TrainingImages(
    images=train_it.images,
    labels=train_it.labels,
    indices=train_it.indices,
  )


def data_position(data) -> dict:
  """The iterators' positions, saved with every checkpoint."""
  position = {'data': data.train.get_state()}
  if data.meta is not None:
    position['meta_data'] = data.meta.get_state()
  return position


def abstract_carry(run) -> carry.Carry:
  """Shapes and dtypes of the run's carry (nothing computed)."""
  return jax.eval_shape(carry.start, run.state_shapes(), run.zero_sums())


def initial(run, data, manager, mesh):
  """(step, carry, last saved step): a restored checkpoint, or step 0.

  A restored run takes its label-source state from the checkpoint; only a
  new one initialises it (K-Means trains its autoencoder here).
  """
  repl = replicated(mesh)
  template = with_sharding(abstract_carry(run), repl)
  step, restored, extra = checkpointing.restore_latest(manager, template)
  if step is not None:
    data.train.set_state(extra['data'])
    if data.meta is not None:
      data.meta.set_state(extra['meta_data'])
    return step, restored, step
  label_state = run.init_label_state(training_images(data.train))
  start = carry.start(run.create_state(label_state), run.zero_sums())
  return 0, jax.device_put(start, repl), None


def finished(step: int, total: int, workdir) -> dict | None:
  """The result of a run that already finished, else None."""
  result_path = workdir / workdir_lib.RESULT
  if step < total or not _lead_says(result_path.exists()):
    return None
  console.say(
    'This run already finished (step %d of %d); nothing to train. Result: %s',
    step,
    total,
    result_path,
  )
  return json.loads(result_path.read_text())
