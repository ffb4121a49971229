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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import errno
import os
import re
from typing import Any
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import numpy as st_numpy

from l2tl_jax import loading
from l2tl_jax import models

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_SEP = loading.SEP


class WeightsError(ValueError):
  """A weights file cannot be read or does not hold a known architecture."""


@dataclasses.dataclass(frozen=True)
class Mapped:
  """One array of the file and where it went.

  Attributes:
    file_key: its name in the file ('layer1.0.conv1.weight').
    path: collection and path in this project
      ('params/encoder/layer1_0/conv1/kernel').
    file_shape: its shape in the file.
    shape: its shape here (after transposes).
  """

  file_key: str
  path: str
  file_shape: tuple[int, ...]
  shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Loaded:
  """Parameters read from a weights file.

  Attributes:
    family: the registered encoder these parameters fit ('resnet18',
      'resnet34', 'resnet50', 'resnet_v1', 'bit_r50x1', 'bit_resnet', ...),
      or None for a checkpoint of an encoder not recognised here.
    encoder_kwargs: the encoder arguments that make it fit ({} for the
      standard architectures; width / stage_sizes / block otherwise).
    params: {'encoder': ..., 'src_head': ...?, 'tgt_head': ...?} of numpy
      arrays ('src_head' when the file has a classifier; 'tgt_head' only in
      this project's checkpoints).
    model_state: {'batch_stats': {'encoder': ...}} or {}.
    source_head_classes: classes of the file's classifier (0: none).
    info: 'path', 'format' ('safetensors', 'torch', 'npz', 'orbax'),
      'description', 'mapping' (list of `Mapped`), 'ignored' (file keys
      dropped on purpose, e.g. 'num_batches_tracked'), 'num_params'.
  """

  family: str | None
  encoder_kwargs: dict[str, Any]
  params: dict[str, Any]
  model_state: dict[str, Any]
  source_head_classes: int
  info: dict[str, Any]


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
  _check_exists(path)
  if os.path.isdir(path):
    return _load_checkpoint(path, item=item)
  flat, fmt = _read_flat(path)
  flat = _strip_prefix(flat)
  if _is_bit(flat):
    return _convert(flat, path, fmt, _BIT)
  if _is_torchvision(flat):
    return _convert(flat, path, fmt, _TORCHVISION)
  if _is_ours(flat):
    return _convert_ours(flat, path, fmt)
  keys = sorted(flat)
  raise WeightsError(
      f"{path}: neither a torchvision/timm ResNet state dict (keys "
      "'conv1.weight', 'layer1.0.conv1.weight', ...) nor a BiT ResNet v2 "
      "npz (keys 'resnet/root_block/standardized_conv2d/kernel', ...); "
      f"it has {len(keys)} arrays, e.g. {', '.join(keys[:8])}.")


# ------------------------------------------------------------------ reading


def _check_exists(path: str) -> None:
  """Raises WeightsError unless `path` leads to a file or directory."""
  try:
    os.stat(path)
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise WeightsError(
          f"{path}: symlink loop (the link, or a folder on its path, leads "
          "back to itself and never to a file); point the link at the "
          "weights file, or give the file's own path.") from e
    if os.path.islink(path):
      raise WeightsError(
          f"{path}: broken symlink to {os.readlink(path)!r}, which does not "
          "exist; point the link at the weights file.") from e
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
      raise WeightsError(f"{path}: no such file or directory.") from e
    raise WeightsError(f"{path}: cannot be read: {e.strerror or e}.") from e


# Formats named by `sniff_format`: what the file is, the format read for it
# ('safetensors', 'npz', 'torch'; None: not read here) and its extension.
_CONTENT = {
    "safetensors": ("a safetensors file", "safetensors", ".safetensors"),
    "npz": ("an npz file (a zip of .npy arrays)", "npz", ".npz"),
    "torch": ("a PyTorch file (torch.save's zip)", "torch", ".pth"),
    "pickle": ("a pickle file (an older torch.save)", "torch", ".pth"),
    "zip": ("a zip archive (an npz or PyTorch file?) that cannot be opened "
            "(truncated?)", None, None),
    "archive": ("a zip archive of neither .npy arrays nor a PyTorch state "
                "dict", None, None),
    "npy": ("a single NumPy array (.npy), not a file of named arrays", None,
            None),
    "hdf5": ("an HDF5 file (Keras .h5?), which is not read here", None, None),
}
_SAFETENSORS_MAX_HEADER = 100_000_000  # The safetensors format's own limit.


