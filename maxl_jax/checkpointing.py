"""Orbax checkpoints of `MaxlState` plus the data iterator's position.

A checkpoint holds two items: `state` (the whole `MaxlState` pytree: θ1, θ2,
optimiser states, BatchNorm statistics, step counters, label-source state,
running metric sums) and `extra` (JSON: the data iterator's position). A
workdir can be local or `gs://`; orbax writes each step to a temporary
directory and renames it when complete, so a killed save leaves the previous
checkpoints intact.
"""

import json

import orbax.checkpoint as ocp
from absl import logging

from maxl_jax.errors import UsageError


def make_manager(directory: str, keep: int) -> ocp.CheckpointManager:
  """A manager that keeps the last `keep` checkpoints under `directory`."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(
    directory, options=options, item_names=('state', 'extra')
  )


def save(manager, step: int, state, extra: dict, *, wait: bool = False):
  """Saves `state` and the JSON-able `extra` at `step` (async by default)."""
  manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)
    ),
    force=True,
  )
  if wait:
    manager.wait_until_finished()


def restore_latest(manager, template):
  """Restores the newest usable checkpoint; returns (step, state, extra).

  Tries the checkpoints from newest to oldest: a truncated or corrupted one
  (orbax raises ValueError, JSONDecodeError, OSError ...) is skipped with a
  warning. Returns (None, template, None) when there is no checkpoint.

  Raises:
    UsageError: checkpoints exist but none can be restored.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  for step in steps:
    try:
      restored = manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(template),
          extra=ocp.args.JsonRestore(),
        ),
      )
    except (ValueError, json.JSONDecodeError, OSError, KeyError) as e:
      logging.warning(
        'Checkpoint at step %d is unusable (%s: %s); trying an older one.',
        step,
        type(e).__name__,
        str(e).splitlines()[0] if str(e) else '',
      )
      continue
    return step, restored['state'], restored['extra']
  if steps:
    raise UsageError(
      f'none of the checkpoints {steps} in {manager.directory} can be '
      'restored (truncated or corrupted); delete that directory to start '
      'afresh, or point --workdir elsewhere.'
    )
  return None, template, None
