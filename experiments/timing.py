"""Step timing shared by experiments/bench.py and experiments/study.py."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax


def steps_per_second(step: Callable[..., Any], state: Any, batch: Any, *,
                     num_steps: int, repeats: int = 3) -> float:
  """Steps/s of `step(state, batch) -> (state, metrics)`, best of `repeats`.

  The first call (compilation) is not timed; each measurement runs
  `num_steps` steps and waits for the device.
  """
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  best = 0.0
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(num_steps):
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    best = max(best, num_steps / (time.perf_counter() - start))
  return best