def sniff_format(path: str) -> str | None:
  """What a file holds, from its first bytes (and a zip's member names).

  Args:
    path: a file.

  Returns:
    'safetensors' (8-byte little-endian header length, then '{'), 'npz' (a
    zip of .npy members), 'torch' (a zip holding data.pkl), 'pickle' (an
    older torch.save), 'zip' (a zip that does not open: truncated),
    'archive' (a zip of other files), 'npy', 'hdf5', or None (none of these).

  Raises:
    OSError: the file cannot be read.
  """
  with open(path, "rb") as f:
    head = f.read(16)
  if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
    try:
      with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    except (zipfile.BadZipFile, EOFError, ValueError, OSError):
      return "zip"
    if any(os.path.basename(n) == "data.pkl" for n in names):
      return "torch"
    return "npz" if all(n.endswith(".npy") for n in names) else "archive"
  if (len(head) > 8 and head[8:9] == b"{"
      and 2 <= int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER):
    return "safetensors"
  if head.startswith(b"\x93NUMPY"):
    return "npy"
  if head.startswith(b"\x89HDF\r\n\x1a\n"):
    return "hdf5"
  if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
    return "pickle"
  return None


def _suffix_format(path: str) -> str | None:
  lower = path.lower()
  if lower.endswith(".safetensors"):
    return "safetensors"
  if lower.endswith(".npz"):
    return "npz"
  if lower.endswith(TORCH_SUFFIXES):
    return "torch"
  return None


def _read_flat(path: str) -> tuple[dict[str, np.ndarray], str]:
  """{key: array} of a safetensors / torch / npz file, and its format.

  The content decides: a file whose extension names another format is
  refused with the extension it should have (an npz reader never sees a
  file that is not a zip, so no reader falls back to unpickling).
  """
  try:
    size = os.path.getsize(path)
    content = sniff_format(path)
  except OSError as e:
    raise WeightsError(f"{path}: cannot be read: {e.strerror or e}.") from e
  fmt = _suffix_format(path)
  suffix = os.path.splitext(path)[1]
  if size == 0:
    raise WeightsError(f"{path}: empty file (0 bytes); the download or copy "
                       "did not finish: fetch the file again.")
  if content is not None:
    what, reads_as, rename = _CONTENT[content]
    if reads_as is None and not (content == "zip" and fmt in ("npz", "torch")):
      raise WeightsError(
          f"{path}: this file is {what}; expected a .safetensors, .npz or "
          f"{'/'.join(TORCH_SUFFIXES)} weights file.")
    if reads_as is not None and reads_as != fmt:
      named = f"named {suffix}" if suffix else "without an extension"
      raise WeightsError(
          f"{path}: this file is {what} {named}: rename it to {rename}.")
  if fmt == "safetensors":
    try:
      return dict(st_numpy.load_file(path)), "safetensors"
    except Exception as e:  # SafetensorsError, OSError, ...
      raise WeightsError(f"{path}: unreadable safetensors file "
                         f"(truncated or corrupt?): {e}") from e
  if fmt == "torch":
    return _read_torch(path), "torch"
  if fmt == "npz":
    if content not in ("npz", "zip"):
      raise WeightsError(
          f"{path}: unreadable npz file (truncated or corrupt?): an npz file "
          "is a zip archive, and this one does not start like one.")
    try:
      with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}, "npz"
    except Exception as e:  # BadZipFile, EOFError, ValueError, ...
      raise WeightsError(f"{path}: unreadable npz file (truncated or "
                         f"corrupt?): {e}") from e
  raise WeightsError(
      f"{path}: unknown weights format; expected .safetensors, .npz, "
      f"{'/'.join(TORCH_SUFFIXES)} or a checkpoint directory of this project.")


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise WeightsError(
        f"{path}: reading PyTorch files needs torch, which is not installed "
        "(and is not a dependency of l2tl_jax). Convert the file once, "
        "where torch is installed, to safetensors:\n"
        "  python -c \"import torch, safetensors.torch as st; "
        f"sd = torch.load('{path}', map_location='cpu', weights_only=True); "
        "sd = sd.get('state_dict', sd.get('model', sd)); "
        "st.save_file({k: v.contiguous() for k, v in sd.items()}, "
        f"'{os.path.splitext(path)[0]}.safetensors')\"\n"
        "and load the .safetensors file.") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise WeightsError(f"{path}: unreadable PyTorch file (truncated or "
                       f"corrupt?): {e}") from e
  for wrapper in ("state_dict", "model", "model_state_dict"):
    if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
      obj = obj[wrapper]
  if not isinstance(obj, Mapping):
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state "
                       "dict.")
  out = {}
  for key, value in obj.items():
    if not hasattr(value, "detach"):
      continue
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
      value = value.float()
    out[key] = value.numpy()
  return out


