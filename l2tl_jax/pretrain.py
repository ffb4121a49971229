"""Source pre-training, cached by everything that determines its result.

The cache key hashes the source task (dataset, split, classes, the chosen
examples' fingerprint, preprocessing), the encoder config and the
pre-training config. A second run with the same key reuses the checkpoint.
Entries are written to a temporary directory and renamed when complete.
In a run of several processes all of them pre-train together (each on its
rows of every batch) and process 0 alone writes the entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from l2tl_jax import build
from l2tl_jax import checkpointing
from l2tl_jax import data
from l2tl_jax import distributed
from l2tl_jax import models
from l2tl_jax import parallel
from l2tl_jax import spec as spec_lib
from l2tl_jax import steps


def cache_key(spec: spec_lib.RunSpec, task: data.TransferTask) -> str:
  """Hex key of the source pre-training `spec` and `task` ask for."""
  spec = {
      "src_train": task.src_train.summary(),
      "src_class_names": list(task.src_class_names),
      "image_shape": list(task.image_shape),
      # What shapes the pre-trained weights; not the target-stage loading
      # settings (config.model.dont_load).
      "model": {"encoder": spec.model.encoder,
                "encoder_kwargs": spec.model.kwargs(),
                # Only when reduced: float32 keys stay as they were.
                **({"dtype": spec.model.dtype}
                   if spec.model.dtype != "float32" else {})},
      "pretrain": spec.pretrain.as_dict(),
  }
  blob = json.dumps(spec, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def _train(spec, task, par: parallel.Parallelism) -> tuple[Any, Any, dict]:
  pcfg = spec.pretrain
  parts = build.source_stage(spec, build.Shapes.of(task), par=par)
  state, step = parts.state, parts.train_step
  batches = data.train_iterator(
      task.src_train, batch_size=pcfg.batch_size, seed=pcfg.seed,
      num_threads=spec.data.read_threads, **par.data_shard)
  start = time.perf_counter()
  metrics = None
  show = spec.host.progress_bar and distributed.is_primary()
  bar = tqdm.tqdm(total=pcfg.steps, desc="pre-training", unit="step",
                  disable=not show, dynamic_ncols=True, leave=False)
  with bar:
    for i in range(pcfg.steps):
      state, metrics = step(state, par.put_batch(next(batches)))
      bar.update(1)
      if (i + 1) % 500 == 0 or i + 1 == pcfg.steps:
        host = par.metrics_to_host(metrics)
        if host["train/nonfinite"]:
          raise FloatingPointError(
              f"Source pre-training hit a non-finite loss at step {i + 1}; "
              "lower config.pretrain.lr or check the source data."
          )
        bar.set_postfix(loss=f"{float(host['train/src_loss']):.4f}")
        logging.info("pretrain step %d/%d: loss %.4f", i + 1, pcfg.steps,
                     float(host["train/src_loss"]), extra={"console": False})
  batches.close()
  state = jax.device_get(par.unreplicate(state))
  info = {
      "steps": int(pcfg.steps),
      "train_time_s": time.perf_counter() - start,
      "final_batch_loss": float(par.metrics_to_host(metrics)["train/src_loss"])
      if metrics is not None else None,
  }
  if task.src_test is not None:
    result = steps.evaluate(
        parts.eval_step,
        *par.put_replicated((state.params, state.model_state)),
        (par.put_batch(b) for b in data.eval_batches(
            task.src_test, batch_size=par.round_up(spec.eval.batch_size),
            **par.data_shard)),
    )
    info["source_test_accuracy"] = result["accuracy"]
    info["source_test_examples"] = int(result["count"])
  return state.params, state.model_state, info


def pretrained(
    spec: spec_lib.RunSpec,
    task: data.TransferTask,
    cache_dir: str,
    par: parallel.Parallelism,
) -> tuple[Any, Any, dict]:
  """Source-pre-trained (params, model_state, info), from cache or trained.

  Args:
    spec: the run (uses .model, .pretrain, .eval, .data, .host).
    task: the transfer task.
    cache_dir: directory of cache entries (one subdirectory per key).
    par: parallelism for training and evaluation.

  Returns:
    params {'encoder', 'src_head'}, model_state, and an info dict with the
    key, whether it was cached, and the source test accuracy when the task
    has a source test split.

  An entry is verified against its checksums before it is used; a damaged
  one is moved aside and rebuilt. Processes sharing the cache take turns
  per entry (a file lock), so none reads or deletes another's entry. The
  processes of one multi-process run share the lock of their process 0 and
  agree on whether to pre-train.
  """
  key = cache_key(spec, task)
  cache_dir = os.path.abspath(cache_dir)
  os.makedirs(cache_dir, exist_ok=True)
  entry = os.path.join(cache_dir, key)
  # One writer per entry: a second process waits, then reads the entry.
  with checkpointing.exclusive_lock(
      os.path.join(cache_dir, f".{key}.lock"),
      what=f"pre-training cache entry {entry}", wait=True):
    if distributed.is_primary():
      for name in os.listdir(cache_dir):  # Leftovers of a dead writer.
        if name.startswith(f".tmp-{key}-"):
          shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)
    loaded = _load(spec, task, entry)
    # Every process must take the same branch (pre-training is collective).
    found = distributed.gather(loaded is not None)
    if found.min() != found.max():
      raise checkpointing.DamagedError(
          f"Processes {np.flatnonzero(found).tolist()} of the run found the "
          f"pre-training cache entry {entry}, the others did not: every "
          "process must see the same cache directory "
          "(config.pretrain_cache_dir on a shared filesystem).")
    if loaded is None:
      logging.info("Pre-training on %s: %d steps at batch %d (cached in %s "
                   "for later runs).", task.config["source"],
                   spec.pretrain.steps, spec.pretrain.batch_size, entry)
      _write(entry, key, spec, task, par)
      loaded = _load(spec, task, entry)
    else:
      logging.info("Pre-training: cached (%s).", entry,
                   extra={"console": False})
  return loaded


def _write(entry: str, key: str, spec, task, par) -> None:
  """Trains and writes the cache entry atomically (a renamed directory).

  Every process trains; process 0 writes, and the others wait until the
  entry is in place.
  """
  params, model_state, info = _train(spec, task, par)
  if distributed.is_primary():
    _write_entry(entry, key, spec, task, params, model_state, info)
  distributed.sync(f"pre-training cache entry {entry}")


def _write_entry(entry, key, spec, task, params, model_state, info) -> None:
  info = {**info, "key": key, "encoder": spec.model.encoder,
          "source": task.src_train.summary()}
  tmp = tempfile.mkdtemp(dir=os.path.dirname(entry), prefix=f".tmp-{key}-")
  checkpointing.apply_umask(tmp, directory=True)
  try:
    with _checkpointer() as ckptr:
      ckptr.save(os.path.join(tmp, "variables"),
                 {"params": params, "model_state": model_state})
    checkpointing.write_json_atomic(os.path.join(tmp, "info.json"), info)
    checkpointing.write_checksums(tmp)
    if os.path.exists(entry):  # Incomplete or damaged leftovers.
      shutil.rmtree(entry)
    os.replace(tmp, entry)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
  logging.info("Saved source pre-training %s", entry)


def _load(spec, task, entry: str) -> tuple[Any, Any, dict] | None:
  """The cached entry, or None when absent; a damaged one is moved aside."""
  info_path = os.path.join(entry, "info.json")
  if not os.path.exists(info_path):
    return None
  problem = checkpointing.verify(entry)
  if problem is None:
    try:
      with open(info_path) as f:
        info = json.load(f)
      with _checkpointer() as ckptr:
        restored = ckptr.restore(os.path.join(entry, "variables"),
                                 _template(spec, task))
    except Exception as e:  # pylint: disable=broad-except
      problem = f"it does not restore ({type(e).__name__}: {e})"
    else:
      return (restored["params"], restored["model_state"],
              {**info, "path": entry})
  # Every process has read the entry before process 0 moves it aside.
  distributed.sync(f"read {entry}")
  if not distributed.is_primary():
    return None
  moved = checkpointing.move_aside(entry)
  logging.warning("Pre-training cache entry %s is damaged (%s): moved to %s "
                  "and rebuilt.", entry, problem, moved)
  return None


def _checkpointer() -> ocp.StandardCheckpointer:
  """An orbax checkpointer for this process alone (entries hold host numpy
  values that each process reads, and process 0 alone writes)."""
  if jax.process_count() == 1:
    return ocp.StandardCheckpointer()
  me = jax.process_index()
  return ocp.StandardCheckpointer(
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          primary_host=me, active_processes={me}))


def _template(spec, task):
  model = build.make_model(spec.model, heads=("src_head",),
                           shapes=build.Shapes.of(task))
  params, model_state = jax.eval_shape(
      lambda: models.init_variables(model, jax.random.key(0), task.image_shape)
  )
  return {"params": params, "model_state": model_state}


def source_class_prior(task: data.TransferTask) -> np.ndarray:
  """Fraction of source train examples in each source class, [C_src]."""
  counts = np.bincount(task.src_train.labels, minlength=task.num_src_classes)
  return counts / counts.sum()
