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
import re
import sys
import traceback
from typing import Any, NoReturn

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

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
# How absl reports an exception of a config file's get_config.
_WRAPPED_CONFIG_ERROR = "Error whilst parsing config file"
_STDLIB = os.path.dirname(os.path.abspath(os.__file__))


def parse_flags(argv: Sequence[str],
                flag_values: flags.FlagValues | None = None) -> list[str]:
  """absl flag parsing where a bad flag, config file or override is one line.

  Use as `app.run(main, flags_parser=cli.parse_flags)`, or call it with a
  module's own `flag_values`. A config file that cannot be loaded (missing,
  a directory, a syntax error, an exception in get_config) is reported here
  with its file and line, before anything else runs.
  """
  flag_values = flags.FLAGS if flag_values is None else flag_values
  try:
    rest = flag_values(list(argv))
  except flags.Error as e:
    text = str(e)
    if _WRAPPED_CONFIG_ERROR in text:  # absl's wrapping of get_config's error.
      fail(f"cannot load the config file: {_traceback_text_summary(text)}", 2)
    usage_error(_one_line(text))
  except Exception as e:  # pylint: disable=broad-except
    fail(_parse_error_message(e, argv), 2)
  _check_config_files(flag_values)
  return rest


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def _in_config_file(filename: str) -> bool:
  """Whether a traceback frame is a config file's (not a library's, not
  this module's)."""
  path = os.path.abspath(filename)
  return (not filename.startswith("<") and not path.startswith(_STDLIB)
          and path != os.path.abspath(__file__)
          and not any(part in path.split(os.sep)
                      for part in ("site-packages", "dist-packages")))


def _traceback_text_summary(text: str) -> str:
  """'file, line N: Type: message' from a traceback held in a message."""
  lines = [l for l in text.splitlines() if l.strip()]
  where = [m for m in re.finditer(r'File "([^"]+)", line (\d+)', text)
           if _in_config_file(m.group(1))]
  last = lines[-1].strip() if lines else text
  if where:
    return f"{where[-1].group(1)}, line {where[-1].group(2)}: {last}"
  return last


def _root_cause(e: BaseException) -> BaseException:
  seen = set()
  while e.__cause__ is not None and id(e) not in seen:
    seen.add(id(e))
    e = e.__cause__
  return e


def _parse_error_message(e: Exception, argv: Sequence[str]) -> str:
  """One line for an exception raised while the flags were parsed."""
  if isinstance(e, SyntaxError):
    return (f"cannot load the config file: {e.filename}, line {e.lineno}: "
            f"SyntaxError: {e.msg}")
  frames = [f for f in traceback.extract_tb(e.__traceback__)
            if _in_config_file(f.filename)]
  what = f"{type(e).__name__}: {_one_line(e)}"
  if frames:
    return (f"cannot load the config file: {frames[-1].filename}, line "
            f"{frames[-1].lineno}: {what}")
  if isinstance(e, OSError):
    return ("cannot load the config file: "
            f"{_one_line(_last_line(_root_cause(e)))}. See --help.")
  if isinstance(e, AttributeError) and getattr(e, "name", None) == "get_config":
    return ("cannot load the config file: it defines no get_config() "
            "(see experiments/configs/*.py).")
  # ml_collections' config overrides: misspelled fields, wrong types.
  if isinstance(e, (KeyError, AttributeError)):
    # ConfigDict's message: the key (quoted once or twice), maybe a line
    # 'Did you mean "steps" instead of "stpes"?'.
    inner = e.args[0] if e.args else e
    if isinstance(inner, KeyError) and inner.args:
      inner = inner.args[0]
    lines = str(inner).strip("\"' ").splitlines() or [""]
    key = lines[0].strip("\"' ")
    hint = " ".join(l.strip() for l in lines[1:] if l.strip())
    named = [a.split("=", 1)[0] for a in argv[1:]
             if a.startswith("-") and "." in a.split("=", 1)[0]
             and key in a.split("=", 1)[0].lstrip("-").split(".")[1:]]
    if named:
      return (f"bad config override {named[-1]}: {key!r} is not a field of "
              f"the config. {hint or 'Misspelled?'} See --help.")
  return f"bad --config override or config file: {_one_line(e)}. See --help."


