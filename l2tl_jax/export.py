"""A run's encoder and target head written for use outside this project.

`export_run(run, out_dir, fmt=...)` writes into `out_dir`:

  model.safetensors   (fmt='safetensors')
      torchvision-layout ResNets (config.model.encoder in
      TORCHVISION_ENCODERS): torchvision's own state dict. Keys, shapes and
      layouts are torchvision's (conv1.weight [O, I, H, W], bn1.weight,
      bn1.bias, bn1.running_mean, bn1.running_var, bn1.num_batches_tracked
      (int64, 0), layer1.0.conv1.weight, layer2.0.downsample.0.weight /
      .downsample.1.*, ...), the target head is `fc` (fc.weight [C, F],
      fc.bias [C]), so that
          model = torchvision.models.resnet50(num_classes=C)
          model.load_state_dict(safetensors.torch.load_file(path))
      gives this project's logits (on NCHW inputs). The key map is
      `l2tl_jax.families.torchvision`'s, inverted.
      Other encoders (LeNet, the CIFAR ResNet, MLP, BiT): the 'l2tl_jax'
      flat layout: this project's variables flattened with '/':
          params/encoder/<module>/<leaf>      e.g. params/encoder/conv1/kernel
          params/tgt_head/Dense_0/kernel      [F, C]
          params/tgt_head/Dense_0/bias        [C]
          batch_stats/encoder/<module>/mean|var   (encoders with batch norm)
      conv kernels HWIO, dense kernels [in, out], batch-norm scale/bias as
      params; inputs NHWC. `read_flat` (or `loading.unflatten`) gives back
      the trees.
      The header's metadata (all strings): 'format' ('pt' for torchvision,
      'l2tl_jax' otherwise), 'layout', 'encoder', 'encoder_kwargs' (JSON),
      'num_classes', 'params' ('final' / 'val_selected'), 'step', 'run'.
  orbax/              (fmt='orbax') orbax/variables: {'params': {'encoder',
      'tgt_head'}, 'model_state'} as the pre-training cache stores them,
      with checksums; `weights.load('<out_dir>/orbax')` reads it (and so does
      config.model.init_from).
  labels.json         the target class names in head order (a JSON list).
  preprocessing.json  what an image goes through before the model: size,
      channels, resize, and x = (pixels / 255 - mean) / std per channel.

Every file is written to a temporary name and renamed; an existing file is
replaced only with `overwrite=True`.
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import safetensors
from safetensors import numpy as st_numpy

from l2tl_jax import checkpointing
from l2tl_jax import loading
from l2tl_jax import saved_run
from l2tl_jax import weights
from l2tl_jax.data import preprocess
from l2tl_jax.families import torchvision

FORMATS = ("safetensors", "orbax")
# Encoders whose parameters are torchvision's ResNets.
TORCHVISION_ENCODERS = torchvision.ENCODERS
MODEL_FILES = {"safetensors": "model.safetensors", "orbax": "orbax"}
LABELS_FILE = "labels.json"
PREPROCESSING_FILE = "preprocessing.json"

# The per-channel mean and std of pixels / 255 that each normalisation uses
# ('bit': x / 127.5 - 1 = (x / 255 - 0.5) / 0.5).
_MEAN_STD = {
    "unit": (0.0, 1.0),
    "imagenet": (preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD),
    "bit": (0.5, 0.5),
}
_RESIZE_TEXT = {
    "auto": "images at most a quarter smaller than image_size are "
            "zero-padded (centred) to it; others: the shorter side resized "
            "to image_size (bilinear, antialiased), then the centre crop",
    "pad": "zero-padded (centred) to image_size",
    "resize": "the shorter side resized to image_size (bilinear, "
              "antialiased), then the centre crop",
    "resize_center_crop": "the shorter side resized to resize_size "
                          "(bilinear, antialiased; torchvision's Resize), "
                          "then the centre image_size crop (CenterCrop)",
    "squash": "both sides resized to image_size (bilinear, antialiased; "
              "the aspect ratio is not kept)",
}


class ExportError(weights.WeightsError):
  """An export would replace files, or its directory cannot hold it."""


def layout(encoder: str) -> str:
  """'torchvision' for the torchvision-layout ResNets, else 'l2tl_jax'."""
  return "torchvision" if encoder in TORCHVISION_ENCODERS else "l2tl_jax"


def _split(key: str) -> tuple[str, str]:
  collection, path = key.split(loading.SEP, 1)
  return collection, path


def torchvision_state_dict(params: Mapping[str, Any],
                           model_state: Mapping[str, Any]
                           ) -> dict[str, np.ndarray]:
  """torchvision's state dict of a torchvision-layout ResNet.

  Args:
    params: {'encoder': ..., 'tgt_head': {'Dense_0': {kernel, bias}}} of a
      `families.torchvision.ResNetV1` encoder (HWIO kernels, [F, C] head kernel).
    model_state: {'batch_stats': {'encoder': ...}}.

  Returns:
    {torchvision key: array}: conv weights OIHW, fc.weight [C, F], every
    batch norm's weight, bias, running_mean, running_var and
    num_batches_tracked (int64 scalar 0: unknown here, and unused by a
    BatchNorm with a momentum).
  """
  # The target head is torchvision's classifier, as a file's `fc` is read
  # into the source head.
  tree = {"params": {("src_head" if k == "tgt_head" else k): v
                     for k, v in params.items() if k in ("encoder",
                                                         "tgt_head")},
          **model_state}
  to_key = torchvision.to_key
  out = {}
  for name, value in loading.flatten(tree).items():
    key = to_key(*_split(name))
    value = np.asarray(value, np.float32)
    if value.ndim == 4:  # HWIO -> OIHW.
      value = np.transpose(value, (3, 2, 0, 1))
    elif key == "fc.weight":  # [in, out] -> [out, in].
      value = np.transpose(value)
    out[key] = np.ascontiguousarray(value)
    if key.endswith(".running_mean"):
      out[key.replace(".running_mean", ".num_batches_tracked")] = np.zeros(
          (), np.int64)
  return out


def flat_state_dict(params: Mapping[str, Any],
                    model_state: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The 'l2tl_jax' flat layout: {'params/encoder/conv1/kernel': ...}.

  Args:
    params: {'encoder': ..., 'tgt_head': ...}.
    model_state: the non-param collections ({} or {'batch_stats': ...}).

  Returns:
    {collection/path: float32 array} in this project's layouts.
  """
  tree = {"params": {k: v for k, v in params.items()
                     if k in ("encoder", "tgt_head")}, **model_state}
  return {k: np.ascontiguousarray(np.asarray(v, np.float32))
          for k, v in loading.flatten(tree).items()}


