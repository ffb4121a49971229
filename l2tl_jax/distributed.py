"""Several processes (hosts) training one run: start-up and agreement.

`initialize(config.distributed, os.environ)` starts `jax.distributed` before
anything else uses JAX (experiments.main calls it first); with nothing set it
does nothing and the run is one process, as before. A multi-process run is
data parallel over the devices of every process ('mesh' parallelism): each
process reads its own rows of every global batch
(`l2tl_jax.data.train_iterator(process_index=..., process_count=...)`), all of
them write and restore the orbax checkpoints together, and process 0 alone
writes the other files (logs, metrics, results, plots, caches).

Start-up is bounded: a process waits at most
config.distributed.initialization_timeout seconds (default 300, JAX's own)
for the coordinator and for the other processes, printing a line every 30 s
while it waits, and then stops with one line saying what to check. (JAX's
own deadline ends the process with a fatal error and a C++ stack, which no
Python code can catch; so the wait is timed here, a little before JAX's.)
The processes then exchange their settings, so that a JAX_NUM_PROCESSES
that differs between them is reported by every process.

The helpers below are identities in a single process, so the code that calls
them reads the same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import math
import os
import socket
import sys
import threading
import time
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
# Seconds a process waits for the coordinator and the other processes when
# config.distributed.initialization_timeout is unset (JAX's default).
DEFAULT_TIMEOUT_S = 300
# Seconds between two progress lines while a process waits.
PROGRESS_EVERY_S = 30.0
# JAX's own deadline is this much later than ours: ours always ends first.
_JAX_GRACE_S = 30
# What experiments.main puts before a set-up error (see `SetupError`).
ERROR_PREFIX = "error: distributed set-up: "


class SetupError(ValueError):
  """Settings that cannot start a multi-process run, or processes that do
  not agree (a ValueError: launchers report it in one line)."""


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
  value = environ.get(name)
  if value is None or not value.strip():
    return None
  try:
    return int(value)
  except ValueError:
    raise SetupError(f"{name}={value!r} is not an integer.") from None


_ADDRESS_HELP = ("give the coordinator as 'host:port' (process 0's host name "
                 "or IP address and a free port, e.g. '10.0.0.1:1234'; IPv6 "
                 "as '[::1]:1234')")


def parse_address(address: str) -> tuple[str, int]:
  """(host, port) of a coordinator address 'host:port' or '[ipv6]:port'.

  Raises:
    SetupError: no port, a port that is no integer in [1, 65535], no host,
      or an IPv6 address without brackets.
  """
  text = str(address).strip()
  where = (f"coordinator address {address!r} ({ENV_COORDINATOR} or "
           "config.distributed.coordinator_address)")
  host, sep, port = text.rpartition(":")
  if not sep or not port or "]" in port:
    raise SetupError(f"{where} has no port: {_ADDRESS_HELP}.")
  if not port.isdigit() or not 1 <= int(port) <= 65535:
    raise SetupError(f"{where}: the port {port!r} is not an integer in "
                     f"[1, 65535]; {_ADDRESS_HELP}.")
  if host.startswith("[") and host.endswith("]"):
    host = host[1:-1]
    if not host:
      raise SetupError(f"{where} has no host: {_ADDRESS_HELP}.")
  elif not host:
    raise SetupError(f"{where} has no host: {_ADDRESS_HELP}.")
  elif ":" in host and "://" not in host:
    raise SetupError(f"{where}: an IPv6 host needs brackets, e.g. "
                     f"'[{host}]:{port}'.")
  return host, int(port)


def _timeout(config: Any) -> float:
  value = config.get("initialization_timeout")
  if value is None:
    return DEFAULT_TIMEOUT_S
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not math.isfinite(value) or value <= 0):
    raise SetupError(
        "config.distributed.initialization_timeout must be a positive "
        f"number of seconds, got {value!r}.")
  return value


def settings(config: Any, environ: Mapping[str, str] | None = None
             ) -> dict[str, Any] | None:
  """The arguments of `jax.distributed.initialize`, or None for one process.

  Args:
    config: config.distributed (coordinator_address, num_processes,
      process_id, cluster_detection, initialization_timeout; fields left
      None are read from `environ`, or default), or None.
    environ: environment variables (os.environ in a launcher); None: none.

  Returns:
    Keyword arguments for jax.distributed.initialize, 'initialization_timeout'
    being the seconds this process waits (`initialize` gives JAX a little
    more); None when nothing asks for several processes (or num_processes
    is 1).

  Raises:
    SetupError (a ValueError): some but not all of the three settings are
      given and no cluster detection is asked for, or a value is malformed
      (an address without a port, a process id out of range, ...).
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
      raise SetupError(
          "A multi-process run needs config.distributed."
          + ", config.distributed.".join(missing) + " as well; or set "
          "config.distributed.cluster_detection='auto' to let JAX find them "
          "in a Slurm, Open MPI, Kubernetes or Cloud TPU job.")
  if address is not None:
    parse_address(address)
  if num is not None and num < 1:
    raise SetupError(f"The number of processes ({ENV_NUM_PROCESSES} or "
                     f"config.distributed.num_processes) must be >= 1, got "
                     f"{num}.")
  if pid is not None and (pid < 0 or (num is not None and pid >= num)):
    allowed = f"in [0, {num - 1}] for {num} processes" if num else ">= 0"
    raise SetupError(
        f"The process id ({ENV_PROCESS_ID} or config.distributed.process_id) "
        f"must be {allowed}, got {pid}.")
  return {
      "coordinator_address": address,
      "num_processes": num,
      "process_id": pid,
      # Settings given in full are used as they are; 'auto' is JAX's default
      # detection (None).
      "cluster_detection_method": ("deactivate" if detection is None else
                                   None if detection == "auto" else detection),
      "initialization_timeout": _timeout(config),
  }


