"""Checkpoints written by this project read as `Loaded`: a run's workdir,
`<workdir>/checkpoints[/<step>[/state|best]]`, or a source pre-training
cache entry `<cache>/<key>[/variables]`."""

from __future__ import annotations

from collections.abc import Mapping
import os

import jax
import numpy as np

from l2tl_jax import loading
from l2tl_jax.weights.convert import count
from l2tl_jax.weights.convert import Loaded
from l2tl_jax.weights.convert import Mapped
from l2tl_jax.weights.convert import recognise
from l2tl_jax.weights.files import check_values
from l2tl_jax.weights.files import WeightsError


def resolve_checkpoint(path: str, item: str) -> tuple[str, str]:
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


def load_checkpoint(path: str, *, item: str) -> Loaded:
  """The checkpoint at `path` (see `weights.load`) as `Loaded`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory, kind = resolve_checkpoint(path, item)
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
  family, kwargs, description = recognise(params["encoder"])
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
            "num_params": count(params)})
