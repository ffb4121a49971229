"""The whole run config checked before anything is written.

`config_problems` lists every field of the wrong type or out of range, by
its full name; `spec.from_config` adds the L2TL step's own checks and
raises them at once (`raise_problems`), so a run that cannot start never
touches its workdir. Data fields are checked where the task is built
(`data.DataError`).
"""

from __future__ import annotations

import math
import os
from typing import Any

import ml_collections

from l2tl_jax import methods as methods_lib
from l2tl_jax import models
from l2tl_jax import outer
from l2tl_jax import parallel


class ConfigError(ValueError):
  """A config field has the wrong type or an unusable value."""


INT, FLOAT = "an integer", "a number"
# field: (kind, low, high, low_inclusive); None: unbounded.
RANGES: dict[str, tuple[str, float | None, float | None, bool]] = {
    "seed": (INT, 0, None, True),
    "train.steps": (INT, 1, None, True),
    "train.batch_size": (INT, 1, None, True),
    "train.lr": (FLOAT, 0, None, True),
    "train.momentum": (FLOAT, 0, 1, True),
    "train.weight_decay": (FLOAT, 0, None, True),
    "pretrain.steps": (INT, 1, None, True),
    "pretrain.batch_size": (INT, 1, None, True),
    "pretrain.lr": (FLOAT, 0, None, True),
    "pretrain.momentum": (FLOAT, 0, 1, True),
    "pretrain.weight_decay": (FLOAT, 0, None, True),
    "pretrain.seed": (INT, 0, None, True),
    "l2tl.src_oversample": (INT, 1, None, True),
    "l2tl.val_batch_size": (INT, 1, None, True),
    "l2tl.num_levels": (INT, 1, None, True),
    "l2tl.num_alpha_levels": (INT, 1, None, True),
    "l2tl.loss_weight_scale": (FLOAT, 0, None, False),
    "l2tl.class_weight_scale": (FLOAT, 0, None, False),
    "l2tl.policy_lr": (FLOAT, 0, None, True),
    "l2tl.inner_steps": (INT, 1, None, True),
    "l2tl.baseline_momentum": (FLOAT, 0, 1, True),
    "l2tl.entropy_coef": (FLOAT, 0, None, True),
    "l2tl.num_samples": (INT, 1, None, True),
    "l2tl.fixed_alpha": (FLOAT, 0, None, True),
    "l2tl.score_layers": (INT, 0, None, True),
    "l2tl.alignment_momentum": (FLOAT, 0, 1, True),
    "l2tl.warmup_steps": (INT, 0, None, True),
    "l2tl.score_every": (INT, 1, None, True),
    "eval.batch_size": (INT, 1, None, True),
    "eval.every_steps": (INT, 0, None, True),
    "log_every_steps": (INT, 1, None, True),
    "checkpoint_every_steps": (INT, 1, None, True),
    "checkpoints_to_keep": (INT, 1, None, True),
    "data.read_threads": (INT, 0, None, True),
}
# Fields of RANGES that may also be None (their default).
OPTIONAL = frozenset({"l2tl.class_weight_scale", "data.read_threads"})
# Piecewise schedules: (boundaries, scales).
SCHEDULES = (("train.lr_boundaries", "train.lr_scales"),
             ("pretrain.lr_boundaries", "pretrain.lr_scales"),
             ("l2tl.policy_lr_boundaries", "l2tl.policy_lr_scales"))


def _get(config: ml_collections.ConfigDict, name: str) -> Any:
  node = config
  for part in name.split("."):
    node = node[part]
  return node


def _range_problem(name: str, value: Any, kind: str, low, high,
                   low_inclusive: bool) -> str | None:
  is_int = isinstance(value, int) and not isinstance(value, bool)
  is_number = is_int or isinstance(value, float)
  if (kind == INT and not is_int) or (kind == FLOAT and not is_number):
    return f"config.{name} must be {kind}, got {value!r}"
  if isinstance(value, float) and not math.isfinite(value):
    return f"config.{name} must be finite, got {value!r}"
  if low is not None and (value < low or (value == low and not low_inclusive)):
    bound = ">=" if low_inclusive else ">"
    return f"config.{name} must be {bound} {low}, got {value!r}"
  if high is not None and value >= high:
    return f"config.{name} must be < {high}, got {value!r}"
  return None