def _print(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _exit_on_timeout(message: str) -> None:
  """One error line and exit code 2, before JAX's fatal abort."""
  sys.stderr.write(ERROR_PREFIX + message + "\n")
  sys.stderr.flush()
  os._exit(2)  # pylint: disable=protected-access


class _Wait:
  """Who waits for what, until when; progress lines on the way."""

  def __init__(self, kwargs: dict[str, Any], timeout: float,
               report: Callable[[str], None], every_s: float):
    pid, num = kwargs["process_id"], kwargs["num_processes"]
    self.who = ("this process" if pid is None else
                f"process {pid} of {num}" if num else f"process {pid}")
    self.address = kwargs["coordinator_address"] or "(detected by JAX)"
    self.num = num
    self.timeout = timeout
    self.start = time.monotonic()
    self.deadline = self.start + timeout
    self.report = report
    self.every_s = every_s
    self.next_report = self.start + every_s

  def left(self) -> float:
    return self.deadline - time.monotonic()

  def tick(self, what: str) -> None:
    now = time.monotonic()
    if now >= self.next_report:
      self.report(f"{self.who}: waiting for {what} "
                  f"({now - self.start:.0f} s of {self.timeout:g} s)")
      self.next_report = now + self.every_s

  def advice(self) -> str:
    count = (f"all {self.num} processes (JAX_PROCESS_ID 0 to {self.num - 1})"
             if self.num else "every process")
    same = f"{ENV_NUM_PROCESSES}={self.num}" if self.num else ENV_NUM_PROCESSES
    return (f"start {count} with the same {ENV_COORDINATOR}={self.address} "
            f"(process 0's host and a free port) and {same}, or allow more "
            "time with config.distributed.initialization_timeout.")


def _wait_for_coordinator(wait: _Wait, host: str, port: int) -> None:
  """Returns once the coordinator's port accepts connections.

  Raises:
    SetupError: not within the deadline.
  """
  error: OSError | None = None
  while True:
    try:
      with socket.create_connection((host, port),
                                    timeout=max(0.1, min(2.0, wait.left()))):
        return
    except OSError as e:
      error = e
    if wait.left() <= 0:
      reason = getattr(error, "strerror", None) or error
      raise SetupError(
          f"{wait.who} could not reach the coordinator at {wait.address} "
          f"within {wait.timeout:g} s ({reason}): {wait.advice()}")
    wait.tick(f"the coordinator (process 0) at {wait.address}")
    time.sleep(max(0.0, min(0.5, wait.left())))


def _connect(wait: _Wait, kwargs: dict[str, Any],
             on_timeout: Callable[[str], None]) -> None:
  """jax.distributed.initialize, watched: progress lines, and `on_timeout`
  (exits) when not every process has connected by the deadline."""
  done = threading.Event()

  def watch():
    while not done.wait(max(0.0, min(1.0, wait.left()))):
      if wait.left() <= 0:
        on_timeout(
            f"{wait.who}: not every process connected to the coordinator "
            f"at {wait.address} within {wait.timeout:g} s: {wait.advice()}")
        return
      wait.tick(f"the other processes at the coordinator {wait.address}")

  watcher = threading.Thread(target=watch, name="distributed-start-up",
                             daemon=True)
  watcher.start()
  try:
    jax.distributed.initialize(
        **kwargs,
        initialization_timeout=int(math.ceil(max(wait.left(), 0)))
        + _JAX_GRACE_S)
  finally:
    done.set()
  watcher.join()


def _check_agreement(num: int | None) -> None:
  """Every process's configured count, exchanged: they must agree with each
  other and with the processes that connected.

  Raises:
    SetupError: they do not (on every process).
  """
  if num is None:  # Detected by JAX: nothing configured to compare.
    return
  counts = gather(num)
  if jax.process_count() == num and (counts == num).all():
    return
  each = ", ".join(f"process {i}: {c}" for i, c in enumerate(counts))
  raise SetupError(
      f"the processes were started with different {ENV_NUM_PROCESSES} "
      f"(or config.distributed.num_processes): {each}; "
      f"{jax.process_count()} connected. Start every process with the same "
      f"{ENV_NUM_PROCESSES}.")


def initialize(config: Any, environ: Mapping[str, str] | None = None, *,
               report: Callable[[str], None] = _print,
               progress_every_s: float = PROGRESS_EVERY_S,
               on_timeout: Callable[[str], None] = _exit_on_timeout) -> bool:
  """Starts jax.distributed when config or environment ask for processes.

  Call it before any other JAX use (it must precede backend start-up). A
  process other than 0 first waits until the coordinator's port answers;
  then every process waits in jax.distributed.initialize until all have
  connected. Both waits together last at most the initialization timeout
  (`settings`), with a `report` line every `progress_every_s` seconds.

  Args:
    config: config.distributed, or None (see `settings`).
    environ: environment variables to read the unset fields from
      (os.environ in a launcher); None: none.
    report: where progress lines go (default: stderr).
    progress_every_s: seconds between two progress lines.
    on_timeout: called with a one-line message when the processes have not
      all connected by the deadline; the default prints
      'error: distributed set-up: <message>' on stderr and exits with code 2
      (JAX would abort the process moments later; nothing else can be done
      while its connection attempt blocks).

  Returns:
    Whether jax.distributed was initialised (False: one process, nothing
    done).

  Raises:
    SetupError (a ValueError): bad settings (`settings`); the coordinator
      did not answer in time; the processes disagree on their number.
  """
  kwargs = settings(config, environ)
  if kwargs is None:
    return False
  if jax.distributed.is_initialized():
    return True
  wait = _Wait(kwargs, kwargs.pop("initialization_timeout"), report,
               progress_every_s)
  address = kwargs["coordinator_address"]
  if address is not None and kwargs["process_id"] != 0:
    host, port = parse_address(address)
    if "://" not in host:  # A gRPC target with a scheme: JAX resolves it.
      _wait_for_coordinator(wait, host, port)
  _connect(wait, kwargs, on_timeout)
  _check_agreement(kwargs["num_processes"])
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
