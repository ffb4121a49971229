"""Several processes (hosts) training one run: start-up and agreement.

`initialize(config.distributed, os.environ)` starts `jax.distributed` before
anything else uses JAX (experiments.main calls it first); with nothing set it
does nothing and the run is one process, as before. A multi-process run is
data parallel over the devices of every process ('mesh' parallelism): each
process reads its own rows of every global batch
(`l2tl_jax.data.train_iterator(process_index=..., process_count=...)`), all of
them write and restore the orbax checkpoints together, and process 0 alone
writes the other files (logs, metrics, results, plots, caches).

The helpers below are identities in a single process, so the code that calls
them reads the same either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from l2tl_jax.data import sharding as data_sharding

# Environment variables read for the fields of config.distributed left None
# (JAX itself reads only the first).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
  value = environ.get(name)
  if value is None or not value.strip():
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} is not an integer.") from None


def settings(config: Any, environ: Mapping[str, str] | None = None
             ) -> dict[str, Any] | None:
  """The arguments of `jax.distributed.initialize`, or None for one process.

  Args:
    config: config.distributed (coordinator_address, num_processes,
      process_id, cluster_detection; fields left None are read from
      `environ`), or None.
    environ: environment variables (os.environ in a launcher); None: none.

  Returns:
    Keyword arguments for jax.distributed.initialize; None when nothing
    asks for several processes (or num_processes is 1).

  Raises:
    ValueError: some but not all of the three settings are given and no
      cluster detection is asked for, or a value is malformed.
  """
  config = {} if config is None else config
  environ = {} if environ is None else environ
  address = (config.get("coordinator_address")
             or environ.get(ENV_COORDINATOR) or None)
  num = config.get("num_processes")
  num = _env_int(environ, ENV_NUM_PROCESSES) if num is None else num
  pid = config.get("process_id")
  pid = _env_int(environ, ENV_PROCESS_ID) if pid is None else pid
  detection = config.get("cluster_detection")
  if detection is None and address is None and num is None and pid is None:
    return None
  if num == 1 and pid in (None, 0):
    return None  # One process: nothing to coordinate.
  if detection is None:
    missing = [f"{field} (or {env})" for field, env, value in (
        ("coordinator_address", ENV_COORDINATOR, address),
        ("num_processes", ENV_NUM_PROCESSES, num),
        ("process_id", ENV_PROCESS_ID, pid)) if value is None]
    if missing:
      raise ValueError(
          "A multi-process run needs config.distributed."
          + ", config.distributed.".join(missing) + " as well; or set "
          "config.distributed.cluster_detection='auto' to let JAX find them "
          "in a Slurm, Open MPI, Kubernetes or Cloud TPU job.")
  return {
      "coordinator_address": address,
      "num_processes": num,
      "process_id": pid,
      # Settings given in full are used as they are; 'auto' is JAX's default
      # detection (None).
      "cluster_detection_method": ("deactivate" if detection is None else
                                   None if detection == "auto" else detection),
  }


def initialize(config: Any, environ: Mapping[str, str] | None = None) -> bool:
  """Starts jax.distributed when config or environment ask for processes.

  Call it before any other JAX use (it must precede backend start-up).

  Args:
    config: config.distributed, or None (see `settings`).
    environ: environment variables to read the unset fields from
      (os.environ in a launcher); None: none.

  Returns:
    Whether jax.distributed was initialised (False: one process, nothing
    done).
  """
  kwargs = settings(config, environ)
  if kwargs is None:
    return False
  if not jax.distributed.is_initialized():
    jax.distributed.initialize(**kwargs)
  return True


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits until every process reaches the barrier `name`."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def from_primary(value: Any) -> Any:
  """Process 0's value of a numpy scalar/array pytree, on every process."""
  if jax.process_count() == 1:
    return value
  return jax.device_get(multihost_utils.broadcast_one_to_all(value))


def gather(value: int) -> np.ndarray:
  """Every process's integer `value`, int32 [process_count], on every
  process."""
  if jax.process_count() == 1:
    return np.asarray([value], np.int32)
  return np.asarray(multihost_utils.process_allgather(
      np.asarray(value, np.int32))).reshape(-1)


def replicated_sharding() -> NamedSharding:
  """A sharding that replicates over the devices of every process."""
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return NamedSharding(Mesh(np.asarray(devices), ("data",)), PartitionSpec())


def to_global(tree: Any) -> Any:
  """`tree` with its process-local jax.Array leaves replicated over every
  process's devices (orbax saves no process-local arrays in a multi-process
  run); numpy leaves stay. The identity in a single process."""
  if jax.process_count() == 1:
    return tree
  sharding = replicated_sharding()
  return jax.tree.map(
      lambda x: (data_sharding.replicate(x, sharding)
                 if isinstance(x, jax.Array) and x.is_fully_addressable
                 else x), tree)
