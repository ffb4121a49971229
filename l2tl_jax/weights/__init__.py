"""Pretrained weight files read into this project's parameter trees.

`load(path)` reads

* a torchvision / timm ResNet state dict (`.safetensors`; `.pth`/`.pt`/`.bin`
  only where torch is importable; `.npz` with the same key names),
* a BiT ResNet v2 `.npz` (google-research/big_transfer key names),
* a checkpoint written by this project: a run's `<workdir>`,
  `<workdir>/checkpoints[/<step>[/state]]` (the TrainState), or a source
  pre-training cache entry `<cache>/<key>[/variables]`,

and returns `Loaded` with

  params       {'encoder': ..., 'src_head': {'Dense_0': {kernel, bias}}?}
  model_state  {'batch_stats': {'encoder': ...}} (torchvision) or {} (BiT)

in this project's layout (HWIO conv kernels, [in, out] dense kernels, BN
scale/bias params and mean/var batch statistics), ready for
`loading.merge_variables(..., parts=('encoder', 'src_head'))`, plus the
registered encoder (`family`, `encoder_kwargs`) that these parameters fit.
Every problem with a file (unknown, missing or misshapen keys, a truncated
file, another architecture) is reported at once, naming the file. The format
is read from the content (`sniff_format`) and must agree with the extension;
every loaded tensor must be floating point and finite (`check_values`).
The family rules (key maps, structure, detection) live with each family's
architecture in `l2tl_jax.families`; here: `files` (reading formats),
`convert` (key maps applied, shapes checked), `checkpoints` (this project's
own).
"""

from __future__ import annotations

import os

import numpy as np

from l2tl_jax import families
from l2tl_jax.data import preprocess
from l2tl_jax.families import torchvision
from l2tl_jax.weights import checkpoints
from l2tl_jax.weights.convert import expected_shapes
from l2tl_jax.weights.convert import Loaded
from l2tl_jax.weights.convert import Mapped
from l2tl_jax.weights import convert
from l2tl_jax.weights import files
from l2tl_jax.weights.files import check_values
from l2tl_jax.weights.files import sniff_format
from l2tl_jax.weights.files import TORCH_SUFFIXES
from l2tl_jax.weights.files import WeightsError

# The one ImageNet mean / std (data.preprocess), under the names read here.
IMAGENET_MEAN = preprocess.IMAGENET_MEAN
IMAGENET_STD = preprocess.IMAGENET_STD
# The torchvision key of one of this project's ResNet leaves.
torchvision_key = torchvision.to_key
_tv_to_key = torchvision.to_key  # Kept for tests that name it.


def load(path: str, *, item: str = "state") -> Loaded:
  """Reads a weights file or checkpoint into this project's layout.

  Args:
    path: a `.safetensors`, `.pth`/`.pt`/`.bin`, `.npz` file, or a
      directory written by this project (see the module docstring).
    item: for a run's checkpoint, 'state' (the TrainState: latest params) or
      'best' (the validation-selected params).

  Returns:
    The `Loaded` parameters.

  Raises:
    WeightsError: the file is missing (or a broken link, or a symlink loop),
      unreadable, truncated, of another format than its extension says, or
      not a supported architecture; its keys do not fit one (every unknown,
      missing and misshapen key named at once); or a tensor is not floating
      point or holds NaN / inf values.
  """
  files.check_exists(path)
  if os.path.isdir(path):
    return checkpoints.load_checkpoint(path, item=item)
  flat, fmt = files.read_flat(path)
  flat = files.strip_prefix(flat)
  for family in families.FAMILIES:
    if family.detect(flat):
      return convert.convert(flat, path, fmt, family)
  if convert.is_ours(flat):
    return convert.convert_ours(flat, path, fmt)
  keys = sorted(flat)
  raise WeightsError(
      f"{path}: neither "
      + " nor ".join(family.file_keys for family in families.FAMILIES)
      + "; "
      f"it has {len(keys)} arrays, e.g. {', '.join(keys[:8])}.")


def normalise(images: np.ndarray, family: str | None) -> np.ndarray:
  """uint8 RGB images [B, H, W, 3] scaled as the family was trained.

  Args:
    images: [B, H, W, 3] in 0..255.
    family: a `Loaded.family`; its family's normalisation (BiT: [-1, 1]);
      any other name (or None) gets ImageNet mean/std of [0, 1] values.

  Returns:
    float32 [B, H, W, 3].
  """
  found = families.family_of(family)
  method = "imagenet" if found is None else found.normalization
  return preprocess.normalize(np.asarray(images), method)


__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "Loaded", "Mapped", "TORCH_SUFFIXES",
    "WeightsError", "check_values", "expected_shapes", "load", "normalise",
    "sniff_format", "torchvision_key",
]
