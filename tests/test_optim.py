"""Piecewise learning-rate schedules and the optimisers built on them."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from l2tl_jax import optim


def _rates(schedule, counts):
  return np.asarray([float(schedule(jnp.int32(c))) for c in counts])


def _updates(tx, grads):
  """Applies `tx` to one scalar parameter; returns the update of each step."""
  opt_state = tx.init(jnp.zeros(()))
  updates = []
  for g in grads:
    update, opt_state = tx.update(jnp.float32(g), opt_state)
    updates.append(float(update))
  return np.asarray(updates)


def test_boundary_step_keeps_the_previous_rate():
  # As tf.train.piecewise_constant: the update at step 800 (0-based) still
  # uses 0.005; step 801 is the first at 0.005 * 0.1.
  schedule = optim.piecewise_schedule(0.005, (800,), (0.1,))
  np.testing.assert_allclose(
      _rates(schedule, [0, 799, 800, 801, 5000]),
      [0.005, 0.005, 0.005, 0.0005, 0.0005], rtol=1e-6)


def test_several_boundaries_and_absolute_scales():
  # The reference's pre-training: 0.01, then 0.001 after 500, 0.0001 after
  # 1500 (0.01 is absolute: not 0.1 * 0.01).
  schedule = optim.piecewise_schedule(0.01, (500, 1500), (0.1, 0.01))
  np.testing.assert_allclose(
      _rates(schedule, [0, 500, 501, 1500, 1501, 10_000]),
      [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001], rtol=1e-6)
  # Absolute multipliers may go back up: 1.0 * 0.5 after step 2, not 0.1*0.5.
  schedule = optim.piecewise_schedule(1.0, (1, 2), (0.1, 0.5))
  np.testing.assert_allclose(
      _rates(schedule, [0, 1, 2, 3]), [1.0, 1.0, 0.1, 0.5], rtol=1e-6)


def test_no_boundaries_is_constant():
  schedule = optim.piecewise_schedule(0.3, (), ())
  np.testing.assert_allclose(_rates(schedule, [0, 1, 10**6]), [0.3] * 3,
                             rtol=1e-6)


@pytest.mark.parametrize(
    "boundaries, scales, match",
    [
        ((100, 200), (0.1,), "one scale per boundary"),
        ((100,), (0.1, 0.01), "one scale per boundary"),
        ((200, 100), (0.1, 0.01), "must increase"),
        ((100, 100), (0.1, 0.01), "must increase"),
        ((100,), (0.0,), "must be positive"),
        ((100, 200), (0.1, -0.01), "must be positive"),
    ],
)
def test_bad_schedules_raise(boundaries, scales, match):
  with pytest.raises(ValueError, match=match):
    optim.piecewise_schedule(0.1, boundaries, scales)


def test_momentum_sgd_is_nesterov_with_the_scheduled_rate():
  # lr 0.1, scaled by 0.1 after step 1; momentum 0.9; grads 1, 2, 1.
  # Nesterov: t_k = g_k + 0.9 t_{k-1}; update_k = -lr_k (g_k + 0.9 t_k).
  #   t = 1.0:   -0.1  * (1 + 0.9 * 1.0)  = -0.19
  #   t = 2.9:   -0.1  * (2 + 0.9 * 2.9)  = -0.461
  #   t = 3.61:  -0.01 * (1 + 0.9 * 3.61) = -0.04249
  tx = optim.momentum_sgd(0.1, boundaries=(1,), scales=(0.1,), momentum=0.9)
  chex.assert_trees_all_close(
      _updates(tx, [1.0, 2.0, 1.0]), np.array([-0.19, -0.461, -0.04249]),
      rtol=1e-5)


def test_momentum_sgd_without_nesterov_is_heavy_ball():
  # update_k = -lr_k t_k: -0.1 * 1, -0.1 * 2.9, -0.01 * 3.61.
  tx = optim.momentum_sgd(0.1, boundaries=(1,), scales=(0.1,), momentum=0.9,
                          nesterov=False)
  chex.assert_trees_all_close(
      _updates(tx, [1.0, 2.0, 1.0]), np.array([-0.1, -0.29, -0.0361]),
      rtol=1e-5)


def test_adam_takes_the_scheduled_rate():
  # A constant gradient g gives bias-corrected m = g and v = g^2, so each
  # update is -lr_k * g / (|g| + 1e-8) = -lr_k (up to float32 rounding of
  # the bias corrections, ~1e-5 relative).
  tx = optim.adam(0.01, boundaries=(1, 2), scales=(0.5, 0.1))
  chex.assert_trees_all_close(
      _updates(tx, [2.0, 2.0, 2.0, 2.0]),
      np.array([-0.01, -0.01, -0.005, -0.001]), rtol=1e-4)
