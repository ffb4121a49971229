"""The BiT family (Big Transfer, ResNet v2): architecture, key map,
detection, preprocessing.

BiT ResNet v2 ('bit_r50x1', and 'bit_resnet' for other depths and widths):
pre-activation bottleneck units with GroupNorm and weight-standardised
convolutions, as in google-research/big_transfer. Padding is explicit and
symmetric, as in the originals. Module names map onto the npz files' keys:

  BiT   resnet/root_block/standardized_conv2d,
        resnet/block1/unit01/{a,b,c}/..., .../a/proj/..., group_norm
  ours  root_conv, block1_unit01/{gn1,conv1,...,conv3,conv_proj},
        norm_pre_head

Parameters are float32; `dtype` is the activations' and matmuls' dtype.
Features come out as float32. No batch statistics.

Preprocessing: pixels scaled to [-1, 1] ('bit') and, for evaluation, both
sides resized to the crop side ('resize', the aspect ratio not kept), as
BiT's own input pipeline does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from l2tl_jax import encoders
from l2tl_jax.families import base

_pad = base.symmetric_pad

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


@encoders.register_encoder("bit_resnet")
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


@encoders.register_encoder("bit_r50x1")
class BiTR50x1(BiTResNet):
  """BiT-S/M-R50x1: units (3, 4, 6, 3), width 64; 2048 features."""

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64


# The registered encoders of this family.
ENCODERS = ("bit_r50x1", "bit_resnet")


# ------------------------------------------------------------------ key map

_BIT_UNIT = re.compile(r"resnet/block(\d+)/unit(\d+)/(.+)")
_BIT_CONV = "standardized_conv2d/kernel"
_BIT_PARTS = {"a": "1", "b": "2", "c": "3"}
_GN = {"gamma": "scale", "beta": "bias"}


def to_path(key: str) -> tuple[str, str] | None:
  """(collection, path here) of a BiT npz key; None: unknown."""
  if key == f"resnet/root_block/{_BIT_CONV}":
    return "params", "encoder/root_conv/kernel"
  if key in ("resnet/group_norm/gamma", "resnet/group_norm/beta"):
    return "params", f"encoder/norm_pre_head/{_GN[key.rsplit('/', 1)[1]]}"
  if key in ("resnet/head/conv2d/kernel", "resnet/head/conv2d/bias"):
    return "params", f"src_head/Dense_0/{key.rsplit('/', 1)[1]}"
  unit = _BIT_UNIT.fullmatch(key)
  if not unit:
    return None
  prefix = f"encoder/block{int(unit[1])}_unit{int(unit[2]):02d}/"
  rest = unit[3]
  if rest == f"a/proj/{_BIT_CONV}":
    return "params", prefix + "conv_proj/kernel"
  part = re.fullmatch(r"([abc])/(.+)", rest)
  if not part:
    return None
  i = _BIT_PARTS[part[1]]
  if part[2] == _BIT_CONV:
    return "params", f"{prefix}conv{i}/kernel"
  norm = re.fullmatch(r"group_norm/(gamma|beta)", part[2])
  if norm:
    return "params", f"{prefix}gn{i}/{_GN[norm[1]]}"
  return None


def to_key(collection: str, path: str) -> str:
  """The BiT npz key of one of this project's leaves (inverse of to_path)."""
  del collection
  gn_inv = {v: k for k, v in _GN.items()}
  if path.startswith("src_head/Dense_0/"):
    return f"resnet/head/conv2d/{path.rsplit('/', 1)[1]}"
  path = path.removeprefix("encoder/")
  if path == "root_conv/kernel":
    return f"resnet/root_block/{_BIT_CONV}"
  if path.startswith("norm_pre_head/"):
    return f"resnet/group_norm/{gn_inv[path.rsplit('/', 1)[1]]}"
  unit, module, leaf = path.split("/")
  block, number = re.fullmatch(r"block(\d+)_unit(\d+)", unit).groups()
  prefix = f"resnet/block{block}/unit{number}/"
  if module == "conv_proj":
    return f"{prefix}a/proj/{_BIT_CONV}"
  part = {v: k for k, v in _BIT_PARTS.items()}[module[-1]]
  if module.startswith("conv"):
    return f"{prefix}{part}/{_BIT_CONV}"
  return f"{prefix}{part}/group_norm/{gn_inv[leaf]}"