def _schedule_problem(boundaries_name: str, scales_name: str,
                      config) -> str | None:
  boundaries = list(_get(config, boundaries_name))
  scales = list(_get(config, scales_name))
  if len(boundaries) != len(scales):
    return (f"config.{boundaries_name} {boundaries} and config.{scales_name} "
            f"{scales} need one scale per boundary")
  if any(not isinstance(b, int) or b < 0 for b in boundaries) or any(
      b1 >= b2 for b1, b2 in zip(boundaries, boundaries[1:])):
    return (f"config.{boundaries_name} must be increasing step counts >= 0, "
            f"got {boundaries}")
  if any(not isinstance(s, (int, float)) or s <= 0 for s in scales):
    return f"config.{scales_name} must be positive numbers, got {scales}"
  return None


def raise_problems(problems: list[str]) -> None:
  """Raises one ConfigError naming every problem."""
  raise ConfigError(
      f"{len(problems)} config field(s) cannot be used: "
      + "; ".join(p.rstrip(".") for p in problems)
      + ". Fix them (--config.FIELD=VALUE) and rerun.")


def config_problems(config: ml_collections.ConfigDict, *,
                    unknown_mode: bool = False) -> list[str]:
  """Every bad field of a resolved run config, one line each.

  Args:
    config: the run config after `spec.resolve_config`.
    unknown_mode: config.l2tl.mode names no mode (`spec.mode_problem`
      reports it): the config.l2tl fields it would have filled (still
      None) are not reported.

  Returns:
    The problems ([] when none); `spec.from_config` adds the L2TL step's
    checks of the options and raises them all at once.
  """
  problems = []
  if config.method not in methods_lib.METHODS:
    problems.append(f"config.method must be one of "
                    f"{', '.join(methods_lib.METHODS)}, got {config.method!r}")
  if config.parallelism not in parallel.CONFIG_MODES:
    problems.append(f"config.parallelism must be one of "
                    f"{parallel.CONFIG_MODES}, got {config.parallelism!r}")
  if config.model.get("dtype", "float32") not in ("float32", "bfloat16"):
    problems.append("config.model.dtype must be 'float32' or 'bfloat16', "
                    f"got {config.model.dtype!r}")
  if config.model.get("bn_mode", "joint") not in outer.BN_MODES:
    problems.append(f"config.model.bn_mode must be one of {outer.BN_MODES}, "
                    f"got {config.model.bn_mode!r}")
  encoder = config.model.encoder
  if encoder not in models.encoder_names():
    problems.append(f"config.model.encoder must be one of "
                    f"{', '.join(models.encoder_names())}, got {encoder!r}")
  else:
    unknown = sorted(set(config.model.encoder_kwargs.keys())
                     - set(models.encoder_fields(encoder)) - {"parent", "name"})
    if unknown:
      problems.append(
          f"config.model.encoder_kwargs has {', '.join(unknown)}, which "
          f"{encoder!r} does not take (it takes "
          f"{', '.join(f for f in models.encoder_fields(encoder) if f not in ('parent', 'name'))})")
  init_from = config.model.get("init_from")
  if init_from and not os.path.exists(init_from):
    problems.append(f"config.model.init_from {init_from!r} does not exist")
  for name, spec in RANGES.items():
    value = _get(config, name)
    if value is None and (name in OPTIONAL
                          or (unknown_mode and name.startswith("l2tl."))):
      continue
    problem = _range_problem(name, value, *spec)
    if problem:
      problems.append(problem)
  for names in SCHEDULES:
    problem = _schedule_problem(*names, config)
    if problem:
      problems.append(problem)
  return problems


def check_batches(batch_sizes: dict[str, int], *, devices: int,
                  mode: str) -> None:
  """Raises ConfigError when a global batch does not split over the devices.

  Args:
    batch_sizes: config field name (e.g. 'train.batch_size') -> size, of
      the batches the run steps (`spec.RunSpec.device_batches`).
    devices: the devices a global batch is split over.
    mode: the parallelism mode (for the message).
  """
  if devices <= 1:
    return
  problems = [
      f"config.{name}={size} does not divide over the {devices} devices of "
      f"parallelism {mode!r}; use a multiple of {devices} (e.g. "
      f"{-(-size // devices) * devices})"
      for name, size in batch_sizes.items() if size % devices]
  if problems:
    raise ConfigError(
        f"{len(problems)} batch size(s) cannot be split: "
        + "; ".join(problems) + ".")
