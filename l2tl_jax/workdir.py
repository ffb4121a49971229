"""A run's workdir: the saved config, what changed since, finished results.

`config_changes` compares a run's config (`spec.RunSpec.config`, the
resolved config as a dict: fields keep their config paths) with the one
saved in a workdir;
`check_changes` refuses changes that were not accepted (and those to the
method or architecture, never accepted); `save_config` writes config.json
and logs accepted changes; `finished_results` reads back a complete run;
`lock` gives one process at a time the workdir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any, Iterator, Mapping

from absl import logging

from l2tl_jax import atomic
from l2tl_jax import checkpointing
from l2tl_jax import data
from l2tl_jax import methods
from l2tl_jax import options as options_lib

# Config fields that may change between a run and its resumption.
HOST_ONLY_FIELDS = ("log_every_steps", "checkpoint_every_steps",
                    "checkpoints_to_keep", "progress_bar", "write_plots",
                    "pretrain_cache_dir", "distributed", "data.read_threads")


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


def config_changes(config: Mapping[str, Any],
                   workdir: str) -> dict[str, tuple[Any, Any]]:
  """Fields where `config` (RunSpec.config) differs from the run saved in
  `workdir`.

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
  new = _comparable(dict(config))
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
    "warmup_steps", "score_every", "alignment_normalize"))


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
                for f in dataclasses.fields(options_lib.L2TLOptions)}
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


def check_changes(changes: dict[str, tuple[Any, Any]], workdir: str,
                  accept_changes: tuple[str, ...]) -> None:
  """Refuses changed fields that were not accepted, and structural ones.

  Args:
    changes: `config_changes(config, workdir)`.
    workdir: the run's directory (named in the messages).
    accept_changes: the fields that may differ (--accept_changes).

  Raises:
    ConfigMismatchError: a structural field changed, or another field
      changed without being accepted.
  """
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


def save_config(config: Mapping[str, Any], workdir: str,
                changes: dict[str, tuple[Any, Any]]) -> None:
  """config.json (`config`: RunSpec.config), and each accepted change in
  config_changes.jsonl."""
  if changes:
    with open(os.path.join(workdir, "config_changes.jsonl"), "a") as f:
      f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"),
                          "changes": {k: list(v) for k, v in
                                      changes.items()}}) + "\n")
  atomic.write_json(os.path.join(workdir, "config.json"), dict(config))


def finished_results(config: Mapping[str, Any],
                     workdir: str) -> dict[str, Any] | None:
  """results.json of a complete run of `config` (RunSpec.config) in
  `workdir`, else None.

  Raises:
    ConfigMismatchError: the complete run has another config.
  """
  results_path = os.path.join(workdir, "results.json")
  if not os.path.exists(results_path):
    return None
  changes = config_changes(config, workdir)
  if changes:
    details = "; ".join(f"{k}: {old!r} -> {new!r}"
                        for k, (old, new) in list(changes.items())[:8])
    raise ConfigMismatchError(
        f"The run in {workdir} is complete with another config ({details}"
        f"{'; ...' if len(changes) > 8 else ''}); changed fields only "
        "continue unfinished runs. Run this config in a new --workdir.")
  with open(results_path) as f:
    results = json.load(f)
  logging.info("Run already complete: %s", results_path)
  return results


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds `workdir`'s exclusive lock (process 0 holds it for all).

  Raises:
    LockedError: another live process runs in `workdir`.
  """
  with checkpointing.exclusive_lock(os.path.join(workdir, ".lock"),
                                    what=f"Workdir {workdir}"):
    yield
