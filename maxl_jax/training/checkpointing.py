"""Orbax checkpoints of the loop's carry plus the data iterator's position.

A checkpoint holds two items: `state` (the loop's `carry.Carry` as one flat
tree, `carry.to_checkpoint`: θ1, θ2, optimiser states, BatchNorm
statistics, step counters, label-source state, the epoch's metric sums,
the non-finite guard) and `extra` (JSON: the data iterator's position). A
checkpoint of an earlier version is read in its own layout and upgraded
(`carry.upgrade`). The directory can be local or `gs://`. Orbax writes
each step into a temporary directory and renames it when complete, so a
process killed while saving leaves the earlier checkpoints intact (the
temporary directory is removed by the next run).

Multi-process: every process calls `make_manager`, `save` and
`restore_latest` with the same arguments (orbax synchronises them and each
process writes the shards it owns); the directory must be shared by all
hosts (e.g. `gs://`).

`PreemptionWatch` tells the training loop when a SIGTERM (a preemption
notice) asks it to save and stop.
"""

import logging as std_logging
import signal
import sys
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from maxl_jax.errors import UsageError
from maxl_jax.training import carry as carry_lib


def make_manager(
  directory: str, keep: int, *, create: bool = True
) -> ocp.CheckpointManager:
  """A manager that keeps the last `keep` checkpoints under `directory`.

  `create=False` (reading a finished run) neither creates the directory nor
  removes unfinished temporary checkpoints.
  """
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep, create=create, cleanup_tmp_directories=create
  )
  return ocp.CheckpointManager(
    directory, options=options, item_names=('state', 'extra')
  )


def save(manager, step: int, carry, extra: dict, *, wait: bool = False):
  """Saves `carry` and the JSON-able `extra` at `step` (async by default).

  The arrays are copied to host memory before this returns, so `carry` may
  be donated to the next step right away.
  """
  tree = carry_lib.to_checkpoint(carry)
  manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(tree), extra=ocp.args.JsonSave(extra)
    ),
    force=True,
  )
  if wait:
    manager.wait_until_finished()


def _drop_closed_loop_errors(unraisable):
  """sys.unraisablehook: hides the reads Orbax abandons in a bad checkpoint.

  When one read of a damaged checkpoint fails, TensorStore finishes the
  others later on its own threads; each then fails to post its result to
  Orbax's closed event loop and Python prints a traceback, hundreds in all,
  possibly in the middle of the program's last line. Everything else goes
  to the default hook.
  """
  error = unraisable.exc_value
  if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
    return
  sys.__unraisablehook__(unraisable)


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  line = text.splitlines()[0] if text else ''
  line = line.split(' See full TensorStore details')[0]  # A repr follows.
  return f'{type(error).__name__}: {line[:200]}'


def restore_latest(manager, template, *, delete_unusable: bool = True):
  """Restores the newest usable checkpoint; returns (step, state, extra).

  Tries the checkpoints from newest to oldest. One that cannot be restored
  (truncated or corrupted files, a layout that does not fit `template`) is
  skipped with a warning; once an older one is restored, the unusable newer
  ones are deleted (unless `delete_unusable=False`: reading a run for
  analysis) so that the run can save those steps again.

  Args:
    manager: from `make_manager`.
    template: a `carry.Carry` with the shapes, dtypes and shardings to
      restore into.

  Returns:
    (step, carry, extra), or (None, template, None) without checkpoints.

  Raises:
    UsageError: checkpoints exist but none can be restored.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  unusable, errors = [], []
  for step in steps:
    try:
      restored = _restore(manager, step, template)
    # Orbax and TensorStore raise many types (ValueError, OSError, KeyError,
    # TypeError, msgpack errors ...) for damaged files.
    except Exception as e:  # noqa: BLE001
      logging.warning(
        'Checkpoint at step %d in %s is unusable (%s); trying an older one.',
        step,
        manager.directory,
        _first_line(e),
      )
      unusable.append(step)
      errors.append(f'step {step}: {_first_line(e)}')
      continue
    for bad in unusable if delete_unusable else ():
      logging.warning('Deleting the unusable checkpoint at step %d.', bad)
      manager.delete(bad)
    return step, restored['state'], restored['extra']
  if steps:
    raise UsageError(
      f'none of the checkpoints in {manager.directory} can be restored '
      f'({"; ".join(errors)}); delete that directory to start afresh, or '
      'point --workdir elsewhere.'
    )
  return None, template, None


def _abandoned_reads(record: std_logging.LogRecord) -> bool:
  """A logging filter for asyncio: False for the failed reads of a damaged
  checkpoint that nobody awaits any more (their error is reported once,
  by `restore_latest`)."""
  return 'exception was never retrieved' not in record.getMessage()


def _quiet_abandoned_reads():
  """Before any read starts: no tracebacks from the reads Orbax abandons."""
  sys.unraisablehook = _drop_closed_loop_errors
  asyncio_logger = std_logging.getLogger('asyncio')
  if _abandoned_reads not in asyncio_logger.filters:
    asyncio_logger.addFilter(_abandoned_reads)


def _restore(manager, step: int, template) -> dict:
  """{'state': the carry, 'extra': ...} of the checkpoint at `step`; one
  of an earlier layout is read as saved and upgraded (`carry.upgrade`)."""
  _quiet_abandoned_reads()
  tree = carry_lib.to_checkpoint(template)
  try:
    restored = manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(tree),
        extra=ocp.args.JsonRestore(),
      ),
    )
  except Exception as error:  # noqa: BLE001 - damaged, or an earlier layout?
    try:
      earlier = _layout(manager, step) != _layout_of(tree)
    except Exception:  # noqa: BLE001 - no readable metadata: damaged.
      earlier = False
    if not earlier:
      raise error
    restored = manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), extra=ocp.args.JsonRestore()
      ),
    )
    restored = {
      'state': _fit(carry_lib.upgrade(dict(restored['state']), tree), tree),
      'extra': restored['extra'],
    }
  state = carry_lib.from_checkpoint(restored['state'], template)
  return {'state': state, 'extra': restored['extra']}


def _layout_of(tree: dict) -> tuple:
  """A checkpoint tree's top-level names and metric-sum names."""
  return tuple(sorted(tree)), tuple(sorted(tree['sums']))


