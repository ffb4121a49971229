"""A run read once: `from_config(config) -> RunSpec`, frozen and checked.

The config (experiments/configs/default.py, the data config) is what users
write; the RunSpec is what the library reads. `from_config` fills the
config.l2tl fields its mode leaves None (`L2TL_MODES`), checks every field
at once (`validation.config_problems`, plus the L2TL step's own checks of
its options) and builds the pieces the run needs:

  spec.method      the `methods.Method` entry, looked up once
  spec.model       ModelSpec: encoder, kwargs, dtype, batch-norm mode, weights
  spec.data        data.DataSpec (l2tl_jax.data.parse), the data block read
  spec.pretrain    StageSpec of source pre-training
  spec.train       StageSpec of the target stage (decay set resolved)
  spec.l2tl        L2TLOptions of a joint method (mode applied), else None
  spec.policy      PolicySpec: the policy's optimiser and table sizes
  spec.eval        EvalSpec
  spec.host        HostSpec: what the host loop and the files do, nothing
                   compiled
  spec.config      the resolved config as a JSON dict (config.json, the
                   saved-config comparison, results.json): config paths stay
                   the names users and error messages use.

Nothing below `l2tl_jax.train` reads a ConfigDict: build, run, loop,
pre-training, the benchmarks and the study take these pieces. Each default
below is the one default.py writes (tests/test_spec.py holds them equal).
"""

from __future__ import annotations

import dataclasses
import json
import types
from typing import Any, Mapping

import ml_collections

from l2tl_jax import data
from l2tl_jax import estimators
from l2tl_jax import methods as methods_lib
from l2tl_jax import options as options_lib
from l2tl_jax import validation

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
        "score_every": 1,
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
        "score_every": 1,
    },
}
# Class weights from the per-class EMA of the validation-gradient alignment
# (estimators_alignment.alignment_update), scored every 4th outer step,
# starting exactly at uniform joint training: class weights 1 for the
# warm-up, alpha fixed (config.l2tl.fixed_alpha), 'mean' normalisation.
# Chosen by mean validation accuracy over the policy study's benchmarks
# among the estimators that start at uniform joint training (README.md).
# Its REINFORCE fields are the reference's.
L2TL_MODES["recommended"] = {**L2TL_MODES["reference"],
                             "estimator": "alignment_ema",
                             "src_normalization": "mean",
                             "score_every": 4}
DEFAULT_MODE = "recommended"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """config.model, read.

  Attributes:
    encoder: the encoder's registry name (`encoders`).
    encoder_kwargs: its keyword arguments (read-only mapping).
    dtype: 'float32' or 'bfloat16' (computation of a ResNet encoder).
    bn_mode: batch statistics of the joint batch (`outer.BN_MODES`).
    init_from: a weights file or checkpoint to start from; None: source
      pre-training.
    dont_load: regular expressions of parameter paths left fresh.
    preprocessing_from_weights: fill the data's preprocessing defaults from
      the weights' family.
  """

  encoder: str = "lenet"
  encoder_kwargs: Mapping[str, Any] = dataclasses.field(
      default_factory=lambda: types.MappingProxyType({}))
  dtype: str = "float32"
  bn_mode: str = "joint"
  init_from: str | None = None
  dont_load: tuple[str, ...] = ()
  preprocessing_from_weights: bool = True

  def kwargs(self) -> dict[str, Any]:
    """A fresh dict of the encoder's keyword arguments."""
    return dict(self.encoder_kwargs)


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """config.train or config.pretrain: Nesterov SGD and its schedule.

  decay_set of the target stage is resolved (the method's default where the
  config leaves None); seed is pre-training's own (the target stage uses
  RunSpec.seed).
  """

  steps: int
  batch_size: int
  lr: float
  lr_boundaries: tuple[int, ...]
  lr_scales: tuple[float, ...]
  momentum: float = 0.9
  weight_decay: float = 5e-4
  decay_set: str | None = None
  seed: int | None = None

  def as_dict(self) -> dict[str, Any]:
    """The config block's fields (None seed left out, as config.train has
    none)."""
    out = dataclasses.asdict(self)
    if out["seed"] is None:
      del out["seed"]
    return out


@dataclasses.dataclass(frozen=True)
class PolicySpec:
  """The policy's Adam, its piecewise rate and its table sizes (config.l2tl).
  """

  lr: float = 0.01
  lr_boundaries: tuple[int, ...] = (800,)
  lr_scales: tuple[float, ...] = (0.1,)
  num_levels: int = 100
  num_alpha_levels: int = 100
  val_batch_size: int = 32
  # config.l2tl.fixed_class_weights ('joint_fixed'); None: unset.
  fixed_class_weights: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """config.eval: full-split evaluation."""

  batch_size: int = 500
  every_steps: int = 100


