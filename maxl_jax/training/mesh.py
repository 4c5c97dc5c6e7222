"""Data parallelism: the device mesh, global batches, host copies.

A one-axis mesh `data` spans every device of every process; the state is
replicated and the batch sharded, and `jax.jit` inserts the all-reduces.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(devices=None) -> Mesh:
  """A one-axis `data` mesh over `devices` (default: all, of all hosts)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), 'data')


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec('data'))


def jit_step(fn, mesh: Mesh, *, donate: bool = False, batches: int = 1):
  """`fn(state, *batches)` jitted with the state replicated, its `batches`
  sharded over `data` and its output replicated; `donate`: the state's
  buffers are reused for the output (an update step)."""
  return jax.jit(
    fn,
    in_shardings=(replicated(mesh), *[sharded(mesh)] * batches),
    out_shardings=replicated(mesh),
    donate_argnums=0 if donate else (),
  )


def global_batch(batch, mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows of a batch -> global arrays sharded on `data`."""
  sharding = sharded(mesh)
  return {
    k: jax.make_array_from_process_local_data(sharding, v)
    for k, v in batch.items()
  }


def to_host(tree):
  """Replicated global arrays -> numpy (works on every process)."""
  return jax.tree.map(
    lambda x: np.asarray(
      x.addressable_data(0) if isinstance(x, jax.Array) else x
    ),
    tree,
  )


def with_sharding(abstract, sharding):
  """`abstract` as ShapeDtypeStructs placed on `sharding` (restore targets)."""
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
    abstract,
  )
