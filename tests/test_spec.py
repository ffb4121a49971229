"""The RunSpec: a run config read once, checked at once, frozen."""

import dataclasses
import json
import pathlib
import re

import pytest

from experiments.configs import default
from experiments.configs import tiny
from l2tl_jax import spec as spec_lib
from l2tl_jax import validation

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_default_config_is_the_specs_defaults():
  # default.py is the commented user-facing file; the spec's dataclasses
  # hold the same defaults (one value each, checked here).
  spec = spec_lib.from_config(default.get_config())
  assert spec.model == spec_lib.ModelSpec()
  assert spec.eval == spec_lib.EvalSpec()
  assert spec.host == spec_lib.HostSpec()
  assert spec.policy == spec_lib.PolicySpec()  # The mode's rate and batch.
  assert spec.mode == spec_lib.DEFAULT_MODE == "recommended"
  assert spec.method.name == "l2tl" and spec.seed == 0
  assert spec.pretrain == spec_lib.StageSpec(
      steps=2000, batch_size=128, lr=0.01, lr_boundaries=(500, 1500),
      lr_scales=(0.1, 0.01), momentum=0.9, weight_decay=5e-4,
      decay_set="kernels", seed=0)
  # The target stage's decay set is the method's where the config leaves it.
  assert spec.train == spec_lib.StageSpec(
      steps=1200, batch_size=8, lr=0.005, lr_boundaries=(800,),
      lr_scales=(0.1,), decay_set=spec.method.default_decay_set)


def test_the_mode_is_applied_once_and_the_config_is_not_changed():
  config = tiny.get_config()
  assert config.l2tl.estimator is None
  spec = spec_lib.from_config(config)
  assert config.l2tl.estimator is None  # The input is left as it was.
  assert spec.config["l2tl"]["estimator"] == "alignment_ema"
  assert (spec.l2tl.estimator, spec.l2tl.src_normalization,
          spec.l2tl.fixed_alpha, spec.l2tl.score_every) == (
              "alignment_ema", "mean", 1.0, 4)
  assert spec.l2tl.learns_classes
  config.l2tl.mode = "reference"
  ref = spec_lib.from_config(config)
  assert (ref.l2tl.estimator, ref.l2tl.src_normalization,
          ref.l2tl.fixed_alpha, ref.l2tl.score_every) == (
              "reinforce", "reference", None, 1)
  config.l2tl.src_normalization = "mean"  # A field set explicitly wins.
  assert spec_lib.from_config(config).l2tl.src_normalization == "mean"
  config.l2tl.mode = "recommended"
  config.l2tl.score_every = 1
  assert spec_lib.from_config(config).l2tl.score_every == 1
  config.l2tl.mode = "meta_gradient"
  config.l2tl.score_every = None
  assert spec_lib.from_config(config).l2tl.score_every == 1


def test_every_problem_is_reported_at_once():
  config = default.get_config()
  config.l2tl.mode = "fast"
  config.train.steps = 0
  config.model.dtype = "float16"
  with pytest.raises(validation.ConfigError) as info:
    spec_lib.from_config(config)
  message = str(info.value)
  assert message.startswith("3 config field(s) cannot be used: "
                            "config.l2tl.mode must be one of reference, "
                            "meta_gradient, recommended, got 'fast'")
  assert "config.train.steps must be >= 1, got 0" in message
  assert "config.model.dtype must be 'float32' or 'bfloat16'" in message
  # The L2TL step's own checks join the others.
  config = default.get_config()
  config.l2tl.reward = "top5"
  with pytest.raises(validation.ConfigError, match="config.l2tl: reward"):
    spec_lib.from_config(config)
  # A problem that ends its own sentence is not given a second full stop.
  config = default.get_config()
  config.l2tl.alignment_normalize = "batch"
  with pytest.raises(validation.ConfigError) as info:
    spec_lib.from_config(config)
  assert str(info.value).endswith(
      "alignment_normalize must be one of ('step', 'run'), got 'batch'. Fix "
      "them (--config.FIELD=VALUE) and rerun.")


def test_the_joint_batch_sizes_are_the_runs():
  spec = spec_lib.from_config(default.get_config())
  # B = 8, M = 2, N = 1, the mode's validation batch 32.
  assert spec.joint_batch_sizes() == {"src": 16, "tgt": 8, "val": 32}
  config = default.get_config()
  config.train.batch_size = 5
  config.l2tl.src_oversample = 4
  config.l2tl.inner_steps = 3
  config.l2tl.val_batch_size = 7
  config.l2tl.mode = "reference"
  assert spec_lib.from_config(config).joint_batch_sizes() == {
      "src": 60, "tgt": 15, "val": 7}
  assert spec_lib.from_config(config).device_batches(pretrains=True) == {
      "train.batch_size": 5, "l2tl.val_batch_size": 7,
      "pretrain.batch_size": 128}
  config.method = "finetune"
  assert spec_lib.from_config(config).device_batches(pretrains=False) == {
      "train.batch_size": 5}


def test_fixed_class_weights_are_filled_in_once_the_task_is_known():
  config = tiny.get_config()
  config.method = "joint_uniform"
  spec = spec_lib.from_config(config)
  assert spec.l2tl.fixed_class_weights == () and not spec.l2tl.learns_classes
  assert spec.options((1.0, 1.0, 1.0)).fixed_class_weights == (1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="needs its fixed class weights"):
    spec.options(None)
  config.method = "finetune"
  assert spec_lib.from_config(config).l2tl is None


def test_the_spec_is_frozen_and_its_config_is_json():
  spec = spec_lib.from_config(tiny.get_config())
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.seed = 3
  with pytest.raises(TypeError):
    spec.model.encoder_kwargs["hidden"] = 3
  assert json.loads(json.dumps(spec.config)) == spec.config
  assert spec.config["method"] == "l2tl"


def test_no_configdict_below_the_door():
  # Only the modules that read configs name ml_collections: the RunSpec and
  # its checks, train (the entry), the data block's reader and default, and
  # what reads a saved run's data block back through that reader.
  door = {"spec.py", "validation.py", "train.py", "saved_run.py",
          "data/config.py", "data/parse.py", "data/tasks.py",
          "data/checks.py"}
  found = {str(p.relative_to(REPO / "l2tl_jax"))
           for p in (REPO / "l2tl_jax").rglob("*.py")
           if re.search(r"ml_collections|ConfigDict", p.read_text())}
  assert found <= door, sorted(found - door)
