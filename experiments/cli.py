"""What the launchers share: flag parsing, a quiet console, exit codes.

Exit codes:

  2           a user error: bad flags, config fields or data, a workdir that
              holds another config or another process, weights that do not
              fit, a diverged run, a path that cannot be written
  1           some runs of a comparison or study failed (each is listed)
  128 + sig   a run stopped on a signal after saving its checkpoint

The console shows this project's own lines (stages, warnings, errors), the
progress bars and other libraries' errors; everything, library INFO and
WARNING lines and the tracebacks of handled errors included, goes to
`l2tl.log` in the workdir. `--log_level=warning` or `info` also shows the
libraries' lines of that level on the console.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import logging
import os
import sys
from typing import Any, NoReturn

from absl import flags
from absl import logging as absl_logging

from experiments import runner
from l2tl_jax import checkpointing
from l2tl_jax import data
from l2tl_jax import loading
from l2tl_jax import train
from l2tl_jax import validation
from l2tl_jax import weights

LOG_FILE = "l2tl.log"
LEVELS = {"quiet": logging.ERROR, "warning": logging.WARNING,
          "info": logging.INFO}
_LOG_LEVEL = flags.DEFINE_enum(
    "log_level", "quiet", list(LEVELS),
    "Library log lines shown on the console: 'quiet' (errors only), "
    "'warning' or 'info'. All of them always go to <workdir>/l2tl.log.")

USER_ERRORS = (data.DataError, validation.ConfigError,
               train.ConfigMismatchError, train.NonFiniteError,
               loading.MergeError, weights.WeightsError,
               checkpointing.LockedError, checkpointing.DamagedError)
_OURS = tuple(os.sep + name + os.sep for name in ("l2tl_jax", "experiments"))


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl flag parsing where a bad flag or config override is one line.

  Use as `app.run(main, flags_parser=cli.parse_flags)`.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e}. See --help.", 2)
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    # ml_collections' config overrides: misspelled fields, wrong types.
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    message = " ".join(str(message).split())
    fail(f"bad --config override or config file: {message}", 2)


class _ConsoleFilter(logging.Filter):
  """This project's records from INFO; other libraries' from `level`."""

  def __init__(self, level: int):
    super().__init__()
    self.level = level

  def filter(self, record: logging.LogRecord) -> bool:
    if not getattr(record, "console", True):
      return False
    ours = any(part in record.pathname for part in _OURS)
    return record.levelno >= (logging.INFO if ours else self.level)


class _ConsoleFormatter(logging.Formatter):

  def format(self, record: logging.LogRecord) -> str:
    message = record.getMessage()
    if record.levelno >= logging.ERROR:
      return f"error: {message}"
    if record.levelno >= logging.WARNING:
      return f"warning: {message}"
    return message


class _WorkdirLog(logging.Handler):
  """Appends to <log_dir>/l2tl.log once the run has created <log_dir>.

  Records from before are kept (up to `limit`) and written first; a run
  that never creates its workdir (a bad config) leaves no file behind.
  """

  def __init__(self, log_dir: str, limit: int = 10000):
    super().__init__()
    self.path = os.path.join(os.path.abspath(log_dir), LOG_FILE)
    self.limit = limit
    self.pending: list[str] = []
    self.file = None

  def emit(self, record: logging.LogRecord) -> None:
    try:
      line = self.format(record) + "\n"
      if self.file is None and os.path.isdir(os.path.dirname(self.path)):
        self.file = open(self.path, "a")
        self.file.writelines(self.pending)
        self.pending = []
      if self.file is None:
        if len(self.pending) < self.limit:
          self.pending.append(line)
        return
      self.file.write(line)
      self.file.flush()
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)

  def close(self) -> None:
    if self.file is not None:
      self.file.close()
    super().close()


def setup_logging(log_dir: str | None) -> None:
  """Console and <log_dir>/l2tl.log handlers on the root logger.

  Replaces absl's stderr handler; call it in main(), after flag parsing.
  """
  root = logging.getLogger()
  for handler in list(root.handlers):
    root.removeHandler(handler)
    if not isinstance(handler, absl_logging.ABSLHandler):
      handler.close()
  root.setLevel(logging.INFO)
  absl_logging.set_verbosity(absl_logging.INFO)
  logging.captureWarnings(True)
  console = logging.StreamHandler(sys.stderr)
  console.addFilter(_ConsoleFilter(LEVELS[_LOG_LEVEL.value]))
  console.setFormatter(_ConsoleFormatter())
  root.addHandler(console)
  if log_dir is None:
    return
  handler = _WorkdirLog(log_dir)
  handler.setFormatter(logging.Formatter(
      "%(asctime)s %(levelname).1s %(filename)s:%(lineno)d] %(message)s"))
  root.addHandler(handler)


def fail(message: str, code: int) -> NoReturn:
  """Prints 'error: message' once on stderr and exits with `code`."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def _os_message(e: OSError) -> str:
  where = f" {e.filename!r}" if e.filename else ""
  return (f"cannot write{where}: {e.strerror or e}. Check that the path is "
          "a writable directory (not a file) with free space, or choose "
          "another --workdir.")


def run_or_exit(fn: Callable[..., Any], *args, **kwargs) -> Any:
  """`fn(*args, **kwargs)`, with the known errors turned into exit codes.

  The traceback of a handled error goes to the log file only.
  """
  try:
    return fn(*args, **kwargs)
  except runner.RunInterruptedError as e:
    code, message = 128 + (e.signal or 0), str(e)
  except runner.RunFailedError as e:
    code, message = 1, str(e)
  except USER_ERRORS as e:
    code, message = 2, str(e)
  except OSError as e:
    code, message = 2, _os_message(e)
  logging.getLogger(__name__).error("Stopped: %s", message, exc_info=True,
                                    extra={"console": False})
  fail(message, code)
