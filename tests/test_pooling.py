"""pooling.max_pool: flax's max pool in value and in every derivative."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2tl_jax import pooling
from l2tl_jax import spec as spec_lib


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


def _target_stage(method_name, **overrides):
  from experiments.configs import tiny
  from l2tl_jax import build
  from l2tl_jax import models
  from l2tl_jax import parallel
  config = tiny.get_config()
  config.method = method_name
  config.update_from_flattened_dict(overrides)
  spec = spec_lib.from_config(config)
  method = spec.method
  shapes = build.Shapes((12, 12, 1), 3, 2)
  model = build.make_model(spec.model, heads=method.heads, shapes=shapes)
  params, state = models.init_variables(model, jax.random.key(0),
                                        shapes.image_shape)
  parts = build.target_stage(spec, model=model,
                             params=params, model_state=state,
                             rng=jax.random.key(1), par=parallel.Parallelism(),
                             class_weights=build.fixed_class_weights(
                                 method, shapes))
  rs = np.random.RandomState(0)
  batch = {k: {"image": rs.rand(n, 12, 12, 1).astype(np.float32),
               "label": rs.randint(0, c, n).astype(np.int32)}
           for k, n, c in (("src", 16, 3), ("tgt", 8, 2), ("val", 32, 2))}
  if not method.joint:
    batch = batch["tgt"]
  new_state, _ = parts.train_step(parts.state, batch)
  return parts.model.encoder.fast_pool, new_state


@pytest.mark.parametrize("method,overrides,fast", [
    ("finetune", {}, True),
    ("joint_uniform", {}, True),
    ("l2tl", {"l2tl.mode": "reference"}, True),  # REINFORCE: first order.
    ("l2tl", {"l2tl.mode": "meta_gradient"}, False),
    ("finetune", {"model.encoder_kwargs.fast_pool": False}, False),
])
def test_target_stage_takes_the_fast_pool_for_first_derivatives_only(
    method, overrides, fast):
  uses_fast, state = _target_stage(method, **overrides)
  assert uses_fast == fast
  if fast:  # The same step as flax's pool, to the last bit.
    _, flax_state = _target_stage(
        method, **overrides, **{"model.encoder_kwargs.fast_pool": False})
    chex.assert_trees_all_equal(state.params, flax_state.params)