def read_flat(path: str) -> tuple[dict[str, Any], dict[str, Any],
                                  dict[str, str]]:
  """A 'l2tl_jax'-layout safetensors file as trees.

  Args:
    path: a model.safetensors written with the 'l2tl_jax' layout.

  Returns:
    (params, model_state, header metadata).

  Raises:
    WeightsError: the file is not of that layout.
  """
  with safetensors.safe_open(path, "np") as f:
    metadata = dict(f.metadata() or {})
  if metadata.get("layout") != "l2tl_jax":
    raise weights.WeightsError(
        f"{path}: not a file of the 'l2tl_jax' layout (its layout is "
        f"{metadata.get('layout')!r}); read torchvision-layout files with "
        "l2tl_jax.weights.load.")
  tree = loading.unflatten(st_numpy.load_file(path))
  params = tree.pop("params", {})
  return params, tree, metadata


def preprocessing(run: saved_run.Run, *, input_layout: str = "NHWC"
                  ) -> dict[str, Any]:
  """preprocessing.json: what an image goes through before the model.

  Args:
    run: the run.
    input_layout: how the exported model takes a batch: 'NHWC' (this
      project's models) or 'NCHW' (a torchvision model).

  Returns:
    A JSON-able dict: input_shape [H, W, C], input_layout, image_size,
    channels, resize_method and its description (resize), resize_size,
    normalization, mean and std (per channel, of pixels / 255) and the
    whole recipe in words.
  """
  h, w, c = run.image_shape
  mean, std = _MEAN_STD[run.normalization]
  mean = [float(m) for m in np.broadcast_to(mean, (c,))]
  std = [float(s) for s in np.broadcast_to(std, (c,))]
  spec = run.spec
  resize = ("none: the native size is kept" if spec.image_size is None
            else _RESIZE_TEXT[spec.resize_method])
  channels = ("RGB kept, gray repeated to 3 channels" if c == 3 else
              "gray kept, RGB to gray as round(0.2989 R + 0.5870 G + "
              "0.1140 B)")
  return {
      "input_shape": [h, w, c],
      "input_layout": input_layout,
      "image_size": spec.image_size,
      "channels": c,
      "resize_method": spec.resize_method,
      "resize": resize,
      "resize_size": spec.resize_size,
      "normalization": run.normalization,
      "mean": mean,
      "std": std,
      "recipe": (f"decode to uint8 (alpha dropped); {channels}; {resize}; "
                 "x = (pixels / 255 - mean) / std per channel, float32, "
                 f"batched {input_layout}"),
  }


