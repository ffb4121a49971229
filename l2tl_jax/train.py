"""`train_and_evaluate(config, workdir)`: one run of one method, end to end.

Methods (config.method) are the entries of `l2tl_jax.methods.METHODS`:
scratch, finetune, joint_uniform, datl (fixed class weights P_t(c) / P_s(c)
from the pre-trained source classifier, Ngiam et al. 2018), l2tl_fixed_alpha
and l2tl. Their objects are built by `l2tl_jax.build`; loaded weights enter
through `l2tl_jax.loading`.

Every method also records a validation-selected result: the target params
with the best full-validation accuracy (evaluated every
config.eval.every_steps) and their test accuracy.

Files in workdir: config.json, checkpoints/, metrics.jsonl (one object per
log step, plus 'eval/...' objects at evaluation steps), tensorboard/,
results.json (written last, atomically) and plots/.

A run of several processes (`l2tl_jax.distributed`, 'mesh' parallelism) gives
the single-process results: each process reads its rows of every batch, all
of them save and restore the checkpoints, and process 0 alone writes the
other files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from l2tl_jax import build
from l2tl_jax import checkpointing
from l2tl_jax import data
from l2tl_jax import distributed
from l2tl_jax import estimators
from l2tl_jax import loading
from l2tl_jax import methods
from l2tl_jax import models
from l2tl_jax import parallel
from l2tl_jax import policy as policy_lib
from l2tl_jax import pretrain
from l2tl_jax import steps
from l2tl_jax import validation
from l2tl_jax import weights

# Config fields that may change between a run and its resumption.
HOST_ONLY_FIELDS = ("log_every_steps", "checkpoint_every_steps",
                    "checkpoints_to_keep", "progress_bar", "write_plots",
                    "pretrain_cache_dir", "distributed", "data.read_threads")


# What config.l2tl.mode fills in for the config.l2tl fields left None.
L2TL_MODES = {
    "reference": {
        "estimator": "reinforce",
        "reward": "accuracy",
        "class_reduction": "mean",
        "baseline_order": "reference",
        "src_normalization": "reference",
        "num_samples": 1,
        "policy_lr": 0.01,
        "val_batch_size": 32,
    },
    # The exact meta-gradient at the reference's policy rate (the policy
    # study's earlier choice on two benchmarks). Its REINFORCE fields are the
    # low-variance ones, used when estimator='reinforce' is set on top.
    "meta_gradient": {
        "estimator": "meta_gradient",
        "reward": "loss_improvement",
        "class_reduction": "sum",
        "baseline_order": "previous",
        "src_normalization": "mean",
        "num_samples": 1,
        "policy_lr": 0.01,
        "val_batch_size": 32,
    },
}
# Class weights from the per-class EMA of the validation-gradient alignment
# (estimators.alignment_update), starting exactly at uniform joint training:
# class weights 1 for the warm-up, alpha fixed (config.l2tl.fixed_alpha),
# 'mean' normalisation. Chosen by mean validation accuracy over the policy
# study's benchmarks (README.md). Its REINFORCE fields are the reference's.
L2TL_MODES["recommended"] = {**L2TL_MODES["reference"],
                             "estimator": "alignment_ema",
                             "src_normalization": "mean"}


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose config.l2tl fields left None come from its mode.

  Args:
    config: a run config; config.l2tl.mode names an entry of `L2TL_MODES`.

  Returns:
    A resolved copy (the input is not changed). Explicitly set fields win.
    An unknown mode fills nothing: `validation.check_config` reports it with
    the other fields.
  """
  out = config.copy_and_resolve_references()
  mode = out.l2tl.get("mode", "recommended")
  for name, value in L2TL_MODES.get(mode, {}).items():
    if out.l2tl.get(name) is None:
      out.l2tl[name] = value
  return out


class NonFiniteError(FloatingPointError):
  """Training produced a non-finite loss or gradient."""


class ConfigMismatchError(ValueError):
  """The workdir holds a run with a different config."""


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = list(v) if isinstance(v, tuple) else v
  return out


def _comparable(config_dict: dict) -> dict[str, Any]:
  flat = _flatten(config_dict)
  return {k: v for k, v in flat.items()
          if k not in HOST_ONLY_FIELDS
          and k.split(".")[0] not in HOST_ONLY_FIELDS}


