"""Shared test set-up: tests run on the CPU and never touch the network.

Compiled programs are cached across test sessions in .pytest_cache/jax
(ignored by git), so the edit loop `pytest -m "not slow"` recompiles only
what changed. L2TL_TEST_JAX_CACHE=0 turns the cache off.

A run that deselects the slow tests (the fast tier, `-m "not slow"`)
compiles with jax_disable_most_optimizations, as flax's own tests do: its
programs run a few steps on tiny shapes, where XLA's optimisation passes
cost more than they save. The slow tier, and any run that keeps the slow
tests, compiles as runs do. L2TL_TEST_FAST_COMPILE=0 turns it off.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if os.environ.get("L2TL_TEST_JAX_CACHE", "1") != "0":
  os.environ.setdefault(
      "JAX_COMPILATION_CACHE_DIR",
      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   ".pytest_cache", "jax"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def _is_fast_tier(markexpr: str) -> bool:
  """Whether `-m markexpr` keeps the unmarked tests and leaves out slow ones."""
  if not markexpr:
    return False
  try:
    from _pytest.mark.expression import Expression  # pylint: disable=g-import-not-at-top
  except ImportError:
    return markexpr.split() == ["not", "slow"]
  expression = Expression.compile(markexpr)
  return (expression.evaluate(lambda name, **kwargs: False)
          and not expression.evaluate(lambda name, **kwargs: name == "slow"))


def pytest_configure(config):
  if (os.environ.get("L2TL_TEST_FAST_COMPILE", "1") != "0"
      and _is_fast_tier(config.getoption("markexpr", ""))):
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_disable_most_optimizations", True)
