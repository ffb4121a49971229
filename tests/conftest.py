"""Shared test set-up: tests run on the CPU and never touch the network.

Compiled programs are cached across test sessions in .pytest_cache/jax
(ignored by git), so the edit loop `pytest -m "not slow"` recompiles only
what changed. L2TL_TEST_JAX_CACHE=0 turns the cache off.
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
