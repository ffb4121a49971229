"""How steps are compiled and placed: one device, a device mesh, or pmap.

* 'jit': `jax.jit` on the default device.
* 'mesh': `jax.jit` over a 1-D device mesh; the train state is replicated
  and every batch leaf is split along its leading axis over the 'data' mesh
  axis. The step is written for the global batch and the compiler inserts the
  collectives (what current JAX recommends).
* 'pmap': `jax.pmap` over the same devices; the step sees its local shard
  and calls psum/all_gather on the named axis itself. State carries a leading
  device axis.

Data-parallel L2TL draws the policy sample from the replicated state key, so
every device uses the same action, and the source top-k runs over the global
batch: results equal the single-device run up to float rounding.

With several processes (`l2tl_jax.distributed`) only 'mesh' runs: the mesh
spans the devices of every process (process by process), each process passes
its own rows of every global batch to `put_batch` (`data_shard`) and the
same host values to `put_replicated`.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from l2tl_jax.data import sharding as data_sharding

MODES = ("jit", "mesh", "pmap")
# Config values: a mode, or 'auto' (`resolve_mode`).
CONFIG_MODES = ("auto", *MODES)


def resolve_mode(mode: str) -> str:
  """'auto' -> 'mesh' with several devices (in any process), else 'jit'."""
  if mode == "auto":
    return "mesh" if jax.device_count() > 1 else "jit"
  return mode


def axis_size(axis_name: str | None) -> int:
  """Devices along `axis_name` inside a pmapped step; 1 for None (jit)."""
  return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def psum(x: Any, axis_name: str | None) -> Any:
  """Sum over the pmap axis; the identity under jit (the batch is global)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def pmean(x: Any, axis_name: str | None) -> Any:
  """Mean over the pmap axis; the identity under jit."""
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def trace_guard(fn: Callable, max_traces: int) -> Callable:
  """Wraps `fn` to raise AssertionError when traced more than `max_traces` times.

  `chex.assert_max_traces` keys its counter on the call stack and source of
  the wrapped function, so two steps built by the same code (several runs in
  one process) would share one budget; this counter belongs to one function
  object.
  """
  traces = 0

  @functools.wraps(fn)
  def wrapped(*args):
    nonlocal traces
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args)):
      traces += 1
      if traces > max_traces:
        raise AssertionError(
            f"Step {fn.__name__!r} was traced {traces} times (at most "
            f"{max_traces} allowed): its input shapes, dtypes or structure "
            "changed between calls. Feed batches of one fixed shape."
        )
    return fn(*args)

  return wrapped


