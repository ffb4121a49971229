"""Weight files read into {key: array}: the format from the content, every
tensor checked.

`read_flat(path)` reads a safetensors, npz or (where torch is importable)
PyTorch file; `sniff_format` tells what a file holds from its first bytes,
and a file whose extension names another format is refused with the
extension it should have. `check_values` refuses tensors that are not
finite floating-point numbers. Every problem is a `WeightsError` naming the
file.
"""

from __future__ import annotations

from collections.abc import Mapping
import errno
import os
from typing import Any
import zipfile

import jax.numpy as jnp
import numpy as np
from safetensors import numpy as st_numpy

TORCH_SUFFIXES = (".pth", ".pt", ".bin")


class WeightsError(ValueError):
  """A weights file cannot be read or does not hold a known architecture."""


def check_exists(path: str) -> None:
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


def read_flat(path: str) -> tuple[dict[str, np.ndarray], str]:
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
    return read_torch(path), "torch"
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


def read_torch(path: str) -> dict[str, np.ndarray]:
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


def strip_prefix(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops a 'module.' prefix (DataParallel) carried by every key."""
  if flat and all(k.startswith("module.") for k in flat):
    return {k.removeprefix("module."): v for k, v in flat.items()}
  return flat