def config_changes(config: ml_collections.ConfigDict,
                   workdir: str) -> dict[str, tuple[Any, Any]]:
  """Fields where `config` differs from the run saved in `workdir`.

  Host-only fields (logging, checkpoint cadence, ...) are not compared.

  Returns:
    field -> (saved value, new value); {} for a new workdir.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    saved = json.load(f)
  old = _comparable(saved)
  new = _comparable(json.loads(config.to_json_best_effort()))
  return {k: (old.get(k, "<unset>"), new.get(k, "<unset>"))
          for k in sorted(old.keys() | new.keys())
          if old.get(k) != new.get(k)
          and not (k not in old and _is_default(k, new[k]))
          and not _unread(k, new.get("method", old.get("method")))}


# config.l2tl fields that only a learned policy reads: a method with fixed
# class weights and alpha trains the same whatever they hold (so a new
# default mode does not make its finished runs "changed").
POLICY_ONLY_FIELDS = frozenset(f"l2tl.{name}" for name in (
    "mode", "estimator", "num_samples", "samples_loop", "policy_lr",
    "policy_lr_boundaries", "policy_lr_scales", "num_levels",
    "class_weight_scale", "num_alpha_levels", "loss_weight_scale",
    "class_reduction", "entropy_coef", "score_layers", "alignment_momentum",
    "warmup_steps", "score_every"))


def _unread(key: str, method_name: str | None) -> bool:
  """Whether method `method_name` never reads config field `key`."""
  if method_name not in methods.METHODS or not key.startswith("l2tl."):
    return False
  method = methods.get(method_name)
  if not method.joint:  # Target data only: no l2tl field matters.
    return True
  return not method.has_policy and key in POLICY_ONLY_FIELDS


def _is_default(key: str, value: Any) -> bool:
  """Whether `value` is the default of config field `key`.

  A field a saved run predates counts as unchanged at its default: fields
  are added with the default that keeps the earlier behaviour.
  """
  if value is None:
    return True
  section, _, name = key.partition(".")
  if section == "l2tl":
    defaults = {f.name: f.default
                for f in dataclasses.fields(steps.L2TLOptions)}
  elif section == "data":
    defaults = json.loads(data.get_default_data_config().to_json_best_effort())
  else:
    return False
  return name in defaults and defaults[name] == value


# Fields that define what is trained: the method, the policy's estimator and
# the encoder's architecture. A saved run's checkpoints hold other arrays
# under another value, so a change is never accepted on resume.
STRUCTURAL_FIELDS = ("method", "l2tl.mode", "l2tl.estimator", "model.encoder",
                     "model.encoder_kwargs.")


def _structural(key: str) -> bool:
  return any(key == f or (f.endswith(".") and key.startswith(f))
             for f in STRUCTURAL_FIELDS)


def _check_changes(changes: dict[str, tuple[Any, Any]], workdir: str,
                   accept_changes: tuple[str, ...]) -> None:
  """Refuses changed fields that were not accepted, and structural ones."""
  structural = {k: v for k, v in changes.items() if _structural(k)}
  if structural:
    details = "; ".join(f"{k}: {old!r} -> {new!r}"
                        for k, (old, new) in structural.items())
    raise ConfigMismatchError(
        f"Workdir {workdir} holds a run of another method or architecture "
        f"({details}): its checkpoints cannot continue as this run, so "
        "--accept_changes does not apply to these fields. Start this "
        "config in a new workdir: rerun the same command with another "
        f"--workdir (e.g. --workdir={workdir}-{_suffix(structural)}); "
        "nothing in this one was changed.")
  refused = {k: v for k, v in changes.items() if k not in accept_changes}
  if not refused:
    return
  details = "; ".join(f"{k}: {old!r} -> {new!r}"
                      for k, (old, new) in list(refused.items())[:8])
  raise ConfigMismatchError(
      f"Workdir {workdir} holds a run with a different config ({details}"
      f"{'; ...' if len(refused) > 8 else ''}). To continue that run from "
      "its last checkpoint with these changes, add --accept_changes="
      f"{','.join(refused)} (experiments.main); otherwise use a new "
      "--workdir, or delete this one to start over.")


def _suffix(changes: dict[str, tuple[Any, Any]]) -> str:
  """A workdir suffix naming the new values, e.g. 'joint_uniform'."""
  parts = [str(new) for _, new in changes.values()
           if isinstance(new, (str, int, float))]
  text = "-".join(parts) or "new"
  return "".join(c if c.isalnum() or c in "_-." else "_" for c in text)[:40]


def _save_config(config: ml_collections.ConfigDict, workdir: str,
                 changes: dict[str, tuple[Any, Any]]) -> None:
  """config.json, and each accepted change in config_changes.jsonl."""
  if changes:
    with open(os.path.join(workdir, "config_changes.jsonl"), "a") as f:
      f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"),
                          "changes": {k: list(v) for k, v in
                                      changes.items()}}) + "\n")
  checkpointing.write_json_atomic(os.path.join(workdir, "config.json"),
                                  json.loads(config.to_json_best_effort()))


def datl_class_weights(
    model: models.TransferModel,
    params: Any,
    model_state: Any,
    task: data.TransferTask,
    *,
    batch_size: int,
) -> np.ndarray:
  """DATL importance weights P_t(c) / P_s(c), scaled to a maximum of 1.

  P_t(c) is the pre-trained source classifier's mean predicted probability
  of source class c over the target train images; P_s(c) the source class
  frequency.
  """

  @jax.jit
  def prob_sums(batch):
    features, _ = models.apply_encoder(
        model, params, model_state, batch["image"], train=False
    )
    probs = jax.nn.softmax(models.apply_head(model, params, features, "src"))
    return jnp.sum(probs * batch["mask"][:, None], axis=0)

  total = sum(
      np.asarray(prob_sums(b))
      for b in data.eval_batches(task.tgt_train, batch_size=batch_size)
  )
  p_tgt = total / len(task.tgt_train)
  weights = p_tgt / np.maximum(pretrain.source_class_prior(task), 1e-12)
  return weights / weights.max()


class _Run:
  """Everything built for one run; the host loop below drives it."""

  def __init__(self, config, task, workdir, par, loaded=None):
    self.config, self.task, self.par = config, task, par
    method = methods.get(config.method)
    self.joint = method.joint
    needs_source = method.joint or (method.init == "pretrained"
                                    and loaded is None)
    if needs_source and task.src_train is None:
      raise data.DataError(
          f"Method {method.name!r} needs source data"
          + ("" if method.joint else " to pre-train on (or weights: "
             "config.model.init_from)")
          + "; set config.data.source.")
    self.info: dict[str, Any] = {}
    shapes = build.Shapes.of(task)
    model = build.make_model(config, heads=method.heads, shapes=shapes,
                             axis_name=par.axis_name)
    rng_init, rng_state = jax.random.split(jax.random.key(config.seed))
    params, model_state = models.init_variables(model, rng_init,
                                                task.image_shape)
    if method.init == "pretrained":
      params, model_state = self._load(config, task, workdir, par, method,
                                       params, model_state, loaded)
    datl_weights = None
    if method.class_weights == "datl":
      datl_weights = datl_class_weights(
          model, params, model_state, task, batch_size=config.eval.batch_size
      )  # On one device: a single pass over the few target train images.
    class_weights = build.fixed_class_weights(
        method, shapes, datl_weights, config.l2tl.get("fixed_class_weights"))
    if datl_weights is not None:
      self.info["datl_class_weights"] = dict(
          zip(task.src_class_names, class_weights))
    if method.joint and task.tgt_val is None:
      raise ValueError(
          f"Method {method.name!r} needs a target validation split; set "
          "config.data.target_val_split.")
    parts = build.target_stage(
        config, method=method, model=model, params=params,
        model_state=model_state, rng=rng_state, par=par,
        class_weights=class_weights)
    self.model, self.options = model, parts.options
    self.state, self.train_step = parts.state, parts.train_step
    self.eval_step = parts.eval_step
    self.batches = self._batches(config, task, method)

  def _load(self, config, task, workdir, par, method, params, model_state,
            loaded):
    """Merges the weights a run starts from into fresh params.

    config.model.init_from names a weights file or checkpoint; otherwise the
    source pre-training (cached) provides them. A file's classifier becomes
    the source head of the joint methods (when the file has none, the source
    head starts fresh); the target head always starts fresh.
    """
    parts = method.loaded_parts
    if loaded is not None:  # weights.load(config.model.init_from)
      src_params, src_model_state = loaded.params, loaded.model_state
      if "src_head" not in src_params:
        parts = tuple(p for p in parts if p != "src_head")
      self.info["init_from"] = {
          "path": os.path.abspath(config.model.init_from),
          "family": loaded.family, "format": loaded.info.get("format"),
          "source_head_classes": loaded.source_head_classes,
          "loaded_parts": list(parts)}
      source = f"weights file {config.model.init_from}"
    else:
      cache = config.pretrain_cache_dir or os.path.join(workdir, "pretrain")
      src_params, src_model_state, info = pretrain.pretrained(
          config, task, cache, par)
      self.info["pretrain"] = info
      source = f"source pre-training {info['path']}"
    return loading.merge_variables(
        params, model_state, src_params, src_model_state, parts=parts,
        dont_load=tuple(config.model.dont_load), source=source)

  def _batches(self, config, task, method):
    seed, b = config.seed, config.train.batch_size
    # This process's rows of every batch, read with the configured threads.
    shard = dict(self.par.data_shard,
                 num_threads=config.data.get("read_threads"))
    if not method.joint:
      return data.train_iterator(
          task.tgt_train, batch_size=b, seed=seed,
          augment=config.data.augment, drop_remainder=False, **shard)
    n = self.options.inner_steps
    # Batches run across epoch boundaries, as the reference's
    # shuffle().repeat().batch().
    stream = lambda split, size, **kw: data.train_iterator(
        split, batch_size=size, seed=seed, drop_remainder=False, **shard,
        **kw)
    return data.joint_iterator({
        "src": stream(task.src_train, n * self.options.src_oversample * b),
        "tgt": stream(task.tgt_train, n * b, augment=config.data.augment),
        "val": stream(task.tgt_val, config.l2tl.val_batch_size),
    })

  def evaluate(self, variables, split) -> dict[str, float]:
    """Accuracy and loss over `split` of host (params, model_state)."""
    params, model_state = self.par.put_replicated(variables)
    batch_size = self.par.round_up(self.config.eval.batch_size)
    batches = (
        self.par.put_batch(b)
        for b in data.eval_batches(split, batch_size=batch_size,
                                   **self.par.data_shard)
    )
    return steps.evaluate(self.eval_step, params, model_state, batches)

  def host_state(self) -> Any:
    """One copy of the train state, on the host."""
    return jax.device_get(self.par.unreplicate(self.state))

  def expected_weights(self, state) -> dict[str, Any]:
    """The learned class weights (the policy's expectation, or the
    estimator's own) and the policy's expected alpha, when learned."""
    if self.options is None or not self.options.has_policy:
      return {}
    out = {}
    if self.options.learns_classes:
      estimator = estimators.select(self.options)
      out["policy/expected_class_weights"] = np.asarray(
          estimator.class_weights(state.policy_params, state.estimator_state,
                                  self.options)
      ).round(6).tolist()
    if self.options.learns_alpha:
      out["policy/expected_alpha"] = float(
          policy_lib.expected_alpha(
              state.policy_params, self.options.loss_weight_scale
          )
      )
    return out


class _StopRequest:
  """Records SIGTERM / SIGINT so the loop can save and stop between steps."""

  def __init__(self):
    self.signum = None

  def __call__(self, signum, frame):
    del frame
    self.signum = signum


@contextlib.contextmanager
def _signals_caught(stop: _StopRequest):
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _truncate_jsonl(path: str, last_step: int) -> None:
  """Drops records after `last_step` (a resumed run rewrites them).

  A torn last line (a kill while appending) is dropped too; a damaged line
  elsewhere is an error.
  """
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip()]
  records = []
  for i, line in enumerate(lines):
    try:
      records.append((json.loads(line), line))
    except ValueError as e:
      if i < len(lines) - 1:
        raise data.DataError(
            f"{path} line {i + 1} is damaged ({e}); it holds the run's "
            "metrics. Remove that line, or use a new --workdir.") from e
      logging.warning("Dropped the torn last line of %s.", path)
  kept = [line if line.endswith("\n") else line + "\n"
          for record, line in records if record["step"] <= last_step]
  checkpointing.write_text_atomic(path, "".join(kept))


def _to_host(pending: list[dict]) -> list[dict[str, float]]:
  """Per-step metrics as Python floats, in one transfer.

  Floats (float64) of the float32 values: restored windows (JSON floats) and
  fresh ones then average identically.
  """
  return [{k: float(np.asarray(v).reshape(-1)[0]) for k, v in m.items()}
          for m in jax.device_get(pending)]


def _mean_metrics(window: list[dict[str, float]]) -> dict[str, float]:
  return {k: float(np.mean([m[k] for m in window])) for k in window[0]}


def _first_nonfinite(
    window: list[dict[str, float]], first_step: int
) -> int | None:
  for i, m in enumerate(window):
    if m["train/nonfinite"]:
      return first_step + i
  return None


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    accept_changes: Sequence[str] = (),
) -> dict[str, Any]:
  """Trains `config.method` in `workdir` (resuming it if possible) and tests.

  One process at a time: the workdir is locked for the run's life (by
  process 0 in a run of several processes, which all call this function).

  Args:
    config: a full run config (see experiments/configs/default.py).
    workdir: output directory.
    accept_changes: config fields (e.g. 'train.lr') that may differ from the
      run saved in `workdir`; the run continues from its last good
      checkpoint with the new values (recorded in config_changes.jsonl).

  Returns:
    The results dict also written to workdir/results.json; on SIGTERM or
    SIGINT, {'status': 'interrupted', 'step': ..., 'checkpoint': ...} after a
    checkpoint was saved (results.json is not written).

  Raises:
    ConfigError: a config field of the wrong type or out of range.
    ConfigMismatchError: workdir holds a run of another config.
    NonFiniteError: a loss or gradient became non-finite.
    DataError: bad data settings, or data changed since the run started.
    LockedError: another process runs in workdir.
    DamagedError: every checkpoint of the run is damaged.
  """
  config = resolve_config(config)
  validation.check_config(config, l2tl_modes=L2TL_MODES)
  loaded = None
  if config.model.get("init_from"):  # Before the data and the workdir.
    loaded = weights.load(config.model.init_from)
    _check_family(config, loaded)
    config = _preprocessing_for(config, loaded.family)
  if not workdir or not str(workdir).strip():
    raise validation.ConfigError(
        "The workdir is empty: name the directory the run writes to (e.g. "
        "--workdir=runs/my_run); an empty one would write into the current "
        "directory.")
  workdir = os.path.abspath(workdir)
  data.check_workdir(workdir, config.data)  # Not inside an image folder.
  finished = _finished_results(config, workdir)
  if finished is not None:  # Read without the lock: read-only storage works.
    return finished
  # Refused before the lock file is written (and again under the lock).
  _check_changes(config_changes(config, workdir), workdir,
                 tuple(accept_changes))
  os.makedirs(workdir, exist_ok=True)
  with checkpointing.exclusive_lock(os.path.join(workdir, ".lock"),
                                    what=f"Workdir {workdir}"):
    return _train_locked(config, workdir, tuple(accept_changes), loaded)


def _finished_results(config, workdir: str) -> dict[str, Any] | None:
  """results.json of a complete run of `config` in `workdir`, else None.

  Raises:
    ConfigMismatchError: the complete run has another config.
  """
  results_path = os.path.join(workdir, "results.json")
  if not os.path.exists(results_path):
    return None
  changes = config_changes(config, workdir)
  if changes:
    raise ConfigMismatchError(
        f"The run in {workdir} is complete; changed fields "
        f"({', '.join(changes)}) only continue unfinished runs. Use a new "
        "--workdir.")
  with open(results_path) as f:
    results = json.load(f)
  logging.info("Run already complete: %s", results_path)
  return results


def _preprocessing_for(config, family: str | None):
  """config.data's preprocessing fields left at their defaults, filled in
  for the weights' family (config.model.preprocessing_from_weights)."""
  if family is None or not config.model.get("preprocessing_from_weights",
                                            True):
    return config
  try:
    filled = data.fill_preprocessing(config.data, family)
  except data.DataError:  # No ImageNet preprocessing (e.g. our own LeNet).
    return config
  out = config.copy_and_resolve_references()
  out.data = filled
  return out