# ------------------------------------------------------- key rules, per family


@dataclasses.dataclass(frozen=True)
class _Family:
  """How one family's file keys map to this project's paths."""

  name: str
  to_path: Callable[[str], tuple[str, str] | None]  # key -> (coll., path)
  to_key: Callable[[str, str], str]  # (collection, path) -> key
  convert: Callable[[str, np.ndarray], np.ndarray]  # (key, array) -> ours
  ignored: Callable[[str], bool]
  structure: Callable[[dict[str, np.ndarray]],
                      tuple[str, dict[str, Any], str, list[str]]]
  head: Callable[[dict[str, np.ndarray]], int]


# torchvision / timm -----------------------------------------------------------

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"),
       "running_var": ("batch_stats", "var")}
_BN_INV = {v: k for k, v in _BN.items()}
_TV_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.(.+)")
_OUR_BLOCK = re.compile(r"layer(\d+)_(\d+)/(.+)")


def _tv_module(name: str, leaf: str) -> tuple[str, str] | None:
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


def _tv_to_path(key: str) -> tuple[str, str] | None:
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
  mapped = _tv_module(name, leaf)
  return None if mapped is None else (mapped[0], prefix + mapped[1])


def torchvision_key(collection: str, path: str) -> str:
  """The torchvision state-dict key of one of this project's ResNet leaves.

  ('params', 'encoder/layer1_0/downsample_bn/scale') ->
  'layer1.0.downsample.1.weight'; ('batch_stats', 'encoder/bn1/mean') ->
  'bn1.running_mean'; ('params', 'src_head/Dense_0/kernel') -> 'fc.weight'.
  The inverse of the key map `load` reads torchvision files with.
  """
  return _tv_to_key(collection, path)


def _tv_to_key(collection: str, path: str) -> str:
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