@dataclasses.dataclass(frozen=True)
class HostSpec:
  """What the host loop and the files do; nothing compiled reads it."""

  log_every_steps: int = 50
  checkpoint_every_steps: int = 200
  checkpoints_to_keep: int = 2
  progress_bar: bool = True
  write_plots: bool = True
  pretrain_cache_dir: str | None = None
  parallelism: str = "auto"


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run, resolved and checked (see the module docstring)."""

  method: methods_lib.Method
  mode: str
  seed: int
  model: ModelSpec
  data: data.DataSpec
  pretrain: StageSpec
  train: StageSpec
  l2tl: options_lib.L2TLOptions | None
  policy: PolicySpec
  eval: EvalSpec
  host: HostSpec
  source_class_relevance: tuple[int, ...] | None = None
  config: dict[str, Any] = dataclasses.field(
      default_factory=dict, compare=False, repr=False)

  def device_batches(self, *, pretrains: bool) -> dict[str, int]:
    """The global batches split over the devices, by config field name:
    the target batch, the validation batch of a joint method, and the
    source pre-training batch when the run may pre-train."""
    out = {"train.batch_size": self.train.batch_size}
    if self.method.joint:
      out["l2tl.val_batch_size"] = self.policy.val_batch_size
    if pretrains:
      out["pretrain.batch_size"] = self.pretrain.batch_size
    return out

  def joint_batch_sizes(self) -> dict[str, int]:
    """Examples per outer step of each joint stream: 'src' N * M * B
    (inner steps N, oversampling M, target batch B), 'tgt' N * B and 'val'
    the validation batch (`L2TLOptions.joint_batch_sizes`)."""
    return self.l2tl.joint_batch_sizes(self.train.batch_size,
                                       self.policy.val_batch_size)

  def options(self, class_weights: tuple[float, ...] | None
              ) -> options_lib.L2TLOptions:
    """The L2TL options with the method's fixed class weights filled in (a
    joint method that does not learn them gets them once the task is
    known; `build.fixed_class_weights`)."""
    if class_weights is None:
      if self.l2tl.fixed_class_weights == ():
        raise ValueError(f"Method {self.method.name!r} needs its fixed class "
                         "weights (build.fixed_class_weights).")
      return self.l2tl
    return dataclasses.replace(self.l2tl,
                               fixed_class_weights=tuple(class_weights))


def resolve_config(config: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
  """A copy of `config` whose config.l2tl fields left None come from its mode.

  Explicitly set fields win. An unknown mode fills nothing:
  `from_config` reports it with the other fields.
  """
  out = config.copy_and_resolve_references()
  mode = out.l2tl.get("mode", DEFAULT_MODE)
  for name, value in L2TL_MODES.get(mode, {}).items():
    if out.l2tl.get(name) is None:
      out.l2tl[name] = value
  return out


def mode_problem(config: ml_collections.ConfigDict) -> str | None:
  """What is wrong with config.l2tl.mode (no key of `L2TL_MODES`), or None."""
  mode = config.l2tl.get("mode", DEFAULT_MODE)
  if mode in L2TL_MODES:
    return None
  return (f"config.l2tl.mode must be one of {', '.join(L2TL_MODES)}, got "
          f"{mode!r}")


def check_mode(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError when config.l2tl.mode names no mode (a config before
  `resolve_config`, which fills fields from the mode)."""
  problem = mode_problem(config)
  if problem:
    validation.raise_problems([problem])


def _tuple(value: Any) -> tuple | None:
  return None if value is None else tuple(value)


def _stage(block: Any, *, decay_set: str | None = None) -> StageSpec:
  return StageSpec(
      steps=block.steps, batch_size=block.batch_size, lr=block.lr,
      lr_boundaries=tuple(block.lr_boundaries),
      lr_scales=tuple(block.lr_scales), momentum=block.momentum,
      weight_decay=block.weight_decay,
      decay_set=decay_set or block.get("decay_set"),
      seed=block.get("seed"))


