"""Placing host batches on devices, split along the batch axis; replicas."""

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from l2tl_jax.data.errors import DataError

DATA_AXIS = 'data'


def make_data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices) with axis 'data'."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh | None = None) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the mesh's 'data' axis.

  A mesh without a 'data' axis is split over its first axis.
  """
  mesh = make_data_mesh() if mesh is None else mesh
  axis = DATA_AXIS if DATA_AXIS in mesh.axis_names else mesh.axis_names[0]
  return NamedSharding(mesh, PartitionSpec(axis))


def _batch_shards(sharding: jax.sharding.Sharding) -> int:
  """Number of pieces the leading axis is cut into."""
  if isinstance(sharding, NamedSharding):
    axis = sharding.spec[0] if len(sharding.spec) else None
    if axis is None:
      return 1
    axes = (axis,) if isinstance(axis, str) else tuple(axis)
    return int(np.prod([sharding.mesh.shape[a] for a in axes]))
  return len(sharding.device_set)


def shard_batch(batch: Any, mesh_or_sharding: Mesh | jax.sharding.Sharding
                | None = None) -> Any:
  """Places a host batch on devices, split along the leading axis.

  In a multi-process run each process passes its own part of the global
  batch (jax.make_array_from_process_local_data assembles the global array);
  in a single process this is one jax.device_put of the whole pytree.

  Args:
    batch: pytree of numpy arrays with a common leading batch dimension.
    mesh_or_sharding: a Mesh (split over its 'data' axis), a Sharding, or None
      (all devices).

  Returns:
    The same pytree of global jax.Arrays.

  Raises:
    DataError: the batch does not divide evenly over the devices.
  """
  if isinstance(mesh_or_sharding, jax.sharding.Sharding):
    sharding = mesh_or_sharding
  else:
    sharding = data_sharding(mesh_or_sharding)
  shards = _batch_shards(sharding)
  batch = jax.tree.map(np.asarray, batch)
  for x in jax.tree.leaves(batch):
    rows = x.shape[0] * jax.process_count()
    if rows % shards:
      raise DataError(
          f'A batch of {rows} rows cannot be split evenly over {shards}'
          f' devices; use a batch size divisible by {shards}.'
      )
  if jax.process_count() == 1:
    # One transfer for the whole pytree: cheaper than one call per leaf.
    return jax.device_put(batch, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def replicate(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
  """One array (numpy, or a jax.Array of this process) replicated as
  `sharding` places it, also over devices of other processes.

  Every process passes the same value; each builds only its own devices'
  copies (no communication, unlike jax.device_put, which compares the
  values across processes). PRNG key arrays stay keys.

  Args:
    x: the value, the same on every process.
    sharding: a fully replicated sharding.

  Returns:
    The global jax.Array.
  """
  if isinstance(x, jax.Array) and x.sharding == sharding:
    return x
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(
        replicate(jax.random.key_data(x), sharding),
        impl=jax.random.key_impl(x))
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def split_for_pmap(batch: Any, num_devices: int | None = None) -> Any:
  """Reshapes a host batch to [num_devices, B / num_devices, ...] for jax.pmap.

  Args:
    batch: pytree of numpy arrays [B, ...].
    num_devices: leading size; default jax.local_device_count().

  Returns:
    The same pytree with arrays [D, B / D, ...].
  """
  d = jax.local_device_count() if num_devices is None else num_devices

  def split(x):
    x = np.asarray(x)
    if x.shape[0] % d:
      raise DataError(
          f'A batch of {x.shape[0]} rows cannot be split over {d} devices;'
          f' use a batch size divisible by {d}.'
      )
    return x.reshape((d, x.shape[0] // d) + x.shape[1:])

  return jax.tree.map(split, batch)
