"""Persisted state: orbax checkpoints, checksums, locks, atomic writes.

A checkpoint holds three items: 'state' (the TrainState, one copy, whatever
the parallelism), 'best' (the validation-selected params, or the current
ones before any evaluation) and 'host' (JSON: the input iterator position,
the selection record, ...). Orbax writes each step into a temporary
directory and renames it when complete, so a crash mid-save leaves no
checkpoint that restores wrongly: the previous one stays the latest.
A SHA-256 of every file of a step is written beside it once it is complete
and checked before it is restored; a damaged step is moved aside and the
previous good one used. An intact step whose arrays have other names or
shapes than the run's (a changed method or encoder) is never moved: the
restore stops with `IncompatibleError` naming the differences.

`exclusive_lock` gives one process at a time a workdir or a cache entry.
Files are written atomically with the user's umask (`l2tl_jax.atomic`).

In a run of several processes (`l2tl_jax.distributed`) every process takes
part in saving and restoring the orbax checkpoints; process 0 alone writes
the checksums, moves damaged steps aside and holds the locks for all of
them.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import time
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from flax import serialization

from l2tl_jax import atomic
from l2tl_jax import distributed

CHECKSUMS = "l2tl_checksums.json"


class LockedError(RuntimeError):
  """Another live process holds the lock."""


class DamagedError(RuntimeError):
  """Persisted state failed its integrity check and nothing good is left."""


class IncompatibleError(ValueError):
  """An intact checkpoint holds arrays of other names or shapes."""

  def __init__(self, step: int, differences: list[str]):
    self.step, self.differences = step, differences
    shown = "; ".join(differences[:6])
    more = f"; and {len(differences) - 6} more" if len(differences) > 6 else ""
    super().__init__(f"checkpoint step {step} holds other arrays than this "
                     f"run's state ({shown}{more})")


# The one atomic writer (kept under these names for their callers).
apply_umask = atomic.apply_umask
write_json_atomic = atomic.write_json
write_text_atomic = atomic.write_text


def checksums(directory: str) -> dict[str, str]:
  """SHA-256 of every file below `directory` but the checksum file."""
  out = {}
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      rel = os.path.relpath(path, directory)
      if rel == CHECKSUMS:
        continue
      h = hashlib.sha256()
      with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          h.update(chunk)
      out[rel] = h.hexdigest()
  return out


def write_checksums(directory: str) -> None:
  """Records the checksums of `directory`'s files in it (atomically)."""
  write_json_atomic(os.path.join(directory, CHECKSUMS), checksums(directory))


def verify(directory: str) -> str | None:
  """None if `directory` matches its recorded checksums, else what differs.

  A directory without a checksum file (written before checksums existed, or
  killed between completing and recording them) cannot be verified: None.
  """
  path = os.path.join(directory, CHECKSUMS)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      expected = json.load(f)
  except (OSError, ValueError) as e:
    return f"its checksum file is unreadable ({e})"
  actual = checksums(directory)
  missing = sorted(set(expected) - set(actual))
  changed = sorted(k for k in expected.keys() & actual.keys()
                   if expected[k] != actual[k])
  if missing or changed:
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"changed {', '.join(changed)}"] if changed else [])
    return "; ".join(parts)
  return None


def _leaf_name(path) -> str:
  return ".".join(str(getattr(k, "key", getattr(k, "name",
                                               getattr(k, "idx", k))))
                  for k in path)


def leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Dotted leaf name -> shape, named as a checkpoint names them."""
  tree = serialization.to_state_dict(tree)
  return {_leaf_name(path): tuple(np.shape(leaf)) for path, leaf in
          jax.tree_util.tree_leaves_with_path(tree)}


def shape_differences(saved: dict[str, tuple[int, ...]],
                      expected: dict[str, tuple[int, ...]]) -> list[str]:
  """What differs between two `leaf_shapes` maps, one line per kind."""
  out = []
  missing = sorted(expected.keys() - saved.keys())
  extra = sorted(saved.keys() - expected.keys())
  changed = sorted(k for k in saved.keys() & expected.keys()
                   if tuple(saved[k]) != tuple(expected[k]))
  if missing:
    out.append(f"{len(missing)} array(s) this run needs are not in it: "
               + ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else ""))
  if extra:
    out.append(f"{len(extra)} array(s) in it this run does not have: "
               + ", ".join(extra[:4]) + (", ..." if len(extra) > 4 else ""))
  for k in changed[:4]:
    out.append(f"{k} has shape {tuple(saved[k])} there, "
               f"{tuple(expected[k])} here")
  if len(changed) > 4:
    out.append(f"{len(changed) - 4} more array(s) of another shape")
  return out


_OS_ERROR = re.compile(r"os_error_code='?(\d+)")


def as_os_error(e: Exception, path: str) -> OSError | None:
  """The OSError inside a storage library's error text (disk full, ...)."""
  if isinstance(e, OSError):
    return e
  match = _OS_ERROR.search(str(e))
  if match:
    code = int(match.group(1))
    return OSError(code, os.strerror(code), path)
  for code in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
    if os.strerror(code) in str(e):
      return OSError(code, os.strerror(code), path)
  return None


def move_aside(path: str) -> str:
  """Renames a damaged `path` to `<path>.damaged-<time>`; returns the name."""
  target = f"{path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
  os.replace(path, target)
  return target


@contextlib.contextmanager
def exclusive_lock(path: str, *, what: str, wait: bool = False
                   ) -> Iterator[None]:
  """Holds an exclusive lock on file `path` (released when the process dies).

  In a run of several processes, process 0 holds it for all of them: the
  others wait until it does (or fail with it), and it is released once every
  process has left the block.

  Args:
    path: the lock file (created; it records the holder's pid).
    what: what is locked, for the message ('workdir /x').
    wait: wait for the holder to finish instead of failing.

  Raises:
    LockedError: another process holds it (without `wait`), naming its pid.
  """
  if jax.process_count() == 1:
    with _file_lock(path, what=what, wait=wait):
      yield
    return
  with contextlib.ExitStack() as stack:
    error = None
    if distributed.is_primary():
      try:
        stack.enter_context(_file_lock(path, what=what, wait=wait))
      except Exception as e:  # pylint: disable=broad-except
        error = e  # Raised once the others know.
    if not distributed.from_primary(np.int32(error is None)):
      raise error or LockedError(
          f"{what} is in use by another run: process 0 of this run could not "
          f"lock {path}.")
    yield
    distributed.sync(f"unlock {path}")