def _train_locked(config, workdir: str, accept_changes: tuple[str, ...],
                  loaded):
  """train_and_evaluate while holding the workdir's lock."""
  changes = config_changes(config, workdir)
  _check_changes(changes, workdir, accept_changes)
  results_path = os.path.join(workdir, "results.json")
  finished = _finished_results(config, workdir)  # Finished while we waited.
  if finished is not None:
    return finished

  par = parallel.Parallelism(config.parallelism)
  method = methods.get(config.method)
  validation.check_batches(
      config, devices=par.size, mode=par.mode, joint=method.joint,
      pretrains=method.init == "pretrained" and not config.model.get(
          "init_from"))
  task = data.build_task(config.data)
  sizes = ", ".join(f"{k} {len(v)}" for k, v in task.splits().items())
  logging.info("Data ready: %s -> %s (%s).", config.data.source,
               config.data.target, sizes)
  if config.train.batch_size > len(task.tgt_train):
    logging.warning(
        "config.train.batch_size=%d is above the %d target train examples: "
        "every batch repeats examples (an epoch is shorter than a batch).",
        config.train.batch_size, len(task.tgt_train))
  run = _Run(config, task, workdir, par, loaded)
  loop = _HostLoop(run, workdir, accepted=changes)
  # Written once the run was built and its checkpoint restored, so a bad
  # start leaves the saved run as it was.
  if distributed.is_primary():
    _save_config(config, workdir, changes)
  interrupted = loop.train()
  if interrupted is not None:
    return interrupted
  results = _final_results(run, loop.best, loop.host, workdir)
  if distributed.is_primary():
    checkpointing.write_json_atomic(results_path, results)
    if config.write_plots:
      from l2tl_jax import plots  # matplotlib only when plotting.

      plots.plot_run(workdir)
  run.batches.close()
  return results


