"""Checkpoints (orbax) of the train state plus JSON host state, and atomic
file writes.

A checkpoint holds three items: 'state' (the TrainState, one copy, whatever
the parallelism), 'best' (the validation-selected params, or the current
ones before any evaluation) and 'host' (JSON: the input iterator position,
the selection record, ...). Orbax writes each step into a temporary
directory and renames it when complete, so a crash mid-save leaves no
checkpoint that restores wrongly: the previous one stays the latest.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import orbax.checkpoint as ocp


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON to a temporary file in the same directory, then renames it."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2, default=_json_default)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text_atomic(path: str, text: str) -> None:
  """Writes text to a temporary file in the same directory, then renames it."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _json_default(obj):
  if hasattr(obj, "tolist"):
    return obj.tolist()
  if hasattr(obj, "item"):
    return obj.item()
  raise TypeError(f"Not JSON serialisable: {type(obj).__name__}")


class Checkpointer:
  """Saves and restores (state, best params, host JSON) by step."""

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=False,
            create=True,
        ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, *, state: Any, best: Any, host: dict) -> None:
    """Saves synchronously (returns when the checkpoint is complete)."""
    if self._manager.latest_step() == step:
      return
    self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            best=ocp.args.StandardSave(best),
            host=ocp.args.JsonSave(host),
        ),
    )
    self._manager.wait_until_finished()

  def restore(
      self, step: int, *, state: Any, best: Any
  ) -> tuple[Any, Any, dict]:
    """Restores step `step` into the structures of `state` and `best`."""
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
    self._manager.close()