def _tv_convert(key: str, value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:  # Conv OIHW -> HWIO.
    return np.ascontiguousarray(np.transpose(value, (2, 3, 1, 0)))
  if key == "fc.weight":  # Linear [out, in] -> [in, out].
    return np.ascontiguousarray(np.transpose(value))
  return value


def _tv_structure(flat):
  """(family, encoder_kwargs, description, problems) from the keys."""
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
  standard = {((2, 2, 2, 2), "basic"): "resnet18",
              ((3, 4, 6, 3), "basic"): "resnet34",
              ((3, 4, 6, 3), "bottleneck"): "resnet50"}
  family = standard.get((stage_sizes, kind))
  if family and width == 64:
    kwargs = {}
  else:
    family = "resnet_v1"
    kwargs = {"stage_sizes": stage_sizes, "block": kind, "width": width}
  description = (f"torchvision/timm ResNet v1.5, {kind} blocks "
                 f"{stage_sizes}, width {width}")
  return family, kwargs, description, problems


def _tv_head(flat):
  weight = flat.get("fc.weight")
  return 0 if weight is None else int(weight.shape[0])


_TORCHVISION = _Family(
    name="torchvision", to_path=_tv_to_path, to_key=_tv_to_key,
    convert=_tv_convert,
    ignored=lambda key: key.endswith("num_batches_tracked"),
    structure=_tv_structure, head=_tv_head)


def _is_torchvision(flat) -> bool:
  return "conv1.weight" in flat or any(_TV_BLOCK.fullmatch(k) for k in flat)


# BiT -------------------------------------------------------------------------

_BIT_UNIT = re.compile(r"resnet/block(\d+)/unit(\d+)/(.+)")
_BIT_CONV = "standardized_conv2d/kernel"
_BIT_PARTS = {"a": "1", "b": "2", "c": "3"}
_GN = {"gamma": "scale", "beta": "bias"}


def _bit_to_path(key: str) -> tuple[str, str] | None:
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


def _bit_to_key(collection: str, path: str) -> str:
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


def _bit_convert(key: str, value: np.ndarray) -> np.ndarray:
  if key == "resnet/head/conv2d/kernel":  # [1, 1, F, C] -> [F, C].
    return value.reshape(value.shape[-2:]) if value.ndim == 4 else value
  if "group_norm" in key:  # Some exports keep [1, 1, 1, C].
    return value.reshape(value.shape[-1:])
  return value


def _bit_structure(flat):
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


def _bit_head(flat):
  bias = flat.get("resnet/head/conv2d/bias")
  return 0 if bias is None else int(bias.shape[-1])


_BIT = _Family(
    name="bit", to_path=_bit_to_path, to_key=_bit_to_key,
    convert=_bit_convert, ignored=lambda key: False,
    structure=_bit_structure, head=_bit_head)


def _is_bit(flat) -> bool:
  return any(k.startswith("resnet/") for k in flat)


# ---------------------------------------------------------------- conversion

_SHOWN = 5  # Tensor names shown per kind of bad value.


def _names(items: list[str]) -> str:
  shown = ", ".join(items[:_SHOWN])
  more = len(items) - _SHOWN
  return shown + (f" and {more} more" if more > 0 else "")


def check_values(arrays: Mapping[str, Any], source: str) -> None:
  """Refuses tensors that are not floating point or not finite.

  Every tensor that will be loaded is checked once, before it reaches a
  model: a NaN in a batch-norm variance would otherwise make every loss NaN
  (and the run train at chance), and integer weights would be cast silently.

  Args:
    arrays: {name in the file (or path in a checkpoint): array}, the tensors
      to load (entries dropped on purpose, like 'num_batches_tracked',
      excluded).
    source: the file, for the message.

  Raises:
    WeightsError: naming the first few tensors of each kind and their count.
  """
  not_float, not_finite = [], []
  for name in sorted(arrays):
    value = np.asarray(arrays[name])
    if not jnp.issubdtype(value.dtype, jnp.floating):
      not_float.append(f"{name} ({value.dtype})")
      continue
    finite = np.isfinite(value)
    if not finite.all():
      nan = int(np.count_nonzero(np.isnan(value)))
      inf = value.size - int(np.count_nonzero(finite)) - nan
      counts = [f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "inf"))
                if n]
      not_finite.append(f"{name} ({', '.join(counts)} of {value.size})")
  problems = []
  if not_float:
    problems.append(f"{len(not_float)} tensor(s) not floating point: "
                    f"{_names(not_float)}")
  if not_finite:
    problems.append(f"{len(not_finite)} tensor(s) holding NaN or inf "
                    f"values: {_names(not_finite)}")
  if problems:
    raise WeightsError(
        f"{source}: " + "; ".join(problems) + ". The file is damaged or was "
        "exported wrongly (weights are finite floating-point numbers): "
        "download or export it again.")



