"""What the launchers share: known errors become one message and an exit code.

  2           a user error: bad data or settings, a workdir holding another
              config, weights that do not fit, a diverged run
  1           some runs of a comparison or study failed (each is listed)
  128 + sig   a run stopped on a signal after saving its checkpoint
"""

from __future__ import annotations

from collections.abc import Callable
import sys
from typing import Any, NoReturn

from experiments import runner
from l2tl_jax import data
from l2tl_jax import loading
from l2tl_jax import train

USER_ERRORS = (data.DataError, train.ConfigMismatchError,
               train.NonFiniteError, loading.MergeError)


def fail(message: str, code: int) -> NoReturn:
  """Prints 'error: message' once on stderr and exits with `code`."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def run_or_exit(fn: Callable[..., Any], *args, **kwargs) -> Any:
  """`fn(*args, **kwargs)`, with the known errors turned into exit codes."""
  try:
    return fn(*args, **kwargs)
  except runner.RunInterruptedError as e:
    fail(str(e), 128 + (e.signal or 0))
  except runner.RunFailedError as e:
    fail(str(e), 1)
  except USER_ERRORS as e:
    fail(str(e), 2)
