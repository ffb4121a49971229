"""Step timing shared by experiments/bench.py and experiments/study.py."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


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


def compiled_flops(compiled: Any) -> float:
  """XLA's FLOP count of one call of a compiled program (NaN if unknown).

  Args:
    compiled: a `jax.stages.Compiled` (`jax.jit(f).lower(...).compile()`).
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older jax: one dict per device.
    analysis = analysis[0] if analysis else None
  return float((analysis or {}).get("flops", float("nan")))


def matmul_gflops(*, size: int = 2048, calls: int = 3, repeats: int = 5,
                  dtype: Any = jnp.float32) -> float:
  """Achieved GFLOP/s of a jitted [size, size] @ [size, size] matmul.

  The reference peak of the default device in `dtype`: best of `repeats`
  measurements of `calls` back-to-back products each (2 * size^3 FLOPs per
  product).
  """
  rng_a, rng_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(rng_a, (size, size), dtype)
  b = jax.random.normal(rng_b, (size, size), dtype)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      out = matmul(a, b)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / calls)
  return 2.0 * size**3 / best / 1e9