def _check_family(config, loaded) -> None:
  """The weights must be of config.model's architecture (before the data)."""
  if loaded.family is None:
    return
  kwargs = config.model.encoder_kwargs.to_dict()
  defaults = models.encoder_defaults(loaded.family)
  differ = {k: v for k, v in loaded.encoder_kwargs.items()
            if tuple(np.atleast_1d(kwargs.get(k, defaults.get(k))))
            != tuple(np.atleast_1d(v))
            } if loaded.family == config.model.encoder else {}
  if loaded.family != config.model.encoder or differ:
    raise weights.WeightsError(
        f"{config.model.init_from} holds {loaded.family} weights"
        + (f" with {differ}" if differ else "") + " but config.model is "
        f"{config.model.encoder!r} with encoder_kwargs {kwargs}: set "
        f"config.model.encoder={loaded.family!r} and encoder_kwargs "
        f"{loaded.encoder_kwargs or '{}'} (python -m "
        "experiments.inspect_weights FILE shows the architecture).")


class _HostLoop:
  """The host side of a run: resume, steps, log windows, evaluation, saves.

  It holds no math: the compiled step does all of it. Metrics stay on the
  device until a log window ends (`pending`); a checkpoint also keeps the
  pending metrics of a partly filled window, so a resumed run logs the same
  window means as an uninterrupted one. With several processes every one
  runs this loop in step; only process 0 (`primary`) writes metrics,
  TensorBoard and the progress bar.
  """

  def __init__(self, run: _Run, workdir: str, accepted=None):
    self.run, self.config = run, run.config
    self.accepted = accepted or {}
    self.workdir = workdir
    self.primary = distributed.is_primary()
    self.ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=self.config.checkpoints_to_keep)
    self.metrics_path = os.path.join(workdir, "metrics.jsonl")
    self.host = {"best": {"step": 0, "val_accuracy": -1.0},
                 "train_time_s": 0.0}
    state = run.host_state()
    self.best = jax.device_get((state.params, state.model_state))
    self.start = self._restore(state)
    if self.primary:
      _truncate_jsonl(self.metrics_path, self.start)
    self.pending: list[dict] = list(self.host.get("pending", []))
    self.window_start = time.perf_counter()
    self.window_first = self.start + 1 - len(self.pending)

  def _restore(self, template) -> int:
    """Restores the newest good checkpoint, if any; returns its step.

    A damaged checkpoint is moved aside (with a warning naming it and the
    one used). The data must be what the run started with.
    """
    self.ckpt.clean_temporaries()  # The workdir lock is ours.
    try:
      restored = self.ckpt.restore_latest_good(state=template, best=self.best)
    except checkpointing.IncompatibleError as e:
      fields = (f"the accepted change(s) {', '.join(self.accepted)} alter "
                "the trained arrays" if self.accepted else
                "the config differs in a way the saved config does not show "
                "(e.g. another code version)")
      raise ConfigMismatchError(
          f"The run in {self.workdir} is incompatible with the saved run: "
          f"{fields}; {e}. Nothing was changed in the workdir. Start this "
          "config in a new --workdir, or rerun without the changes.") from e
    identity = self.run.task.identity()
    if restored is None:
      self.host["task"] = identity
      return 0
    step, state, self.best, self.host = restored
    if self.host.get("task", identity) != identity:
      raise data.DataError(
          f"The data of the run in {self.workdir} changed since it started "
          f"(it was {self.host['task']}, now {identity}): resuming would mix "
          "two datasets. Restore the data, or use a new --workdir.")
    self.host["task"] = identity
    self.run.state = self.run.par.put_replicated(state)
    self.run.batches.set_state(self.host["batches"])
    logging.info("Resumed from step %d (%s)", int(state.step),
                 self.ckpt.directory)
    if int(state.step) > self.config.train.steps:
      logging.warning(
          "The checkpoint is at step %d, past config.train.steps=%d: no step "
          "is trained and the results are those of step %d.",
          int(state.step), self.config.train.steps, int(state.step))
    return int(state.step)

  def save(self, step: int) -> None:
    self.host["batches"] = self.run.batches.get_state()
    self.host["pending"] = _to_host(self.pending)
    self.ckpt.save(step, state=self.run.host_state(), best=self.best,
                   host=self.host)

  def train(self) -> dict[str, Any] | None:
    """Steps to config.train.steps; the interrupted result on a signal."""
    from tensorboardX import SummaryWriter  # Heavy import, only for runs.

    config, run = self.config, self.run
    total = config.train.steps
    self.writer = (SummaryWriter(os.path.join(self.workdir, "tensorboard"),
                                 purge_step=self.start)
                   if self.primary else None)
    self.bar = tqdm.tqdm(total=total, initial=self.start, unit="step",
                         disable=not (config.progress_bar and self.primary),
                         dynamic_ncols=True, desc=config.method)
    stop = _StopRequest()
    run_start = time.perf_counter()
    step = self.start
    try:
      with _signals_caught(stop), (open(self.metrics_path, "a")
                                   if self.primary else
                                   contextlib.nullcontext()) as self.log:
        while step < total:
          signum = self._stop_signal(stop, step)
          if signum is not None:
            self.save(step)
            logging.warning("Signal %d: saved step %d, stopping.",
                            signum, step)
            return {"status": "interrupted", "signal": signum,
                    "step": step, "checkpoint": self.ckpt.directory}
          batch = next(run.batches)
          if step == self.start and run.joint:
            steps.check_l2tl_batch(batch, run.options)
          run.state, metrics = run.train_step(run.state,
                                              run.par.put_batch(batch))
          self.pending.append(metrics)
          step += 1
          self.bar.update(1)
          last = step == total
          if step % config.log_every_steps == 0 or last:
            self.log_window(step)
          if config.eval.every_steps and run.task.tgt_val is not None and (
              step % config.eval.every_steps == 0 or last):
            self.evaluate(step)
          if step % config.checkpoint_every_steps == 0 or last:
            self.host["train_time_s"] += time.perf_counter() - run_start
            run_start = time.perf_counter()
            self.save(step)
    finally:
      self.bar.close()
      if self.writer is not None:
        self.writer.close()
      self.ckpt.close()
    return None

  def _stop_signal(self, stop: _StopRequest, step: int) -> int | None:
    """The signal to save and stop on before `step + 1`, if any.

    Every process must stop at the same step (saving is collective): with
    several processes they agree at each log window's first step, on the
    signal any of them got.
    """
    if jax.process_count() == 1:
      return stop.signum
    if step % self.config.log_every_steps:
      return None
    return int(distributed.gather(stop.signum or 0).max()) or None

  def _write(self, record: dict[str, Any]) -> None:
    if not self.primary:
      return
    self.log.write(json.dumps(record) + "\n")
    self.log.flush()

  def _scalar(self, key: str, value: float, step: int) -> None:
    if self.writer is not None:
      self.writer.add_scalar(key, value, step)

  def log_window(self, step: int) -> None:
    """Writes the window's mean metrics; raises on a non-finite step."""
    window = _to_host(self.pending)
    bad = _first_nonfinite(window, self.window_first)
    if bad is not None:
      # Every step on disk was verified when written or restored.
      last = self.ckpt.latest_step()
      where = (f"step {last} in {self.ckpt.directory}" if last is not None
               else "none (no checkpoint was saved yet)")
      raise NonFiniteError(
          f"Non-finite loss or gradient at step {bad} of "
          f"{self.config.method}; the update was not applied and the run "
          f"stopped. Last good checkpoint: {where}. To continue from it with "
          "a lower learning rate, rerun with e.g. --config.train.lr=<lower> "
          "--accept_changes=train.lr; or check the data."
      )
    elapsed = time.perf_counter() - self.window_start
    record = {"step": step, **_mean_metrics(window),
              "steps_per_s": len(self.pending) / max(elapsed, 1e-9),
              **self.run.expected_weights(self.run.host_state())}
    self._write(record)
    for k, v in record.items():
      if isinstance(v, float) and k != "step":
        self._scalar(k, v, step)
    self.bar.set_postfix({k.split("/")[-1]: f"{record[k]:.3f}" for k in
                          ("train/tgt_loss", "policy/reward") if k in record})
    self.pending = []
    self.window_start, self.window_first = time.perf_counter(), step + 1

  def evaluate(self, step: int) -> None:
    """Full-validation accuracy; keeps the best params for selection."""
    s = self.run.host_state()
    val = self.run.evaluate((s.params, s.model_state), self.run.task.tgt_val)
    _check_finite_eval(val, "validation", step, self.config.method)
    self._write({"step": step, "eval/val_accuracy": val["accuracy"],
                 "eval/val_loss": val["loss"]})
    self._scalar("eval/val_accuracy", val["accuracy"], step)
    if val["accuracy"] > self.host["best"]["val_accuracy"]:
      self.host["best"] = {"step": step, "val_accuracy": val["accuracy"]}
      self.best = (s.params, s.model_state)


