"""Optimisers and learning-rate schedules (optax), built from plain numbers."""

from __future__ import annotations

from collections.abc import Sequence

import optax


def piecewise_schedule(
    base_lr: float, boundaries: Sequence[int], scales: Sequence[float]
) -> optax.Schedule:
  """`base_lr * scales[i]` once the step count exceeds `boundaries[i]`.

  As the reference's `tf.train.piecewise_constant`: with boundary 800 the
  update at step 800 (0-based) still uses the previous rate and step 801 uses
  the new one. `scales` are absolute multipliers of `base_lr`, e.g.
  boundaries (500, 1500) with scales (0.1, 0.01).

  Args:
    base_lr: rate before the first boundary.
    boundaries: increasing step counts.
    scales: one absolute multiplier per boundary.

  Returns:
    An optax schedule.
  """
  boundaries, scales = list(boundaries), list(scales)
  if len(boundaries) != len(scales):
    raise ValueError(
        f"Need one scale per boundary, got boundaries={boundaries} and "
        f"scales={scales}."
    )
  if any(b1 >= b2 for b1, b2 in zip(boundaries, boundaries[1:])):
    raise ValueError(f"Boundaries must increase, got {boundaries}.")
  if any(s <= 0 for s in scales):
    raise ValueError(f"Scales must be positive, got {scales}.")
  # optax applies a scale at count >= boundary; the reference at step > b.
  relative, previous = {}, 1.0
  for boundary, scale in zip(boundaries, scales):
    relative[int(boundary) + 1] = scale / previous
    previous = scale
  return optax.piecewise_constant_schedule(base_lr, relative)


def momentum_sgd(
    base_lr: float,
    *,
    boundaries: Sequence[int] = (),
    scales: Sequence[float] = (),
    momentum: float = 0.9,
    nesterov: bool = True,
) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum: the reference's model optimiser."""
  return optax.sgd(
      piecewise_schedule(base_lr, boundaries, scales),
      momentum=momentum,
      nesterov=nesterov,
  )


def adam(
    base_lr: float,
    *,
    boundaries: Sequence[int] = (),
    scales: Sequence[float] = (),
) -> optax.GradientTransformation:
  """Adam with a piecewise-constant rate: the reference's policy optimiser."""
  return optax.adam(piecewise_schedule(base_lr, boundaries, scales))