def output_paths(out_dir: str, fmt: str) -> dict[str, str]:
  """The files an export of format `fmt` writes into `out_dir`."""
  if fmt not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}.")
  return {"model": os.path.join(out_dir, MODEL_FILES[fmt]),
          "labels": os.path.join(out_dir, LABELS_FILE),
          "preprocessing": os.path.join(out_dir, PREPROCESSING_FILE)}


def existing(out_dir: str, fmt: str) -> list[str]:
  """The files of an export of `fmt` that `out_dir` already holds."""
  return [p for p in output_paths(out_dir, fmt).values()
          if os.path.lexists(p)]


def write_bytes_atomic(path: str, content: bytes) -> None:
  """Writes bytes to a temporary file in the same directory, then renames."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(content)
    checkpointing.apply_umask(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _metadata(run: saved_run.Run, kind: str) -> dict[str, str]:
  return {
      "format": "pt" if kind == "torchvision" else "l2tl_jax",
      "layout": kind,
      "encoder": str(run.model_spec.encoder),
      "encoder_kwargs": json.dumps(run.model_spec.kwargs(),
                                   sort_keys=True),
      "num_classes": str(run.num_classes),
      "params": run.params,
      "step": str(run.step),
      "run": run.workdir,
  }


def _write_orbax(path: str, params: Any, model_state: Any) -> None:
  """orbax `path`/variables, built in a temporary directory and renamed."""
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-orbax-")
  checkpointing.apply_umask(tmp, directory=True)
  old = None
  try:
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(os.path.join(tmp, "variables"),
                 {"params": params, "model_state": model_state})
    checkpointing.write_checksums(tmp)
    if os.path.lexists(path):  # overwrite=True: replaced, then removed.
      old = tempfile.mkdtemp(dir=parent, prefix=".tmp-old-")
      os.replace(path, os.path.join(old, "previous"))
    os.replace(tmp, path)
  finally:
    for leftover in (tmp, old):
      if leftover is not None and os.path.exists(leftover):
        shutil.rmtree(leftover)


def export_run(run: saved_run.Run, out_dir: str, *, fmt: str = "safetensors",
               overwrite: bool = False) -> dict[str, str]:
  """Writes the run's encoder, target head, labels and preprocessing.

  Args:
    run: the run (`saved_run.load_run`, with the params to export).
    out_dir: the directory (created if missing).
    fmt: 'safetensors' or 'orbax' (module docstring).
    overwrite: replace files an earlier export left.

  Returns:
    {'model', 'labels', 'preprocessing'} -> the paths written.

  Raises:
    ExportError: a file exists (without `overwrite`), or `out_dir` is a
      file; nothing is written then.
  """
  paths = output_paths(out_dir, fmt)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ExportError(f"{out_dir} is a file; give a directory for the "
                      "export.")
  found = existing(out_dir, fmt)
  if found and not overwrite:
    raise ExportError(
        f"{', '.join(found)} already exist(s); pass --overwrite to replace "
        "them, or choose another --output.")
  params = run.variables["params"]
  model_state = {k: v for k, v in run.variables.items() if k != "params"}
  kind = layout(run.model_spec.encoder)
  if fmt == "orbax":
    _write_orbax(paths["model"], jax.tree.map(np.asarray, params),
                 jax.tree.map(np.asarray, model_state))
  else:
    tensors = (torchvision_state_dict(params, model_state)
               if kind == "torchvision"
               else flat_state_dict(params, model_state))
    write_bytes_atomic(paths["model"],
                       st_numpy.save(tensors, metadata=_metadata(run, kind)))
  checkpointing.write_json_atomic(paths["labels"], list(run.class_names))
  checkpointing.write_json_atomic(paths["preprocessing"], preprocessing(
      run, input_layout=("NCHW" if fmt == "safetensors"
                         and kind == "torchvision" else "NHWC")))
  return paths
