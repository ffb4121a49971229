"""ImageNet ResNets whose parameters map one-to-one onto published weights.

Two families, registered as encoders (see `l2tl_jax.models`):

* torchvision / timm ResNets v1.5 ('resnet18', 'resnet34', 'resnet50', and
  'resnet_v1' for other depths): batch norm, stride on the 3x3 convolution
  of a bottleneck, projection shortcut (1x1 conv + BN) where the shape
  changes.
* BiT ResNet v2 ('bit_r50x1', and 'bit_resnet' for other depths):
  pre-activation bottleneck units with GroupNorm and weight-standardised
  convolutions, as in google-research/big_transfer.

Padding is explicit and symmetric, as in the originals (PyTorch pads k//2 on
both sides; flax's 'SAME' pads asymmetrically for stride 2), so converted
weights give the same outputs. Submodule names follow the originals so that
`l2tl_jax.weights` maps file keys onto them mechanically:

  torchvision  conv1, bn1, layer1.0.conv1, layer1.0.downsample.{0,1}
  ours         conv1, bn1, layer1_0/conv1, layer1_0/downsample_{conv,bn}

  BiT          resnet/root_block/standardized_conv2d,
               resnet/block1/unit01/{a,b,c}/..., .../a/proj/..., group_norm
  ours         root_conv, block1_unit01/{gn1,conv1,...,conv3,conv_proj},
               norm_pre_head

Parameters are float32; `dtype` is the activations' and matmuls' dtype
(e.g. bfloat16 for mixed precision). Features come out as float32.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from l2tl_jax import models

# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu") (jax's
# "normal" is untruncated).
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

BLOCK_KINDS = ("basic", "bottleneck")
EXPANSION = {"basic": 1, "bottleneck": 4}


def _pad(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """PyTorch's symmetric padding for a k x k kernel (k odd)."""
  return ((k // 2, k // 2), (k // 2, k // 2))


class BasicBlock(nn.Module):
  """torchvision BasicBlock: 3x3 conv-BN-ReLU, 3x3 conv-BN, add, ReLU."""

  planes: int
  strides: int = 1
  zero_init_residual: bool = False
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             kernel_init=_conv_init)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=0.9,
        epsilon=1e-5, axis_name=self.bn_axis_name, dtype=self.dtype)
    y = conv(self.planes, (3, 3), self.strides, padding=_pad(3),
             name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.planes, (3, 3), padding=_pad(3), name="conv2")(y)
    y = norm(name="bn2",
             scale_init=(nn.initializers.zeros if self.zero_init_residual
                         else nn.initializers.ones))(y)
    if self.strides != 1 or x.shape[-1] != self.planes:
      x = conv(self.planes, (1, 1), self.strides, padding="VALID",
               name="downsample_conv")(x)
      x = norm(name="downsample_bn")(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """torchvision Bottleneck (v1.5): 1x1, 3x3 (strided), 1x1 (x4), add, ReLU."""

  planes: int
  strides: int = 1
  zero_init_residual: bool = False
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             kernel_init=_conv_init)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=0.9,
        epsilon=1e-5, axis_name=self.bn_axis_name, dtype=self.dtype)
    out = self.planes * EXPANSION["bottleneck"]
    y = conv(self.planes, (1, 1), padding="VALID", name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.planes, (3, 3), self.strides, padding=_pad(3),
             name="conv2")(y)
    y = nn.relu(norm(name="bn2")(y))
    y = conv(out, (1, 1), padding="VALID", name="conv3")(y)
    y = norm(name="bn3",
             scale_init=(nn.initializers.zeros if self.zero_init_residual
                         else nn.initializers.ones))(y)
    if self.strides != 1 or x.shape[-1] != out:
      x = conv(out, (1, 1), self.strides, padding="VALID",
               name="downsample_conv")(x)
      x = norm(name="downsample_bn")(x)
    return nn.relu(x + y)


@models.register_encoder("resnet_v1")
class ResNetV1(nn.Module):
  """torchvision's ImageNet ResNet (v1.5) without its classifier.

  Stem: 7x7/2 conv (pad 3), BN, ReLU, 3x3/2 max-pool (pad 1, -inf padding as
  PyTorch). Four stages of `stage_sizes` blocks, with `width * 2**i` planes
  and stride 2 on the first block of stages 2-4; global average pooling to
  [B, width * 8 * expansion] features (512 for ResNet-18/34, 2048 for 50).

  Attributes:
    stage_sizes: blocks per stage.
    block: 'basic' or 'bottleneck'.
    width: planes of the first stage (64 in torchvision; smaller for tests).
    zero_init_residual: initialise each block's last BN scale to zero (as
      torchvision's option of that name).
    bn_axis_name: pmap axis for global batch statistics (set by
      `models.make_model`).
    dtype: activations' dtype; params stay float32.
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  width: int = 64
  zero_init_residual: bool = False
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Maps images [B, H, W, 3] to features [B, 8 * width * expansion]."""
    if self.block not in BLOCK_KINDS:
      raise ValueError(f"block must be one of {BLOCK_KINDS}, "
                       f"got {self.block!r}")
    block_cls = BasicBlock if self.block == "basic" else Bottleneck
    x = jnp.asarray(x, self.dtype)
    x = nn.Conv(self.width, (7, 7), 2, padding=_pad(7), use_bias=False,
                dtype=self.dtype, kernel_init=_conv_init, name="conv1")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, axis_name=self.bn_axis_name,
                     dtype=self.dtype, name="bn1")(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))
    for i, size in enumerate(self.stage_sizes):
      for j in range(size):
        x = block_cls(
            planes=self.width * 2**i,
            strides=2 if i > 0 and j == 0 else 1,
            zero_init_residual=self.zero_init_residual,
            bn_axis_name=self.bn_axis_name,
            dtype=self.dtype,
            name=f"layer{i + 1}_{j}")(x, train=train)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


