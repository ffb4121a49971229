"""experiments/study.py and the config modes: variants, statistics, files."""

import json
import os

import chex
import numpy as np
import pytest

from experiments import study
from experiments.configs import default
from experiments.configs import fashion_tops
from experiments.configs import tiny
from l2tl_jax import train


def test_mean_pairwise_spearman_by_hand():
  # Pairs (0, 1): rho 1; (0, 2) and (1, 2): rho -1 -> mean -1/3.
  weights = [[0.1, 0.5, 0.9], [0.2, 0.3, 0.4], [0.9, 0.5, 0.1]]
  assert study.mean_pairwise_spearman(weights) == pytest.approx(-1 / 3)
  # Ranks only: a monotone transform changes nothing.
  assert study.mean_pairwise_spearman(
      [[1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 5.0, 9.0]]) == pytest.approx(1.0)
  # One swapped pair of 4: rho = 1 - 6 * 2 / (4 * 15) = 0.8.
  assert study.mean_pairwise_spearman(
      [[1, 2, 3, 4], [2, 1, 3, 4]]) == pytest.approx(0.8)
  # A constant row has no ranking: it counts as 0.
  assert study.mean_pairwise_spearman([[0.5, 0.5], [0.1, 0.9]]) == 0.0
  assert study.mean_pairwise_spearman([[0.1, 0.9]]) is None


def test_variant_config_window_keeps_model_steps():
  base = fashion_tops.get_config()
  config = study.variant_config(
      base, study.VARIANTS["reinforce_paired_window4"], seed=3,
      pretrain_dir="/tmp/p")
  assert (config.method, config.seed) == ("l2tl", 3)
  assert config.l2tl.inner_steps == 4
  assert config.train.steps == 300  # 300 outer steps = 1200 model steps.
  assert config.train.lr_boundaries == (800,)  # Counted in model steps.
  assert tuple(config.l2tl.policy_lr_boundaries) == (200,)
  assert config.eval.every_steps == 25
  assert config.l2tl.reward == "loss_improvement"
  assert config.l2tl.policy_lr == 0.1
  # The base config is untouched.
  assert base.train.steps == 1200 and base.l2tl.inner_steps == 1


def test_variants_start_from_the_reference_mode():
  base = fashion_tops.get_config()  # Recommended mode.
  ref = study.variant_config(base, study.VARIANTS["reinforce_reference"],
                             seed=0, pretrain_dir="/tmp/p")
  for name, value in train.L2TL_MODES["reference"].items():
    assert ref.l2tl[name] == value, name
  meta = study.variant_config(base, study.VARIANTS["meta_gradient"], seed=0,
                              pretrain_dir="/tmp/p")
  assert meta.l2tl.estimator == "meta_gradient"
  assert meta.l2tl.reward == "accuracy"  # Unused by the estimator.


def test_variant_config_errors():
  base = fashion_tops.get_config()
  with pytest.raises(KeyError, match="l2tl.no_such_field"):
    study.variant_config(
        base, study.Variant("l2tl", {"l2tl.no_such_field": 1}), seed=0,
        pretrain_dir="/tmp/p")
  base.train.steps = 1201
  with pytest.raises(ValueError, match="not divisible by the credit window 4"):
    study.variant_config(base, study.VARIANTS["reinforce_paired_window4"],
                         seed=0, pretrain_dir="/tmp/p")
  with pytest.raises(ValueError, match="Variants must be distinct names"):
    study.run_study(base, "/tmp/unused", seeds=1, variants=["nope"])


def test_modes_fill_only_unset_fields():
  config = default.get_config()
  assert config.l2tl.mode == "recommended"
  assert config.l2tl.reward is None
  resolved = train.resolve_config(config)
  for name, value in train.L2TL_MODES["recommended"].items():
    assert resolved.l2tl[name] == value, name
  assert config.l2tl.reward is None  # The input is not changed.
  config.l2tl.mode = "reference"
  config.l2tl.policy_lr = 0.3  # Explicit fields win.
  resolved = train.resolve_config(config)
  assert resolved.l2tl.policy_lr == 0.3
  assert resolved.l2tl.estimator == "reinforce"
  assert resolved.l2tl.reward == "accuracy"
  config.l2tl.mode = "fast"
  with pytest.raises(ValueError, match="mode must be one of"):
    train.resolve_config(config)


@pytest.mark.slow
def test_run_study_end_to_end(tmp_path):
  config = tiny.get_config()
  config.data.data_dir = str(tmp_path / "tfds")
  config.update_from_flattened_dict({
      "train.steps": 8, "eval.every_steps": 4, "log_every_steps": 4,
      "checkpoint_every_steps": 8, "write_plots": False,
      "train.lr_boundaries": (4,), "l2tl.policy_lr_boundaries": (4,)})
  names = ["finetune", "reinforce_paired_loo4", "meta_gradient",
           "reinforce_paired_window4"]
  workdir = str(tmp_path / "study")
  summary = study.run_study(config, workdir, seeds=2, variants=names,
                            bench_steps=2)
  assert list(summary["variants"]) == names
  for name in ("study.json", "study.md", "class_weights.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "study.json")) as f:
    assert json.load(f)["variants"].keys() == summary["variants"].keys()
  rows = summary["variants"]
  assert "class_weights" not in rows["finetune"]
  for name in names[1:]:
    row = rows[name]
    w = np.asarray(row["class_weights"]["per_seed"])
    chex.assert_shape(w, (2, 10))  # 2 seeds x the 10 source digits.
    np.testing.assert_allclose(row["class_weights"]["mean"], w.mean(0))
    assert row["spearman"] == pytest.approx(study.mean_pairwise_spearman(w))
    assert row["step_time_vs_finetune"] > 1.0
    # The ratio is of step times: finetune's steps/s over this variant's.
    assert row["step_time_vs_finetune"] == pytest.approx(
        rows["finetune"]["steps_per_s"] / row["steps_per_s"])
    per_seed = [
        json.load(open(os.path.join(d, "results.json")))["test_accuracy"]
        for d in row["run_dirs"]]
    assert row["test_per_seed"] == per_seed
    assert row["test_mean"] == pytest.approx(np.mean(per_seed))
    assert row["test_std"] == pytest.approx(np.std(per_seed, ddof=1))
  # The window variant ran 2 outer steps of 4 model steps.
  window = json.load(open(os.path.join(
      rows["reinforce_paired_window4"]["run_dirs"][0], "results.json")))
  assert window["steps"] == 2
  markdown = open(os.path.join(workdir, "study.md")).read()
  for name in names:
    assert f"| {name} |" in markdown
