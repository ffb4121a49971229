"""The small encoders, trained from scratch here: LeNet, an MLP and a
CIFAR-style ResNet. No published weights; `config.data`'s defaults are their
preprocessing (pad or resize to 32, 'unit' scaling).

Each takes `dtype` (activations' and matmuls' dtype; params and features
stay float32); the ResNet, with batch statistics, takes `bn_axis_name`;
LeNet declares its choice of max pool (`fast_pool`). See
`l2tl_jax.encoders` for the contract.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from l2tl_jax import encoders
from l2tl_jax import pooling


@encoders.register_encoder("lenet", pool_choice=True)
class LeNet(nn.Module):
  """The reference's LeNet-like encoder.

  conv 5x5x32 same + ReLU, maxpool 2; conv 5x5x32 same + ReLU, maxpool 2;
  flatten; dense 512 ReLU; dense 128 ReLU. Glorot-uniform kernels, zero
  biases, no dropout (the reference's dropout calls are no-ops).

  Attributes:
    features: output features.
    hidden: width of the first dense layer.
    conv_features: channels of both convolutions.
    fast_pool: max pool through `pooling.max_pool`, whose backward is about
      20x faster on XLA:CPU (the batch-128 step about 2x). Its values and first derivatives equal flax's
      exactly; second-order derivatives (the meta-gradient estimator) agree
      only to float rounding, so it is off by default, keeping results
      identical to earlier runs.
    dtype: activations' dtype (None: the inputs'); params stay float32, and
      features are float32 when it is set.
  """

  features: int = 128
  hidden: int = 512
  conv_features: int = 32
  fast_pool: bool = False
  dtype: Any = None  # None: the inputs' dtype.

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Maps images [B, H, W, C] to features [B, features]."""
    del train  # No train-dependent layers.
    dense = functools.partial(
        nn.Dense, kernel_init=nn.initializers.glorot_uniform(),
        dtype=self.dtype,
    )
    conv = functools.partial(
        nn.Conv,
        kernel_size=(5, 5),
        padding="SAME",
        kernel_init=nn.initializers.glorot_uniform(),
        dtype=self.dtype,
    )
    pool = (functools.partial(pooling.max_pool, window=(2, 2))
            if self.fast_pool
            else functools.partial(nn.max_pool, window_shape=(2, 2),
                                   strides=(2, 2)))
    x = jnp.asarray(x, self.dtype)
    x = nn.relu(conv(self.conv_features, name="conv1")(x))
    x = pool(x)
    x = nn.relu(conv(self.conv_features, name="conv2")(x))
    x = pool(x)
    x = x.reshape((x.shape[0], -1))  # [B, H/4 * W/4 * conv_features]
    x = nn.relu(dense(self.hidden, name="fc1")(x))
    x = nn.relu(dense(self.features, name="fc2")(x))
    return x if self.dtype is None else x.astype(jnp.float32)


@encoders.register_encoder("mlp")
class MLP(nn.Module):
  """Flatten then ReLU dense layers: for small inputs and quick tests.

  Attributes:
    hidden: widths of the dense layers.
    dtype: activations' dtype (None: the inputs'); params stay float32, and
      features are float32 when it is set.
  """

  hidden: tuple[int, ...] = (64, 32)
  dtype: Any = None  # None: the inputs' dtype.

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Maps inputs [B, ...] to features [B, hidden[-1]]."""
    del train
    x = jnp.asarray(x, self.dtype).reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    return x if self.dtype is None else x.astype(jnp.float32)


class ResNetBlock(nn.Module):
  """Basic residual block (two 3x3 convolutions)."""

  filters: int
  strides: int = 1
  bn_axis_name: str | None = None
  dtype: Any = None  # None: the inputs' dtype.

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    norm = functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=0.9,
        axis_name=self.bn_axis_name,
        dtype=self.dtype,
    )
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    residual = x
    y = conv(self.filters, (3, 3), self.strides)(x)
    y = nn.relu(norm()(y))
    y = conv(self.filters, (3, 3))(y)
    y = norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = conv(self.filters, (1, 1), self.strides, name="proj")(
          residual)
      residual = norm(name="proj_norm")(residual)
    return nn.relu(residual + y)


@encoders.register_encoder("resnet", batch_norm=True)
class ResNet(nn.Module):
  """A small CIFAR-style ResNet with batch norm (ResNet-20 by default).

  Stage widths `widths`, `blocks_per_stage` basic blocks each, global average
  pooling to a [B, widths[-1]] feature. Under `jax.pmap`, set `bn_axis_name`
  to the pmap axis so batch statistics are global (as under a mesh).
  `dtype` is the activations' dtype; params and features stay float32.
  """

  widths: tuple[int, ...] = (16, 32, 64)
  blocks_per_stage: int = 3
  bn_axis_name: str | None = None
  dtype: Any = None  # None: the inputs' dtype.

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Maps images [B, H, W, C] to features [B, widths[-1]]."""
    x = jnp.asarray(x, self.dtype)
    x = nn.Conv(self.widths[0], (3, 3), use_bias=False, dtype=self.dtype,
                name="stem")(x)
    x = nn.relu(
        nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            axis_name=self.bn_axis_name,
            dtype=self.dtype,
        )(x)
    )
    for stage, filters in enumerate(self.widths):
      for block in range(self.blocks_per_stage):
        strides = 2 if stage > 0 and block == 0 else 1
        x = ResNetBlock(filters, strides, self.bn_axis_name, self.dtype)(
            x, train=train)
    return jnp.mean(x if self.dtype is None else x.astype(jnp.float32),
                    axis=(1, 2))