@models.register_encoder("resnet18")
class ResNet18(ResNetV1):
  """torchvision resnet18: basic blocks (2, 2, 2, 2); 512 features."""

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"


@models.register_encoder("resnet34")
class ResNet34(ResNetV1):
  """torchvision resnet34: basic blocks (3, 4, 6, 3); 512 features."""

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "basic"


@models.register_encoder("resnet50")
class ResNet50(ResNetV1):
  """torchvision resnet50 (v1.5): bottlenecks (3, 4, 6, 3); 2048 features."""

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"


# ----------------------------------------------------------------- BiT (v2)

WS_EPSILON = 1e-10  # BiT: (w - mean) / sqrt(var + 1e-10).
GN_EPSILON = 1e-5  # BiT's GroupNorm epsilon (TF2, JAX and PyTorch code).


def standardize_kernel(kernel: jax.Array) -> jax.Array:
  """Weight standardisation of an HWIO kernel over its H, W, I axes."""
  mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  var = jnp.mean(jnp.square(kernel - mean), axis=(0, 1, 2), keepdims=True)
  return (kernel - mean) / jnp.sqrt(var + WS_EPSILON)


class StdConv(nn.Conv):
  """`nn.Conv` whose kernel is weight-standardised before use.

  The stored parameter is the raw kernel (as in BiT's files); standardising
  happens in float32 before any cast to `dtype`.
  """

  def param(self, name, *args, **kwargs):
    value = super().param(name, *args, **kwargs)
    if name == "kernel":
      value = standardize_kernel(value)
    return value


class BiTUnit(nn.Module):
  """BiT pre-activation bottleneck unit (stride on the 3x3 convolution).

  GN-ReLU feeds both the 1x1 projection shortcut (when the shape changes)
  and the 1x1 -> 3x3 -> 1x1 branch, each later conv preceded by GN-ReLU.
  """

  features: int  # Bottleneck width; the unit outputs 4 * features.
  strides: int = 1
  num_groups: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(StdConv, use_bias=False, dtype=self.dtype,
                             padding="VALID")
    norm = functools.partial(nn.GroupNorm, num_groups=self.num_groups,
                             epsilon=GN_EPSILON, use_fast_variance=False,
                             dtype=self.dtype)
    out = 4 * self.features
    y = nn.relu(norm(name="gn1")(x))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out:
      shortcut = conv(out, (1, 1), self.strides, name="conv_proj")(y)
    y = conv(self.features, (1, 1), name="conv1")(y)
    y = nn.relu(norm(name="gn2")(y))
    y = conv(self.features, (3, 3), self.strides, padding=_pad(3),
             name="conv2")(y)
    y = nn.relu(norm(name="gn3")(y))
    y = conv(out, (1, 1), name="conv3")(y)
    return shortcut + y


@models.register_encoder("bit_resnet")
class BiTResNet(nn.Module):
  """BiT ResNet v2 without its head, ending with GroupNorm, ReLU and pooling.

  Root: weight-standardised 7x7/2 conv (pad 3, no norm), zero padding 1 and
  a 3x3/2 VALID max-pool (BiT pads the pool input with zeros, not -inf).
  Stages of `stage_sizes` units with bottleneck width `width * 2**i`, stride
  2 on the first unit of stages 2-4. Features: [B, 32 * width].

  Attributes:
    stage_sizes: units per stage ((3, 4, 6, 3) for R50).
    width: root and first-stage width: 64 * BiT's width factor (R50x1: 64,
      R50x3: 192); smaller for tests, a multiple of `num_groups`.
    num_groups: GroupNorm groups (32 in BiT).
    dtype: activations' dtype; params stay float32.
  """

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  num_groups: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Maps images [B, H, W, 3] (in [-1, 1]) to features [B, 32 * width]."""
    del train  # No batch statistics, no dropout.
    if self.width % self.num_groups:
      raise ValueError(f"width {self.width} is not a multiple of num_groups "
                       f"{self.num_groups}.")
    x = jnp.asarray(x, self.dtype)
    x = StdConv(self.width, (7, 7), 2, padding=_pad(7), use_bias=False,
                dtype=self.dtype, name="root_conv")(x)
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    for i, size in enumerate(self.stage_sizes):
      for j in range(size):
        x = BiTUnit(
            features=self.width * 2**i,
            strides=2 if i > 0 and j == 0 else 1,
            num_groups=self.num_groups,
            dtype=self.dtype,
            name=f"block{i + 1}_unit{j + 1:02d}")(x)
    x = nn.GroupNorm(num_groups=self.num_groups, epsilon=GN_EPSILON,
                     use_fast_variance=False, dtype=self.dtype,
                     name="norm_pre_head")(x)
    x = nn.relu(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


@models.register_encoder("bit_r50x1")
class BiTR50x1(BiTResNet):
  """BiT-S/M-R50x1: units (3, 4, 6, 3), width 64; 2048 features."""

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