@dataclasses.dataclass(frozen=True)
class Parallelism:
  """Compilation and placement for steps.

  Attributes:
    mode: 'jit', 'mesh' or 'pmap' ('auto' is resolved on construction).
    num_devices: devices to use for 'mesh'/'pmap' (None: all local devices;
      with several processes, all devices of every process).
    axis: name of the data-parallel axis.
    max_traces: how often a step may be traced before it is an error
      (`trace_guard`): steps must compile once.
  """

  mode: str = "jit"
  num_devices: int | None = None
  axis: str = "data"
  max_traces: int = 1

  def __post_init__(self):
    object.__setattr__(self, "mode", resolve_mode(self.mode))
    if self.mode not in MODES:
      raise ValueError(f"parallelism mode must be one of {MODES}, got {self.mode!r}")
    processes = jax.process_count()
    if processes > 1:
      if self.mode != "mesh":
        raise ValueError(
            f"parallelism {self.mode!r} runs within one process, but this run "
            f"has {processes} processes: use 'mesh' (or 'auto').")
      if self.num_devices not in (None, jax.device_count()):
        raise ValueError(
            f"num_devices={self.num_devices}, but a run of {processes} "
            f"processes uses all of their {jax.device_count()} devices.")
      if jax.device_count() != processes * jax.local_device_count():
        raise ValueError(
            f"{jax.device_count()} devices over {processes} processes: every "
            "process must have as many devices (each reads an equal share "
            "of every batch).")
      return
    available = jax.local_device_count()
    if self.num_devices is not None and not 1 <= self.num_devices <= available:
      raise ValueError(
          f"num_devices={self.num_devices} but {available} local devices exist."
      )

  @property
  def axis_name(self) -> str | None:
    """The collective axis the step must use itself (only under pmap)."""
    return self.axis if self.mode == "pmap" else None

  @property
  def devices(self) -> list[jax.Device]:
    if self.mode == "jit":
      return jax.local_devices()[:1]
    if jax.process_count() > 1:
      # Process by process: process p holds rows [p * B / P, (p + 1) * B / P)
      # of a global batch, the rows it reads itself (`data_shard`).
      return sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return jax.local_devices()[: self.num_devices or jax.local_device_count()]

  @property
  def data_shard(self) -> dict[str, int]:
    """The rows of every global batch this process reads, as keyword
    arguments of `data.train_iterator` / `data.eval_batches`."""
    return {"process_index": jax.process_index(),
            "process_count": jax.process_count()}

  @property
  def size(self) -> int:
    """Number of devices a global batch is split over."""
    return len(self.devices)

  def round_up(self, batch_size: int) -> int:
    """The smallest multiple of the device count >= batch_size."""
    return -(-batch_size // self.size) * self.size

  def mesh(self) -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.asarray(self.devices), (self.axis,))

  def _shardings(self) -> tuple[NamedSharding, NamedSharding]:
    mesh = self.mesh()
    return NamedSharding(mesh, P()), NamedSharding(mesh, P(self.axis))

  def compile_step(self, fn: Callable) -> Callable:
    """Compiles `fn(state, batch) -> (state, metrics)`, donating the state."""
    fn = trace_guard(fn, self.max_traces)
    if self.mode == "jit":
      return jax.jit(fn, donate_argnums=0)
    if self.mode == "mesh":
      replicated, data = self._shardings()
      return jax.jit(
          fn,
          in_shardings=(replicated, data),
          out_shardings=(replicated, replicated),
          donate_argnums=0,
      )
    return jax.pmap(
        fn, axis_name=self.axis, devices=self.devices, donate_argnums=0
    )

  def compile_eval(self, fn: Callable) -> Callable:
    """Compiles `fn(params, model_state, batch) -> sums` (no donation)."""
    if self.mode == "jit":
      return jax.jit(fn)
    if self.mode == "mesh":
      replicated, data = self._shardings()
      return jax.jit(
          fn,
          in_shardings=(replicated, replicated, data),
          out_shardings=replicated,
      )
    return jax.pmap(fn, axis_name=self.axis, devices=self.devices)

  def put_batch(self, batch: Any) -> Any:
    """Places a host batch for the compiled step (split over the devices).

    With several processes, `batch` is this process's rows of the global
    batch (`data_shard`).

    Raises:
      DataError: a leading batch axis does not split evenly.
    """
    if self.mode == "jit":
      return jax.device_put(batch, self.devices[0])
    if self.mode == "mesh":
      return data_sharding.shard_batch(batch, self._shardings()[1])
    return data_sharding.split_for_pmap(batch, self.size)

  def put_replicated(self, tree: Any) -> Any:
    """Places a pytree (train state, params) for the compiled step."""
    if self.mode == "jit":
      return jax.device_put(tree, self.devices[0])
    if self.mode == "mesh":
      if jax.process_count() > 1:
        # Every process holds the same values: each places its own copies.
        replicated = self._shardings()[0]
        return jax.tree.map(
            lambda x: data_sharding.replicate(x, replicated), tree)
      return jax.device_put(tree, self._shardings()[0])
    # One copy per device along a leading axis, placed as pmap places its
    # outputs, so the step's second call sees the inputs of its first.
    n = self.size
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), tree)
    return jax.device_put(stacked, self._shardings()[1])

  def unreplicate(self, tree: Any) -> Any:
    """The single copy of a placed pytree (drops pmap's device axis)."""
    if self.mode == "pmap":
      return jax.tree.map(lambda x: x[0], tree)
    return tree

  def metrics_to_host(self, metrics: Any) -> Any:
    """Metrics as host numpy scalars (pmap returns one copy per device)."""
    return jax.device_get(self.unreplicate(metrics))