def _check_finite_eval(metrics: dict[str, float], split: str, step: int,
                       method: str) -> None:
  """A non-finite evaluation loss stops the run like a non-finite step."""
  if np.isfinite(metrics["loss"]):
    return
  raise NonFiniteError(
      f"The {split} loss of {method} is {metrics['loss']} at step {step} "
      f"(accuracy {metrics['accuracy']:.3f}): the model's outputs are not "
      "finite in evaluation mode, so no result is written. A loaded weights "
      "file with damaged batch-norm statistics, or a divergence the "
      "training loss did not show, does this; check config.model.init_from "
      "and the learning rate.")


def _prefixed(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
  return {prefix + k: v for k, v in d.items()}


def _final_results(run: _Run, best, host, workdir) -> dict[str, Any]:
  config, task = run.config, run.task
  state = run.host_state()
  results: dict[str, Any] = {
      "status": "completed",
      "method": config.method,
      "seed": config.seed,
      "steps": int(state.step),
      "train_time_s": host["train_time_s"],
  }
  if task.tgt_test is not None:
    test = run.evaluate((state.params, state.model_state), task.tgt_test)
    _check_finite_eval(test, "test", int(state.step), config.method)
    results["test_accuracy"] = test["accuracy"]
    results["test_loss"] = test["loss"]
    results["test_examples"] = int(test["count"])
    results.update(_prefixed("test_", steps.per_class(
        test["confusion"], task.tgt_class_names)))
  if task.tgt_val is not None:
    val = run.evaluate((state.params, state.model_state), task.tgt_val)
    _check_finite_eval(val, "validation", int(state.step), config.method)
    results["val_accuracy"] = val["accuracy"]
    if host["best"]["step"] > 0:
      selected = {"step": host["best"]["step"],
                  "val_accuracy": host["best"]["val_accuracy"]}
      if task.tgt_test is not None:
        sel_test = run.evaluate(best, task.tgt_test)
        selected["test_accuracy"] = sel_test["accuracy"]
        selected.update(_prefixed("test_", steps.per_class(
            sel_test["confusion"], task.tgt_class_names)))
    else:  # No periodic evaluation: the final params are the only candidate.
      selected = {"step": results["steps"], "val_accuracy": val["accuracy"]}
      for key in ("test_accuracy", "test_per_class_accuracy",
                  "test_confusion"):
        if key in results:
          selected[key] = results[key]
    results["val_selected"] = selected
  weights = run.expected_weights(state)
  if weights:
    results["policy"] = {
        "expected_class_weights": dict(zip(
            task.src_class_names,
            weights.get("policy/expected_class_weights", []))),
        "expected_alpha": weights.get("policy/expected_alpha"),
    }
  results.update(run.info)
  results["task"] = task.summary()
  results["src_class_names"] = list(task.src_class_names)
  results["tgt_class_names"] = list(task.tgt_class_names)
  results["config"] = json.loads(config.to_json_best_effort())
  results["devices"] = [str(d) for d in run.par.devices]
  return results
