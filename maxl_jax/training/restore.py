"""A finished (or interrupted) run, rebuilt from its workdir.

`restore_run(workdir)` reads `config.json` and `dataset.json`, builds the
run (`contract.build_run`: MAXL's or a loss combiner's; no data, nothing
trained) and restores the newest usable checkpoint, or the one of `step`,
into its abstract state: the K-Means autoencoder and centroids come from the
checkpoint, not from retraining.
"""

import dataclasses

import jax
import ml_collections

from maxl_jax.errors import UsageError
from maxl_jax.state import CombinerState, MaxlState
from maxl_jax.training import checkpointing, contract, resumption
from maxl_jax.training import workdir as workdir_lib
from maxl_jax.training.mesh import with_sharding


@dataclasses.dataclass(frozen=True)
class Restored:
  """A run and its state at `step`."""

  config: ml_collections.ConfigDict
  run: contract.Run
  state: MaxlState | CombinerState
  step: int


def restore_run(workdir: str, step: int | None = None) -> Restored:
  """Rebuilds the run in `workdir` and restores its state on one device.

  Reads only: unusable checkpoints are skipped, not deleted.

  Args:
    workdir: the run's directory.
    step: the checkpoint's step; None = the newest usable one.

  Raises:
    UsageError: not a run's workdir, no checkpoint (of `step`), or none
      that can be restored.
  """
  path = workdir_lib.as_path(workdir)
  config = workdir_lib.read_config(path)
  run = contract.build_run(config, workdir_lib.read_info(path))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  template = with_sharding(resumption.abstract_carry(run), device)
  manager = checkpointing.make_manager(
    str(path / workdir_lib.CHECKPOINTS), config.checkpoint.keep, create=False
  )
  try:
    if step is None:
      found, restored, _ = checkpointing.restore_latest(
        manager, template, delete_unusable=False
      )
      if found is None:
        raise UsageError(f'{path} holds no checkpoint to restore.')
      step = found
    else:
      restored = checkpointing.restore_step(manager, step, template)
  finally:
    manager.close()
  return Restored(config=config, run=run, state=restored.state, step=step)