def _last_line(e: BaseException) -> str:
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return lines[-1] if lines else type(e).__name__


def _check_config_files(flag_values: flags.FlagValues) -> None:
  """Exits with one line when a config flag's file did not load.

  ml_collections keeps the error of a missing or unreadable file until the
  config is first used; it is raised here instead.
  """
  for name in list(flag_values):
    flag = flag_values[name]
    if not config_flags.config_flags.is_config_flag(flag):
      continue
    try:
      getattr(flag.value, "keys", None)
    except OSError as e:
      try:
        path = config_flags.get_config_filename(flag)
      except flags.Error:
        path = None
      fail(f"--{flag.name}{'=' + path if path else ''}: cannot load the "
           f"config file: {_last_line(_root_cause(e)).rstrip('.')}. "
           "See --help.", 2)


def usage_error(message: str) -> NoReturn:
  """A bad command-line argument: one line 'error: message. See --help.',
  exit code 2."""
  message = _one_line(message).rstrip(".")
  fail(f"{message}. See --help.", 2)


def start_command(argv: Sequence[str], flag_values: flags.FlagValues,
                  doc: str) -> list[str] | None:
  """The start of a command with its own flag set (predict, export).

  Prints `doc` and the flags' help and returns None for --help; otherwise
  parses `argv` into `flag_values` (one line and exit 2 on a bad flag),
  leaves the shared flags (--log_level) at their defaults, sets up the
  quiet console, and returns the remaining arguments (program name first).
  """
  if any(arg in ("-h", "--help", "--helpshort", "--helpfull")
         for arg in argv[1:]):
    print(f"{doc}\n{flag_values.get_help(include_special_flags=False)}")
    return None
  rest = parse_flags(list(argv), flag_values)
  if not flags.FLAGS.is_parsed():  # The shared flags, at their defaults.
    flags.FLAGS.mark_as_parsed()
  setup_logging(None)  # A quiet console; handled errors are one line.
  return rest


# Libraries whose errors reach us as exceptions (and so as our one error
# line): their own log records go to the log file only, at every level.
_LOG_FILE_ONLY = (os.sep + "orbax" + os.sep, os.sep + "asyncio" + os.sep)


class _ConsoleFilter(logging.Filter):
  """This project's records from INFO; other libraries' from `level`."""

  def __init__(self, level: int):
    super().__init__()
    self.level = level

  def filter(self, record: logging.LogRecord) -> bool:
    if not getattr(record, "console", True):
      return False
    if (self.level > logging.INFO
        and any(part in record.pathname for part in _LOG_FILE_ONLY)):
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

  def handleError(self, record: logging.LogRecord) -> None:
    """A log file that cannot be written (a full disk) stops logging to it:
    the console still shows what matters, without a traceback per record."""
    del record
    self.pending, self.limit = [], 0
    if self.file is not None:
      try:
        self.file.close()
      except OSError:
        pass
    self.file = None
    self.path = os.devnull

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
  """Prints 'error: message' once on stderr and exits with `code`.

  What other libraries print while the process ends (a writer thread or an
  exit handler failing on the same full disk, say) goes nowhere: the error
  line is the last thing on the console, and the details are in the log.
  """
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.stdout.flush()
  if sys.stderr is sys.__stderr__:  # The process's own (not a capture).
    sys.stderr = open(os.devnull, "w")  # pylint: disable=consider-using-with
    root = logging.getLogger()
    for handler in list(root.handlers):  # Later records: the log file only.
      if isinstance(handler, logging.StreamHandler) and not isinstance(
          handler, logging.FileHandler) and getattr(
              handler, "stream", None) is sys.__stderr__:
        root.removeHandler(handler)
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