def model_spec(model: Any) -> ModelSpec:
  """config.model (a ConfigDict or a dict, e.g. a saved config.json's) read
  without checks: what rebuilding a saved run's model needs."""
  get = model.get
  kwargs = get("encoder_kwargs") or {}
  if hasattr(kwargs, "to_dict"):
    kwargs = kwargs.to_dict()
  d = ModelSpec()
  return ModelSpec(
      encoder=get("encoder", d.encoder),
      encoder_kwargs=types.MappingProxyType(dict(kwargs)),
      dtype=get("dtype", d.dtype) or d.dtype,
      bn_mode=get("bn_mode", d.bn_mode) or d.bn_mode,
      init_from=get("init_from") or None,
      dont_load=tuple(get("dont_load", ()) or ()),
      preprocessing_from_weights=bool(
          get("preprocessing_from_weights", d.preprocessing_from_weights)))


def _l2tl_options(config: ml_collections.ConfigDict,
                  method: methods_lib.Method, decay_set: str,
                  bn_mode: str) -> options_lib.L2TLOptions:
  """The joint method's options. Alpha is learned when the method learns it
  and the estimator can (the alignment estimators learn class weights only);
  a method with fixed class weights gets () here, its weights once the task
  is known (`RunSpec.options`)."""
  estimator = estimators.ESTIMATORS.get(config.l2tl.get("estimator"))
  learns_alpha = method.learns_alpha and (estimator is None
                                          or estimator.learns_alpha)
  return options_lib.L2TLOptions.from_config(
      config.l2tl,
      fixed_class_weights=None if method.class_weights == "learned" else (),
      fixed_alpha=None if learns_alpha else float(config.l2tl.fixed_alpha),
      weight_decay=config.train.weight_decay,
      decay_set=decay_set, bn_mode=bn_mode)


def from_config(config: ml_collections.ConfigDict, *,
                weights_family: str | None = None) -> RunSpec:
  """The RunSpec of a run config.

  Args:
    config: a run config (experiments/configs/default.py); its l2tl mode
      is applied to a copy.
    weights_family: the family of the weights config.model.init_from holds,
      once loaded: the data's preprocessing fields left at their defaults
      follow it (config.model.preprocessing_from_weights).

  Raises:
    ConfigError: every field of the wrong type, out of range or refused by
      the L2TL step, at once.
    DataError: the data block cannot be read.
  """
  config = resolve_config(config)
  problem = mode_problem(config)
  problems = [problem] if problem else []
  problems += validation.config_problems(config,
                                         unknown_mode=problem is not None)
  method = None
  if not problems:
    method = methods_lib.get(config.method)
  model = model_spec(config.model)
  options = None
  if method is not None and method.joint:
    try:  # The enumerations and combinations the L2TL step accepts.
      options = _l2tl_options(
          config, method, config.train.decay_set or method.default_decay_set,
          model.bn_mode)
    except ValueError as e:
      problems.append(f"config.l2tl: {e}")
  if problems:
    validation.raise_problems(problems)
  if weights_family is not None and model.preprocessing_from_weights:
    try:
      config.data = data.fill_preprocessing(config.data, weights_family)
    except data.DataError:  # No ImageNet preprocessing (e.g. our own LeNet).
      pass
  l2 = config.l2tl
  relevance = config.get("source_class_relevance")
  return RunSpec(
      method=method,
      mode=l2.get("mode", DEFAULT_MODE),
      seed=config.seed,
      model=model,
      data=data.data_spec(config.data),
      pretrain=_stage(config.pretrain),
      train=_stage(config.train, decay_set=(config.train.decay_set
                                            or method.default_decay_set)),
      l2tl=options,
      policy=PolicySpec(
          lr=l2.policy_lr, lr_boundaries=tuple(l2.policy_lr_boundaries),
          lr_scales=tuple(l2.policy_lr_scales), num_levels=l2.num_levels,
          num_alpha_levels=l2.num_alpha_levels,
          val_batch_size=l2.val_batch_size,
          fixed_class_weights=_tuple(l2.get("fixed_class_weights"))),
      eval=EvalSpec(batch_size=config.eval.batch_size,
                    every_steps=config.eval.every_steps),
      host=HostSpec(
          log_every_steps=config.log_every_steps,
          checkpoint_every_steps=config.checkpoint_every_steps,
          checkpoints_to_keep=config.checkpoints_to_keep,
          progress_bar=config.get("progress_bar", HostSpec.progress_bar),
          write_plots=config.get("write_plots", HostSpec.write_plots),
          pretrain_cache_dir=config.get("pretrain_cache_dir") or None,
          parallelism=config.parallelism),
      source_class_relevance=_tuple(relevance),
      config=json.loads(config.to_json_best_effort()),
  )
