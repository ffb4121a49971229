"""The torchvision / timm ResNet family: architecture, key map, detection,
preprocessing.

ResNets v1.5 ('resnet18', 'resnet34', 'resnet50', and 'resnet_v1' for other
depths): batch norm, stride on the 3x3 convolution of a bottleneck,
projection shortcut (1x1 conv + BN) where the shape changes. Padding is
explicit and symmetric, as in PyTorch, so converted weights give the same
outputs. Submodule names follow torchvision's so that file keys map onto
them mechanically:

  torchvision  conv1, bn1, layer1.0.conv1, layer1.0.downsample.{0,1}
  ours         conv1, bn1, layer1_0/conv1, layer1_0/downsample_{conv,bn}

Parameters are float32; `dtype` is the activations' and matmuls' dtype
(e.g. bfloat16 for mixed precision). Features come out as float32.

Preprocessing: ImageNet mean/std normalisation ('imagenet') and, for
evaluation, Resize(256) then CenterCrop(224) ('resize_center_crop'), as
torchvision's and timm's ResNets were trained.
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

# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu") (jax's
# "normal" is untruncated).
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

BLOCK_KINDS = ("basic", "bottleneck")
EXPANSION = {"basic": 1, "bottleneck": 4}


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


@encoders.register_encoder("resnet_v1", batch_norm=True)
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


@encoders.register_encoder("resnet18", batch_norm=True)
class ResNet18(ResNetV1):
  """torchvision resnet18: basic blocks (2, 2, 2, 2); 512 features."""

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"


@encoders.register_encoder("resnet34", batch_norm=True)
class ResNet34(ResNetV1):
  """torchvision resnet34: basic blocks (3, 4, 6, 3); 512 features."""

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "basic"


@encoders.register_encoder("resnet50", batch_norm=True)
class ResNet50(ResNetV1):
  """torchvision resnet50 (v1.5): bottlenecks (3, 4, 6, 3); 2048 features."""

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"


# The registered encoders of this family.
ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet_v1")
# Names of the family besides its encoders (data.preprocessing_for_family).
ALIASES = ("torchvision", "timm")
_STANDARD = {((2, 2, 2, 2), "basic"): "resnet18",
             ((3, 4, 6, 3), "basic"): "resnet34",
             ((3, 4, 6, 3), "bottleneck"): "resnet50"}


# ------------------------------------------------------------------ key map

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"),
       "running_var": ("batch_stats", "var")}
_BN_INV = {v: k for k, v in _BN.items()}
_TV_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.(.+)")
_OUR_BLOCK = re.compile(r"layer(\d+)_(\d+)/(.+)")


def _module(name: str, leaf: str) -> tuple[str, str] | None:
  """(collection, 'module/leaf') for a conv / bn module `name`."""
  if re.fullmatch(r"conv\d", name) and leaf == "weight":
    return "params", f"{name}/kernel"
  if re.fullmatch(r"downsample\.0", name) and leaf == "weight":
    return "params", "downsample_conv/kernel"
  bn = re.fullmatch(r"bn\d|downsample\.1", name)
  if bn and leaf in _BN:
    collection, ours = _BN[leaf]
    module = "downsample_bn" if name == "downsample.1" else name
    return collection, f"{module}/{ours}"
  return None


def to_path(key: str) -> tuple[str, str] | None:
  """(collection, path here) of a torchvision state-dict key; None: unknown."""
  if key in ("fc.weight", "fc.bias"):
    leaf = "kernel" if key == "fc.weight" else "bias"
    return "params", f"src_head/Dense_0/{leaf}"
  block = _TV_BLOCK.fullmatch(key)
  prefix = "encoder/"
  if block:
    prefix += f"layer{block[1]}_{block[2]}/"
    key = block[3]
  if "." not in key:
    return None
  name, leaf = key.rsplit(".", 1)
  if not block and name not in ("conv1", "bn1"):
    return None
  mapped = _module(name, leaf)
  return None if mapped is None else (mapped[0], prefix + mapped[1])


def to_key(collection: str, path: str) -> str:
  """The torchvision state-dict key of one of this project's ResNet leaves.

  ('params', 'encoder/layer1_0/downsample_bn/scale') ->
  'layer1.0.downsample.1.weight'; ('batch_stats', 'encoder/bn1/mean') ->
  'bn1.running_mean'; ('params', 'src_head/Dense_0/kernel') -> 'fc.weight'.
  The inverse of the key map files are read with.
  """
  if path.startswith("src_head/Dense_0/"):
    return "fc.weight" if path.endswith("kernel") else "fc.bias"
  path = path.removeprefix("encoder/")
  prefix = ""
  block = _OUR_BLOCK.fullmatch(path)
  if block:
    prefix, path = f"layer{block[1]}.{block[2]}.", block[3]
  module, leaf = path.split("/")
  module = {"downsample_conv": "downsample.0",
            "downsample_bn": "downsample.1"}.get(module, module)
  if leaf == "kernel":
    return f"{prefix}{module}.weight"
  return f"{prefix}{module}.{_BN_INV[(collection, leaf)]}"


def convert(key: str, value: np.ndarray) -> np.ndarray:
  """A file's array in this project's layout (HWIO convs, [in, out] fc)."""
  if value.ndim == 4:  # Conv OIHW -> HWIO.
    return np.ascontiguousarray(np.transpose(value, (2, 3, 1, 0)))
  if key == "fc.weight":  # Linear [out, in] -> [in, out].
    return np.ascontiguousarray(np.transpose(value))
  return value


def structure(flat: base.Flat
              ) -> tuple[str, dict[str, Any], str, list[str]]:
  """(encoder, encoder_kwargs, description, problems) from the keys."""
  problems = []
  blocks: dict[int, set[int]] = {}
  for key in flat:
    block = _TV_BLOCK.fullmatch(key)
    if block:
      blocks.setdefault(int(block[1]), set()).add(int(block[2]))
  stages = sorted(blocks)
  if stages != [1, 2, 3, 4]:
    problems.append(f"a torchvision ResNet has layer1..layer4; found "
                    f"{['layer%d' % s for s in stages] or 'none'}")
  stage_sizes = tuple(max(blocks.get(s, {-1})) + 1 for s in range(1, 5))
  bottleneck = any(re.fullmatch(r"layer\d+\.\d+\.conv3\.weight", k)
                   for k in flat)
  kind = "bottleneck" if bottleneck else "basic"
  width = int(flat["conv1.weight"].shape[0]) if "conv1.weight" in flat else 64
  family = _STANDARD.get((stage_sizes, kind))
  if family and width == 64:
    kwargs = {}
  else:
    family = "resnet_v1"
    kwargs = {"stage_sizes": stage_sizes, "block": kind, "width": width}
  description = (f"torchvision/timm ResNet v1.5, {kind} blocks "
                 f"{stage_sizes}, width {width}")
  return family, kwargs, description, problems


def head(flat: base.Flat) -> int:
  """Classes of the file's `fc` (0: none)."""
  weight = flat.get("fc.weight")
  return 0 if weight is None else int(weight.shape[0])




