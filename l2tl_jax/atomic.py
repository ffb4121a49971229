"""Files replaced whole or not at all, created with the user's umask.

Every file the library writes for others to read (results, configs,
summaries, metrics logs, plots, downloaded data) is written to a temporary
file beside its destination and renamed into place, so a reader never sees
a half-written file and a crash leaves the previous one. `tempfile.mkstemp`
creates files 0600; the temporary file is given the mode `open` would give
(0666 less the umask) before the rename.

Only the standard library: the data module and the plots use it without
importing JAX or orbax.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import json
import os
import tempfile
from typing import IO, Any


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def apply_umask(path: str, *, directory: bool = False) -> None:
  """Gives `path` the mode `open`/`mkdir` would (mkstemp/mkdtemp use 0600)."""
  os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def writer(path: str, mode: str = "w", *, prefix: str = ".tmp-",
           suffix: str = "") -> Iterator[IO[Any]]:
  """A file object whose content replaces `path` when the block ends.

  The temporary file is renamed to `path` only if the block raises nothing;
  otherwise it is removed and `path` stays as it was (so a check inside the
  block, e.g. of a download's checksum, can refuse the content).

  Args:
    path: destination; its directory is created if missing.
    mode: 'w' (text) or 'wb' (bytes).
    prefix: the temporary file's name prefix.
    suffix: the temporary file's name suffix (e.g. '.png').

  Yields:
    The open temporary file.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
    apply_umask(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON (arrays as lists), atomically."""
  with writer(path, "w", suffix=".json") as f:
    json.dump(obj, f, indent=2, default=_json_default)
    f.write("\n")


def write_text(path: str, text: str) -> None:
  """Writes `text`, atomically."""
  with writer(path, "w") as f:
    f.write(text)


def _json_default(obj):
  if hasattr(obj, "tolist"):
    return obj.tolist()
  if hasattr(obj, "item"):
    return obj.item()
  raise TypeError(f"Not JSON serialisable: {type(obj).__name__}")