def _strip_prefix(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops a 'module.' prefix (DataParallel) carried by every key."""
  if flat and all(k.startswith("module.") for k in flat):
    return {k.removeprefix("module."): v for k, v in flat.items()}
  return flat


def expected_shapes(family: str, encoder_kwargs: Mapping[str, Any],
                    num_src_classes: int) -> dict[str, tuple[int, ...]]:
  """{'params/encoder/...': shape, 'batch_stats/encoder/...': shape} of a model.

  Args:
    family: registered encoder name.
    encoder_kwargs: its arguments.
    num_src_classes: source head classes (0: no head).

  Returns:
    Shapes by collection-prefixed path, computed without allocating
    (`jax.eval_shape`).
  """
  model = models.make_model(
      family, num_src_classes=num_src_classes,
      num_tgt_classes=0 if num_src_classes else 1,
      encoder_kwargs=dict(encoder_kwargs))
  params, model_state = jax.eval_shape(
      lambda: models.init_variables(model, jax.random.key(0), (64, 64, 3)))
  params = {k: v for k, v in params.items() if k != "tgt_head"}
  return {f"{c}{_SEP}{k}": tuple(v.shape)
          for c, tree in {"params": params, **model_state}.items()
          for k, v in loading.flatten(tree).items()}


def _convert(flat: dict[str, np.ndarray], path: str, fmt: str,
             family: _Family) -> Loaded:
  name, kwargs, description, problems = family.structure(flat)
  classes = family.head(flat)
  unknown, ignored, mapping = [], [], []
  trees: dict[str, dict[str, Any]] = {"params": {}, "batch_stats": {}}
  for key in sorted(flat):
    if family.ignored(key):
      ignored.append(key)
      continue
    target = family.to_path(key)
    if target is None:
      unknown.append(key)
      continue
    collection, our_path = target
    value = np.asarray(flat[key])
    converted = family.convert(key, value)
    trees[collection][our_path] = converted
    mapping.append(Mapped(key, f"{collection}{_SEP}{our_path}",
                          tuple(value.shape), tuple(converted.shape)))
  if not problems:
    try:
      want = expected_shapes(name, kwargs, classes)
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f"its shapes make no valid {name} ({kwargs}): {e}")
      want = None
    if want is not None:
      got = {m.path: m.shape for m in mapping}
      missing = sorted(family.to_key(*p.split(_SEP, 1))
                       for p in set(want) - set(got))
      mismatched = sorted(
          f"{m.file_key}: {m.file_shape}"
          + (f" (here {m.shape})" if m.shape != m.file_shape else "")
          + f", expected {want[m.path]}"
          + (" here" if m.shape != m.file_shape else "")
          for m in mapping if m.path in want and m.shape != want[m.path])
      unknown += sorted(m.file_key for m in mapping if m.path not in want)
      for title, names in (("missing", missing),
                           ("of another shape", mismatched)):
        if names:
          problems.append(f"{len(names)} {title}: {', '.join(names)}")
  if unknown:
    problems.insert(0, f"{len(unknown)} unknown: {', '.join(sorted(unknown))}")
  if problems:
    raise WeightsError(
        f"{path}: does not fit a {description}: " + "; ".join(problems) + ".")
  check_values({m.file_key: flat[m.file_key] for m in mapping}, path)
  params = loading.unflatten(trees["params"])
  model_state = ({"batch_stats": loading.unflatten(trees["batch_stats"])}
                 if trees["batch_stats"] else {})
  return Loaded(
      family=name, encoder_kwargs=kwargs, params=params,
      model_state=model_state, source_head_classes=classes,
      info={"path": path, "format": fmt, "description": description,
            "mapping": mapping, "ignored": ignored,
            "num_params": _count(params)})


def _count(tree) -> int:
  return sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(tree))


# ------------------------------------------------------- project checkpoints


def _resolve_checkpoint(path: str, item: str) -> tuple[str, str]:
  """(orbax item directory, kind) of a run / step / cache-entry directory."""
  path = os.path.abspath(path)
  checkpoints = os.path.join(path, "checkpoints")
  if os.path.isdir(checkpoints):
    path = checkpoints
  steps = [d for d in os.listdir(path) if d.isdigit()
           and os.path.isdir(os.path.join(path, d))]
  if steps:  # A Checkpointer directory: take the latest step.
    path = os.path.join(path, max(steps, key=int))
  if os.path.isdir(os.path.join(path, item)):
    return os.path.join(path, item), item
  if os.path.isdir(os.path.join(path, "variables")):
    return os.path.join(path, "variables"), "pretrain_cache"
  if os.path.basename(path) == "variables":
    return path, "pretrain_cache"
  if os.path.basename(path) in ("state", "best"):
    return path, os.path.basename(path)
  raise WeightsError(
      f"{path}: not a checkpoint of this project: expected a run's workdir, "
      "<workdir>/checkpoints[/<step>[/state|best]], or a pre-training cache "
      "entry <cache>/<key>[/variables].")


def _load_checkpoint(path: str, *, item: str) -> Loaded:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory, kind = _resolve_checkpoint(path, item)
  try:
    with ocp.StandardCheckpointer() as ckptr:
      restored = ckptr.restore(directory)
  except Exception as e:  # pylint: disable=broad-except
    raise WeightsError(f"{directory}: unreadable orbax checkpoint: "
                       f"{e}") from e
  restored = jax.tree.map(np.asarray, restored)
  if kind == "best":  # (params, model_state), saved as a list.
    if not (isinstance(restored, (list, tuple)) and len(restored) == 2):
      raise WeightsError(f"{directory}: expected (params, model_state).")
    params, model_state = restored
  else:
    if not (isinstance(restored, Mapping) and "params" in restored):
      found = list(restored) if isinstance(restored, Mapping) else type(
          restored).__name__
      raise WeightsError(f"{directory}: holds no 'params' (found {found}).")
    params = restored["params"]
    model_state = restored.get("model_state") or {}
  params, model_state = dict(params), dict(model_state)
  check_values(loading.flatten({"params": params, **model_state}), directory)
  if "encoder" not in params:
    raise WeightsError(f"{directory}: params hold no 'encoder' (found "
                       f"{sorted(params)}).")
  head = params.get("src_head", {}).get("Dense_0", {}).get("bias")
  family, kwargs, description = _our_structure(params["encoder"])
  mapping = [Mapped(k, k, tuple(np.shape(v)), tuple(np.shape(v)))
             for k, v in loading.flatten(
                 {"params": params, **model_state}).items()]
  return Loaded(
      family=family, encoder_kwargs=kwargs, params=params,
      model_state=model_state,
      source_head_classes=0 if head is None else int(head.shape[-1]),
      info={"path": directory, "format": "orbax",
            "description": f"l2tl_jax checkpoint ({kind}): {description}",
            "mapping": mapping, "ignored": [],
            "num_params": _count(params)})


def _our_structure(encoder: Mapping[str, Any]
                   ) -> tuple[str | None, dict[str, Any], str]:
  """Recognises this project's ImageNet ResNets by their module names."""
  names = set(encoder)
  if "conv1" in names and any(re.fullmatch(r"layer\d+_\d+", n) for n in names):
    blocks: dict[int, int] = {}
    for n in names:
      m = re.fullmatch(r"layer(\d+)_(\d+)", n)
      if m:
        blocks[int(m[1])] = max(blocks.get(int(m[1]), 0), int(m[2]) + 1)
    sizes = tuple(blocks[s] for s in sorted(blocks))
    kind = "bottleneck" if "conv3" in encoder["layer1_0"] else "basic"
    width = int(np.shape(encoder["conv1"]["kernel"])[-1])
    standard = {((2, 2, 2, 2), "basic"): "resnet18",
                ((3, 4, 6, 3), "basic"): "resnet34",
                ((3, 4, 6, 3), "bottleneck"): "resnet50"}.get((sizes, kind))
    if standard and width == 64:
      return standard, {}, f"{standard}"
    return ("resnet_v1", {"stage_sizes": sizes, "block": kind,
                          "width": width},
            f"ResNet v1.5, {kind} blocks {sizes}, width {width}")
  if "root_conv" in names:
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
  return None, {}, f"encoder with modules {sorted(names)[:6]}"


# ------------------------------------------------------------ input scaling

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision / timm, RGB in [0, 1].
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(images: np.ndarray, family: str | None) -> np.ndarray:
  """uint8 RGB images [B, H, W, 3] scaled as the family was trained.

  Args:
    images: [B, H, W, 3] in 0..255.
    family: a `Loaded.family`; 'bit*' scales to [-1, 1], every other family
      (torchvision / timm ResNets) to ImageNet mean/std of [0, 1] values.

  Returns:
    float32 [B, H, W, 3].
  """
  x = np.asarray(images, np.float32)
  if family is not None and family.startswith("bit"):
    return x / 127.5 - 1.0
  mean = np.asarray(IMAGENET_MEAN, np.float32)
  std = np.asarray(IMAGENET_STD, np.float32)
  return (x / 255.0 - mean) / std


# ---------------------------------------------- this project's flat layout

_OUR_COLLECTIONS = ("params", "batch_stats")


def _is_ours(flat) -> bool:
  """l2tl_jax.export's flat layout: '<collection>/encoder/...' keys."""
  return any(k.startswith(f"params{_SEP}encoder{_SEP}") for k in flat) and all(
      k.split(_SEP, 1)[0] in _OUR_COLLECTIONS for k in flat)


def _convert_ours(flat: dict[str, np.ndarray], path: str, fmt: str) -> Loaded:
  """A file of l2tl_jax.export's flat layout; its target head ('tgt_head')
  becomes the file's classifier ('src_head'), as a torchvision file's fc."""
  check_values(flat, path)
  tree = loading.unflatten(flat)
  params = tree.pop("params")
  if "tgt_head" in params:
    params["src_head"] = params.pop("tgt_head")
  family, kwargs, description = _our_structure(params["encoder"])
  head = params.get("src_head", {}).get("Dense_0", {}).get("bias")
  mapping = [Mapped(k, k.replace(f"{_SEP}tgt_head{_SEP}",
                                 f"{_SEP}src_head{_SEP}"),
                    tuple(np.shape(v)), tuple(np.shape(v)))
             for k, v in sorted(flat.items())]
  return Loaded(
      family=family, encoder_kwargs=kwargs, params=params, model_state=tree,
      source_head_classes=0 if head is None else int(head.shape[-1]),
      info={"path": path, "format": fmt,
            "description": f"l2tl_jax export (flat layout): {description}",
            "mapping": mapping, "ignored": [], "num_params": _count(params)})