def _layout(manager, step: int) -> tuple:
  """`_layout_of` the checkpoint at `step`, from its metadata."""
  handlers = {
    'state': ocp.StandardCheckpointHandler(),
    'extra': ocp.JsonCheckpointHandler(),
  }
  reader = ocp.CheckpointManager(
    manager.directory,
    options=ocp.CheckpointManagerOptions(create=False),
    item_names=('state', 'extra'),
    item_handlers=handlers,
  )
  try:
    return _layout_of(dict(reader.item_metadata(step)['state']))
  finally:
    reader.close()


def _fit(saved, template):
  """`saved` (a tree as restored without a template: dicts and lists) in
  `template`'s structure, each leaf on the template leaf's sharding."""

  def find(node, path):
    for key in path:
      if isinstance(key, jax.tree_util.SequenceKey):
        name = key.idx
      elif isinstance(key, jax.tree_util.DictKey):
        name = key.key
      else:  # A NamedTuple's or dataclass's field.
        name = key.name
      if isinstance(node, list | tuple):
        node = node[int(name)]
      else:
        node = node[name] if name in node else node[str(name)]
    return node

  def leaf(path, like):
    # A copy on the host: an upgrade may give two leaves one array, and a
    # donated carry must not hold one buffer twice.
    value = np.array(find(saved, path), like.dtype)
    return jax.device_put(value, like.sharding)

  paths, treedef = jax.tree_util.tree_flatten_with_path(template)
  return jax.tree.unflatten(treedef, [leaf(p, x) for p, x in paths])


def restore_step(manager, step: int, template):
  """The state of the checkpoint at `step`.

  Raises:
    UsageError: there is no checkpoint of `step`, or it cannot be restored.
  """
  steps = sorted(manager.all_steps())
  if step not in steps:
    raise UsageError(
      f'no checkpoint of step {step} in {manager.directory}; the kept '
      f'steps are {steps or "none"}.'
    )
  try:
    return _restore(manager, step, template)['state']
  except Exception as e:  # noqa: BLE001 - see restore_latest.
    raise UsageError(
      f'the checkpoint of step {step} in {manager.directory} cannot be '
      f'restored ({_first_line(e)}); choose another of {steps}.'
    ) from e


class PreemptionWatch:
  """Has SIGTERM (a preemption notice) arrived? Then save and stop.

  One process: a Python SIGTERM handler sets a flag. Several processes: JAX's
  preemption service (started by `jax.distributed.initialize`) catches
  SIGTERM on any of them and makes all agree on the step at which to save.
  """

  def __init__(self):
    self._flag, self._old = False, None
    self._multi = jax.process_count() > 1
    main = threading.current_thread() is threading.main_thread()
    if not self._multi and main:
      self._old = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, *_):
    logging.warning('SIGTERM: saving a checkpoint, then stopping.')
    self._flag = True

  def reached(self, step: int) -> bool:
    """Call before every step with the number of steps done."""
    if not self._multi:
      return self._flag
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # The service is off (jax_enable_preemption_service).
      return False

  def close(self):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
