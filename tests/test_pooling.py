"""pooling.max_pool: flax's max pool in value and in every derivative."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2tl_jax import pooling


def _flax_pool(x, window):
  return nn.max_pool(x, window, strides=window)


def _tied(shape, seed=0):
  """Small integers: most windows hold several equal maxima."""
  rs = np.random.RandomState(seed)
  return jnp.asarray(rs.randint(-2, 3, shape).astype(np.float32))


def test_ties_send_the_gradient_to_the_first_maximum_row_major():
  x = jnp.array([[1., 1., 0., 2.],
                 [1., 1., 2., 2.],
                 [3., 0., 0., 0.],
                 [3., 3., 0., 0.]]).reshape(1, 4, 4, 1)
  w = jnp.array([1., 2., 3., 4.]).reshape(1, 2, 2, 1)
  grad = jax.grad(lambda x: jnp.sum(pooling.max_pool(x) * w))(x)
  want = np.array([[1., 0., 0., 2.],
                   [0., 0., 0., 0.],
                   [3., 0., 4., 0.],
                   [0., 0., 0., 0.]])
  np.testing.assert_array_equal(grad[0, :, :, 0], want)
  np.testing.assert_array_equal(pooling.max_pool(x)[0, :, :, 0],
                                [[1., 2.], [3., 0.]])


@pytest.mark.parametrize("shape,window", [
    ((2, 8, 8, 3), (2, 2)),
    ((3, 7, 9, 5), (2, 2)),  # Odd sizes: the last row/column is dropped.
    ((2, 9, 7, 2), (3, 3)),
    ((2, 6, 7, 2), (2, 3)),
])
def test_value_and_gradient_equal_flax_exactly(shape, window):
  x = _tied(shape)
  y, vjp = jax.vjp(lambda x: pooling.max_pool(x, window), x)
  y_ref, vjp_ref = jax.vjp(lambda x: _flax_pool(x, window), x)
  chex.assert_trees_all_equal(y, y_ref)
  g = jnp.asarray(np.random.RandomState(1).randn(*y.shape).astype(np.float32))
  chex.assert_trees_all_equal(jax.jit(vjp)(g), jax.jit(vjp_ref)(g))


def test_forward_mode_second_order_and_vmap_equal_flax():
  x = _tied((2, 6, 6, 3), seed=2)
  t = jnp.asarray(np.random.RandomState(3).randn(*x.shape).astype(np.float32))

  def loss(pool, x):
    return jnp.sum(jnp.sin(pool(x, (2, 2))) ** 2)

  ours = lambda x: loss(pooling.max_pool, x)
  ref = lambda x: loss(_flax_pool, x)
  chex.assert_trees_all_close(jax.jvp(ours, (x,), (t,)),
                              jax.jvp(ref, (x,), (t,)), rtol=1e-6)
  # Reverse over reverse (the meta-gradient differentiates a gradient).
  hvp = lambda f: jax.grad(lambda x: jnp.vdot(jax.grad(f)(x), t))(x)
  chex.assert_trees_all_close(hvp(ours), hvp(ref), rtol=1e-6, atol=1e-6)
  batched = jnp.stack([x, -x])  # [S, B, H, W, C]: per-sample inputs.
  chex.assert_trees_all_equal(
      jax.vmap(jax.grad(ours))(batched), jax.vmap(jax.grad(ref))(batched))


def test_bad_shapes_are_refused():
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    pooling.max_pool(jnp.zeros((4, 4, 1)))
  with pytest.raises(ValueError, match="positive"):
    pooling.max_pool(jnp.zeros((1, 4, 4, 1)), (0, 2))
