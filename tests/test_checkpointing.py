"""Orbax checkpoints: maxl_jax/training/checkpointing.py, on a small pytree.

Save and restore give back the same bits; a damaged newest checkpoint falls
back to an older one. (Through a whole run: test_resume.py, test_restore.py.)
"""

import pathlib

import entry_point as ep
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from maxl_jax.errors import UsageError
from maxl_jax.training import carry, checkpointing


@flax.struct.dataclass
class _Tiny:
  """A small state of the dtypes a run holds."""

  theta: dict
  half: jax.Array
  count: jax.Array


def _state(seed):
  """A loop carry of a `_Tiny` state, with NaN, inf and -0."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(3, 4)).astype(np.float32)
  w[0, :3] = np.nan, np.inf, -0.0
  tiny = _Tiny(
    theta={'w': jnp.asarray(w), 'b': jnp.asarray(rng.normal(size=4))},
    half=jnp.asarray(rng.normal(size=5), jnp.bfloat16),
    count=jnp.asarray(rng.integers(0, 9, 2), jnp.uint32),
  )
  sums = carry.named_sums(('loss',), ('meta_loss',), ('meta_share',))
  sums = {k: v + seed for k, v in sums.items()}
  return carry.start(tiny, sums).replace(step=jnp.asarray(seed, jnp.int32))


def _extra(step):
  return {'epoch': step // 3, 'step': step % 3, 'name': 'run', 'list': [1.5]}


def _assert_bitwise_equal(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    a, b = np.asarray(a), np.asarray(b)
    assert (a.dtype, a.shape) == (b.dtype, b.shape)
    assert a.tobytes() == b.tobytes()


@pytest.fixture
def managers(tmp_path):
  """`open(name)`: a new manager of tmp_path/name (all closed after)."""
  opened = []

  def open_manager(name='checkpoints'):
    manager = checkpointing.make_manager(str(tmp_path / name), keep=3)
    opened.append(manager)
    return manager

  yield open_manager
  for manager in opened:
    manager.close()


def _save(manager, *steps):
  for step in steps:
    checkpointing.save(manager, step, _state(step), _extra(step), wait=True)


def _corrupt(manager, step):
  ep.corrupt_checkpoint(pathlib.Path(manager.directory) / str(step))


def test_restore_latest_gives_back_the_same_bits(managers):
  _save(managers(), 2, 5)
  template = _state(0)
  step, state, extra = checkpointing.restore_latest(managers(), template)
  assert step == 5 and extra == _extra(5)
  _assert_bitwise_equal(state, _state(5))
  _assert_bitwise_equal(
    checkpointing.restore_step(managers(), 2, template), _state(2)
  )


def test_no_checkpoints_give_back_the_template(managers):
  template = _state(0)
  got = checkpointing.restore_latest(managers(), template)
  assert got[0] is None and got[1] is template and got[2] is None


@pytest.mark.parametrize('delete', [True, False])
def test_damaged_newest_falls_back_to_the_older(managers, delete):
  _save(managers(), 2, 4)
  manager = managers()
  _corrupt(manager, 4)
  step, state, extra = checkpointing.restore_latest(
    manager, _state(0), delete_unusable=delete
  )
  assert step == 2 and extra == _extra(2)
  _assert_bitwise_equal(state, _state(2))
  kept = [2] if delete else [2, 4]
  assert sorted(managers().all_steps()) == kept
  assert (pathlib.Path(manager.directory) / '4').exists() == (not delete)


def test_no_usable_checkpoint_is_a_usage_error(managers):
  _save(managers(), 2, 4)
  manager = managers()
  for step in (2, 4):
    _corrupt(manager, step)
  with pytest.raises(UsageError, match='none of the checkpoints') as error:
    checkpointing.restore_latest(manager, _state(0))
  assert 'step 4: ' in str(error.value) and 'step 2: ' in str(error.value)
  assert sorted(managers().all_steps()) == [2, 4]  # Nothing deleted.


def test_restore_step_of_a_missing_or_damaged_step(managers):
  _save(managers(), 2, 4)
  manager = managers()
  with pytest.raises(UsageError, match=r'the kept steps are \[2, 4\]'):
    checkpointing.restore_step(manager, 3, _state(0))
  _corrupt(manager, 4)
  with pytest.raises(UsageError, match=r'step 4 .* cannot be restored'):
    checkpointing.restore_step(manager, 4, _state(0))
  with pytest.raises(UsageError, match='the kept steps are none'):
    checkpointing.restore_step(managers('empty'), 0, _state(0))


def test_an_earlier_layout_is_upgraded_on_restore(managers):
  """Before the `signal/` group, what trains g was summed as `meta/`."""
  want = _state(3)
  old = carry.to_checkpoint(want)
  sums = old['sums'].items()
  old['sums'] = {
    k.replace('signal/', 'meta/'): v for k, v in sums if k != 'signal/count'
  }
  manager = managers()
  manager.save(
    3,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(old), extra=ocp.args.JsonSave(_extra(3))
    ),
  )
  manager.wait_until_finished()
  step, got, extra = checkpointing.restore_latest(managers(), _state(0))
  assert step == 3 and extra == _extra(3)
  _assert_bitwise_equal(got, want)
  # signal/count and meta/count came from one array: a step that donates
  # the carry needs them in two buffers.
  jax.block_until_ready(jax.jit(lambda c: c, donate_argnums=0)(got))
