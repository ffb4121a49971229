"""Max pooling whose gradient XLA:CPU runs fast.

`flax.linen.max_pool` differentiates through XLA's select-and-scatter, which
XLA:CPU runs as a variadic reduce-window carrying four index arrays followed
by a scatter: on a 2-core CPU the backward of LeNet's first pool (batch 128,
32x32x32) took ~45 ms, more than all the convolutions of the step together.
`max_pool` computes the same values and the same derivatives (a window's
derivative goes to its first maximum in row-major window order, as
select-and-scatter with `>=` does) from elementwise ops that XLA fuses.
Its rule is a JVP that JAX transposes, so forward mode, reverse mode, higher
orders and vmap all work.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _reference_pool(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  """XLA's reduce-window max; VALID padding, strides = window."""
  dims = (1, *window, 1)
  return lax.reduce_window(x, -jnp.inf, lax.max, dims, dims, "VALID")


def _windows(x: jax.Array, window: tuple[int, int],
             out_shape: tuple[int, ...]) -> jax.Array:
  """[B, H, W, C] -> [B, Ho, kh, Wo, kw, C] (rows/columns past Ho*kh dropped)."""
  (kh, kw), (b, ho, wo, c) = window, out_shape
  return x[:, : ho * kh, : wo * kw, :].reshape(b, ho, kh, wo, kw, c)


def _first_max(x: jax.Array, y: jax.Array,
               window: tuple[int, int]) -> jax.Array:
  """Bool [B, Ho, kh, Wo, kw, C]: each window's first element equal to y."""
  kh, kw = window
  xw = _windows(x, window, y.shape)
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for i in range(kh):
    cols = []
    for j in range(kw):
      hit = xw[:, :, i, :, j, :] == y
      cols.append(hit & ~taken)
      taken = taken | hit
    rows.append(jnp.stack(cols, axis=3))  # [B, Ho, Wo, kw, C]
  return jnp.stack(rows, axis=2)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _pool(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  return _reference_pool(x, window)


@_pool.defjvp
def _pool_jvp(window, primals, tangents):
  (x,), (dx,) = primals, tangents
  y = _reference_pool(x, window)
  mask = _first_max(x, y, window)
  # One term per window is non-zero, so the sum is exact.
  dy = jnp.sum(jnp.where(mask, _windows(dx, window, y.shape), 0), axis=(2, 4))
  return y, dy


def max_pool(x: jax.Array, window: tuple[int, int] = (2, 2)) -> jax.Array:
  """Non-overlapping max pooling (strides = window, VALID padding).

  Equal to `flax.linen.max_pool(x, window, strides=window)` in value and in
  every derivative, exactly: both pick elements and neither rounds (ties: the
  first maximum of a window in row-major order gets the derivative).

  Args:
    x: [B, H, W, C] activations.
    window: (kh, kw), also the strides; rows and columns past the last full
      window are dropped (their derivative is zero).

  Returns:
    [B, H // kh, W // kw, C].

  Raises:
    ValueError: x is not [B, H, W, C], or a window size is not positive.
  """
  window = tuple(int(w) for w in window)
  if x.ndim != 4 or len(window) != 2:
    raise ValueError(
        f"max_pool takes [B, H, W, C] inputs and a (kh, kw) window, got "
        f"shape {x.shape} and window {window}.")
  if min(window) < 1:
    raise ValueError(f"window sizes must be positive, got {window}.")
  return _pool(x, window)