# ---------------------------------------------------------------- detection


def detect(flat: base.Flat) -> bool:
  """Whether a file's keys are a torchvision / timm ResNet's."""
  return "conv1.weight" in flat or any(_TV_BLOCK.fullmatch(k) for k in flat)


def recognise(encoder: Mapping[str, Any]) -> base.Recognised:
  """A checkpoint of this project's `ResNetV1` encoders, by module names."""
  names = set(encoder)
  if not ("conv1" in names
          and any(re.fullmatch(r"layer\d+_\d+", n) for n in names)):
    return None
  blocks: dict[int, int] = {}
  for n in names:
    m = re.fullmatch(r"layer(\d+)_(\d+)", n)
    if m:
      blocks[int(m[1])] = max(blocks.get(int(m[1]), 0), int(m[2]) + 1)
  sizes = tuple(blocks[s] for s in sorted(blocks))
  kind = "bottleneck" if "conv3" in encoder["layer1_0"] else "basic"
  width = int(np.shape(encoder["conv1"]["kernel"])[-1])
  standard = _STANDARD.get((sizes, kind))
  if standard and width == 64:
    return standard, {}, f"{standard}"
  return ("resnet_v1", {"stage_sizes": sizes, "block": kind, "width": width},
          f"ResNet v1.5, {kind} blocks {sizes}, width {width}")


def matches(name: str) -> bool:
  """Whether a family or encoder name is of this family."""
  return name in ALIASES or name in ENCODERS


FAMILY = base.WeightFamily(
    name="torchvision", encoders=ENCODERS, names=ALIASES + ENCODERS,
    matches=matches,
    normalization="imagenet", eval_resize="resize_center_crop",
    file_keys="a torchvision/timm ResNet state dict (keys 'conv1.weight', "
              "'layer1.0.conv1.weight', ...)",
    detect=detect, to_path=to_path, to_key=to_key, convert=convert,
    ignored=lambda key: key.endswith("num_batches_tracked"),
    structure=structure, head=head, recognise=recognise)