@contextlib.contextmanager
def _file_lock(path: str, *, what: str, wait: bool) -> Iterator[None]:
  """exclusive_lock within one process."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
      if not wait:
        raise LockedError(
            f"{what} is in use by process {holder} (lock file {path}). Wait "
            "for it to finish or stop it; two processes must not write the "
            "same files.") from None
      logging.warning("Waiting for process %s, which holds %s.", holder, what)
      fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    yield
  finally:
    os.close(fd)  # Releases the lock.


class Checkpointer:
  """Saves and restores (state, best params, host JSON) by step."""

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._max_to_keep = max_to_keep
    self._failed = False  # A save failed on the storage: close quietly.
    self._open()

  def _open(self) -> None:
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "best": ocp.StandardCheckpointHandler(),
                       "host": ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            max_to_keep=self._max_to_keep,
            enable_async_checkpointing=False,
            create=True,
        ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def clean_temporaries(self) -> None:
    """Removes unfinished saves left by a dead writer (hold the run's lock)."""
    if not distributed.is_primary() or not os.path.isdir(self.directory):
      return
    for name in os.listdir(self.directory):
      if "tmp" in name and not name.isdigit():
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def restore_latest_good(
      self, *, state: Any, best: Any
  ) -> tuple[int, Any, Any, dict] | None:
    """The newest step that verifies and restores; damaged ones moved aside.

    Args:
      state: template of the train state.
      best: template of the best params.

    Returns:
      (step, state, best, host), or None when there is no checkpoint.

    Raises:
      DamagedError: every checkpoint is damaged.
      IncompatibleError: the newest intact checkpoint holds arrays of other
        names or shapes than `state` and `best` (nothing is moved).
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    state, best = distributed.to_global((state, best))
    damaged = []
    for step in steps:
      problem = verify(self.step_dir(step))
      if problem is None:
        self._check_shapes(step, state=state, best=best)
        try:
          restored = self.restore(step, state=state, best=best)
        except Exception as e:  # pylint: disable=broad-except
          problem = f"it does not restore ({type(e).__name__}: {e})"
        else:
          if damaged:
            logging.warning(
                "Checkpoint%s %s damaged and moved aside (%s); resuming from "
                "step %d (%s).", "s" if len(damaged) > 1 else "",
                ", ".join(d for d, _ in damaged),
                "; ".join(p for _, p in damaged), step, self.step_dir(step))
          return (step, *restored)
      damaged.append((self.step_dir(step), problem))
      self._manager.close()
      if distributed.is_primary():
        move_aside(self.step_dir(step))
      distributed.sync(f"moved aside {self.step_dir(step)}")
      self._open()
    if damaged:
      raise DamagedError(
          "Every checkpoint is damaged: " + "; ".join(
              f"{d}: {p}" for d, p in damaged) + ". They were moved aside "
          f"(*.damaged-*); rerun to start {self.directory} from step 0.")
    return None

  def _check_shapes(self, step: int, *, state: Any, best: Any) -> None:
    """Raises IncompatibleError if step's arrays are not those of the run."""
    try:
      metadata = self._manager.item_metadata(step)
      saved = {item: {_leaf_name(path): tuple(leaf.shape) for path, leaf in
                      jax.tree_util.tree_leaves_with_path(metadata[item])}
               for item in ("state", "best")}
    except Exception:  # pylint: disable=broad-except
      return  # Unreadable metadata: the restore itself tells.
    differences = []
    for item, tree in (("state", state), ("best", best)):
      differences += [f"{item}: {d}" for d in
                      shape_differences(saved[item], leaf_shapes(tree))]
    if differences:
      raise IncompatibleError(step, differences)

  def save(self, step: int, *, state: Any, best: Any, host: dict) -> None:
    """Saves synchronously (returns when the checkpoint is complete).

    Raises:
      OSError: the storage refused the write (disk full, permissions); the
        unfinished step is left as a temporary that the next start removes.
    """
    if self._manager.latest_step() == step:
      return
    state, best = distributed.to_global((state, best))
    # Raw writes to stderr from the storage library's threads (a full disk
    # makes each of them print a traceback) are kept for the log; the
    # failure itself is raised below.
    stray = io.StringIO()
    try:
      with contextlib.redirect_stderr(stray):
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                best=ocp.args.StandardSave(best),
                host=ocp.args.JsonSave(host),
            ),
        )
        self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      os_error = as_os_error(e, self.step_dir(step))
      if os_error is not None:
        # The manager cannot save again; closing it here, inside the
        # redirect, lets its writer threads finish (and print) now.
        self._failed = True
        with contextlib.redirect_stderr(stray):
          try:
            self._manager.close()
          except Exception:  # pylint: disable=broad-except
            pass
      if stray.getvalue():  # For the log file, not the console.
        logging.warning("While saving step %d: %s", step, stray.getvalue(),
                        extra={"console": False})
      if os_error is None:
        raise
      raise os_error from e
    if distributed.is_primary():
      write_checksums(self.step_dir(step))

  def restore(
      self, step: int, *, state: Any, best: Any
  ) -> tuple[Any, Any, dict]:
    """Restores step `step` into the structures of `state` and `best`."""
    state, best = distributed.to_global((state, best))
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state),
            best=ocp.args.StandardRestore(best),
            host=ocp.args.JsonRestore(),
        ),
    )
    return restored["state"], restored["best"], dict(restored["host"])

  def close(self) -> None:
    """Closes the manager; after a failed save (a full disk), quietly: its
    writer threads' own tracebacks add nothing to the error raised."""
    if not self._failed:
      self._manager.close()
      return
    with contextlib.redirect_stderr(io.StringIO()):
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        logging.warning("Closing the checkpoint manager after a failed save "
                        "failed too.", exc_info=True)