def convert(key: str, value: np.ndarray) -> np.ndarray:
  """A file's array in this project's layout ([F, C] head kernel, [C] norms)."""
  if key == "resnet/head/conv2d/kernel":  # [1, 1, F, C] -> [F, C].
    return value.reshape(value.shape[-2:]) if value.ndim == 4 else value
  if "group_norm" in key:  # Some exports keep [1, 1, 1, C].
    return value.reshape(value.shape[-1:])
  return value


def structure(flat: base.Flat
              ) -> tuple[str, dict[str, Any], str, list[str]]:
  """(encoder, encoder_kwargs, description, problems) from the keys."""
  problems = []
  units: dict[int, set[int]] = {}
  for key in flat:
    unit = _BIT_UNIT.fullmatch(key)
    if unit:
      units.setdefault(int(unit[1]), set()).add(int(unit[2]))
  stages = sorted(units)
  if stages != [1, 2, 3, 4]:
    problems.append(f"a BiT ResNet has block1..block4; found "
                    f"{['block%d' % s for s in stages] or 'none'}")
  stage_sizes = tuple(max(units.get(s, {0})) for s in range(1, 5))
  root = flat.get(f"resnet/root_block/{_BIT_CONV}")
  width = int(root.shape[-1]) if root is not None else 64
  if stage_sizes == (3, 4, 6, 3) and width == 64:
    family, kwargs = "bit_r50x1", {}
  else:
    family = "bit_resnet"
    kwargs = {"stage_sizes": stage_sizes, "width": width}
  depth = 3 * sum(stage_sizes) + 2
  description = (f"BiT ResNet v2 (GroupNorm + weight standardisation), "
                 f"R{depth}x{width / 64:g}: units {stage_sizes}, "
                 f"width {width}")
  return family, kwargs, description, problems


def head(flat: base.Flat) -> int:
  """Classes of the file's head (0: none)."""
  bias = flat.get("resnet/head/conv2d/bias")
  return 0 if bias is None else int(bias.shape[-1])


# ---------------------------------------------------------------- detection


def detect(flat: base.Flat) -> bool:
  """Whether a file's keys are a BiT npz's."""
  return any(k.startswith("resnet/") for k in flat)


def recognise(encoder: Mapping[str, Any]) -> base.Recognised:
  """A checkpoint of this project's `BiTResNet` encoders, by module names."""
  names = set(encoder)
  if "root_conv" not in names:
    return None
  units: dict[int, int] = {}
  for n in names:
    m = re.fullmatch(r"block(\d+)_unit(\d+)", n)
    if m:
      units[int(m[1])] = max(units.get(int(m[1]), 0), int(m[2]))
  sizes = tuple(units[s] for s in sorted(units))
  width = int(np.shape(encoder["root_conv"]["kernel"])[-1])
  if sizes == (3, 4, 6, 3) and width == 64:
    return "bit_r50x1", {}, "bit_r50x1"
  return ("bit_resnet", {"stage_sizes": sizes, "width": width},
          f"BiT ResNet v2, units {sizes}, width {width}")


def matches(name: str) -> bool:
  """Whether a family or encoder name is of this family: 'bit' and every
  name starting with it ('bit_r50x1', 'bit_resnet', ...)."""
  return name.startswith("bit")


FAMILY = base.WeightFamily(
    name="bit", encoders=ENCODERS, names=("bit",) + ENCODERS,
    matches=matches,
    normalization="bit", eval_resize="resize",
    file_keys="a BiT ResNet v2 npz (keys "
              "'resnet/root_block/standardized_conv2d/kernel', ...)",
    detect=detect, to_path=to_path, to_key=to_key, convert=convert,
    ignored=lambda key: False, structure=structure, head=head,
    recognise=recognise)
