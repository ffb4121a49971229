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
from l2tl_jax import data
from l2tl_jax import spec as spec_lib
from l2tl_jax import train
from l2tl_jax import validation


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


def test_an_unknown_mode_is_a_config_error_listing_the_modes():
  config = default.get_config()
  config.l2tl.mode = "fast"
  message = ("config.l2tl.mode must be one of reference, meta_gradient, "
             "recommended, got 'fast'")
  with pytest.raises(validation.ConfigError, match=message):
    spec_lib.check_mode(config)
  # Reported with the other fields; the fields the mode would have filled
  # (still None) are not.
  resolved = train.resolve_config(default.get_config())
  resolved.l2tl.mode = "fast"
  resolved.l2tl.val_batch_size = None
  resolved.train.steps = 0
  with pytest.raises(validation.ConfigError) as info:
    spec_lib.from_config(resolved)
  assert str(info.value).startswith(
      f"2 config field(s) cannot be used: {message}; config.train.steps must "
      "be >= 1, got 0.")
  assert "val_batch_size" not in str(info.value)
  resolved.l2tl.mode = "reference"  # A known mode: the field is checked.
  resolved.l2tl.val_batch_size = 0
  with pytest.raises(validation.ConfigError, match="val_batch_size"):
    spec_lib.from_config(resolved)


def _no_runs(monkeypatch):
  def run_all(plan):
    raise AssertionError(f"{len(plan)} runs started")
  monkeypatch.setattr(study.runner, "run_all", run_all)


def test_configs_no_run_can_use_are_refused_before_the_first_run(
    tmp_path, monkeypatch):
  _no_runs(monkeypatch)
  config = tiny.get_config()
  config.data.data_dir = str(tmp_path / "tfds")
  config.l2tl.mode = "bogus"  # The finetune row follows the base mode.
  with pytest.raises(validation.ConfigError, match="config.l2tl.mode"):
    study.run_study(config, str(tmp_path / "s"), seeds=1,
                    variants=["finetune", "reinforce_reference"])
  config.l2tl.mode = "reference"
  config.train.steps = 0
  with pytest.raises(validation.ConfigError, match="config.train.steps"):
    study.run_study(config, str(tmp_path / "s"), seeds=1,
                    variants=["finetune"])
  config.train.steps = 6
  with pytest.raises(validation.ConfigError,
                     match="not divisible by the credit window 4"):
    study.run_study(config, str(tmp_path / "s"), seeds=1,
                    variants=["reinforce_paired_window4"])
  assert not os.path.exists(tmp_path / "s")


def test_a_known_answer_of_the_wrong_length_is_refused_before_any_run(
    tmp_path, monkeypatch):
  _no_runs(monkeypatch)
  config = tiny.get_config()  # 10 source digits.
  config.data.data_dir = str(tmp_path / "tfds")
  config.source_class_relevance = (1, 0, 1)
  with pytest.raises(data.DataError) as info:
    study.run_study(config, str(tmp_path / "s"), seeds=1,
                    variants=["finetune", "oracle"])
  assert str(info.value).startswith(
      "config.source_class_relevance has 3 entries, but the source has 10 "
      "classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)")
  config.source_class_relevance = (1, 1)
  with pytest.raises(validation.ConfigError, match="a 0 or 1 per source"):
    study.check_relevance(config)
  config.source_class_relevance = (1,) * 5 + (0,) * 5
  study.check_relevance(config)  # The right length.


def test_ranking_auc_by_hand():
  rel = (1, 1, 0, 0)
  assert study.ranking_auc([0.9, 0.8, 0.1, 0.2], rel) == 1.0
  assert study.ranking_auc([0.1, 0.2, 0.9, 0.8], rel) == 0.0
  # Pairs (rel, irrel): (.5,.4) win, (.5,.6) loss, (.4,.4) tie, (.4,.6) loss.
  assert study.ranking_auc([0.5, 0.4, 0.4, 0.6], rel) == pytest.approx(1.5 / 4)
  assert study.ranking_auc([0.3] * 4, rel) == 0.5  # All ties: chance.


def test_known_answer_rows():
  variants = study.known_answer_variants((1, 0, 1))
  assert set(variants) == set(study.ORACLE_VARIANTS)
  weights = {n: v.overrides["l2tl.fixed_class_weights"]
             for n, v in variants.items()}
  assert weights["oracle"] == (1.0, 0.0, 1.0)
  # C / #relevant = 3 / 2 on the relevant classes: mean 1 over the classes.
  assert weights["oracle_up"] == (1.5, 0.0, 1.5)
  assert weights["anti_oracle"] == (0.0, 1.0, 0.0)
  assert weights["uniform_at_start"] == (0.495,) * 3
  assert weights["oracle_at_start"] == (0.495, 0.0, 0.495)
  assert variants["oracle_at_start"].overrides["l2tl.fixed_alpha"] == 0.495
  assert all(v.method == "joint_fixed" for v in variants.values())
  # The oracles keep their weights as given ('mean'); the rows at the
  # policy's start keep the reference mode's normalisation.
  for name in ("oracle", "oracle_up", "anti_oracle"):
    assert variants[name].overrides["l2tl.src_normalization"] == "mean"
  for name in ("uniform_at_start", "oracle_at_start"):
    assert variants[name].overrides["l2tl.src_normalization"] == "reference"
  # One relevant class of four: weight 4.
  assert study.known_answer_variants((0, 1, 0, 0))["oracle_up"].overrides[
      "l2tl.fixed_class_weights"] == (0.0, 4.0, 0.0, 0.0)
  config = study.variant_config(fashion_tops.get_config(), variants["oracle"],
                                seed=0, pretrain_dir="/tmp/p")
  assert tuple(config.l2tl.fixed_class_weights) == (1.0, 0.0, 1.0)
  assert config.l2tl.src_normalization == "mean"
  assert config.l2tl.fixed_alpha == 1.0
  uniform = study.variant_config(fashion_tops.get_config(),
                                 study.VARIANTS["joint_uniform"], seed=0,
                                 pretrain_dir="/tmp/p")
  assert uniform.l2tl.src_normalization == "mean"
  for bad in ((1, 1), (0.5, 1, 0), ()):
    with pytest.raises(ValueError, match="source_class_relevance"):
      study.known_answer_variants(bad)
  # Only benchmarks with a known answer offer the oracle rows.
  with pytest.raises(ValueError, match="need config.source_class_relevance"):
    study.check_variants(["oracle"], 1, study.study_variants(
        fashion_tops.get_config()))
  from experiments.configs import corrupted
  study.check_variants(["oracle", "oracle_up", "datl"], 1,
                       study.study_variants(corrupted.get_config()))
  # DATL is a baseline of every study, run by default, with the reference's
  # normalisation whatever the recommended mode.
  assert study.VARIANTS["datl"].method == "datl"
  datl = study.variant_config(fashion_tops.get_config(), study.VARIANTS["datl"],
                              seed=0, pretrain_dir="/tmp/p")
  assert datl.l2tl.src_normalization == "reference"
  assert "datl" in study.DEFAULT_VARIANTS
  study.check_variants(["datl"], 1, study.study_variants(
      fashion_tops.get_config()))


def test_datl_weights_are_scored_as_class_weights():
  def result(test, weights):
    return {"test_accuracy": test, "val_accuracy": 0.5, "train_time_s": 1.0,
            "src_class_names": ["a", "b", "c"],
            "datl_class_weights": dict(zip("abc", weights))}
  row = study.summarize_variant("datl", study.VARIANTS["datl"], [
      (0, "/r/0", result(0.6, [1.0, 0.2, 0.5])),
      (1, "/r/1", result(0.7, [0.4, 0.3, 1.0]))])
  assert row["class_weights"]["per_seed"] == [[1.0, 0.2, 0.5],
                                              [0.4, 0.3, 1.0]]
  assert row["class_weights"]["mean"] == pytest.approx([0.7, 0.25, 0.75])
  assert "alpha_mean" not in row  # DATL's alpha is fixed.
  study.score_against_truth({"datl": row}, (1, 0, 1))
  # Both seeds rank a and c above b.
  assert row["auc"]["per_seed"] == [1.0, 1.0]


def test_scores_against_the_known_answer_by_hand():
  def row(test_mean, per_seed=None):
    out = {"test_mean": test_mean}
    if per_seed is not None:
      out["class_weights"] = {"names": ["a", "b", "c"], "per_seed": per_seed}
    return out
  rows = {"joint_uniform": row(0.60), "oracle": row(0.64),
          "l2tl": row(0.61, [[0.9, 0.1, 0.5], [0.2, 0.3, 0.4]])}
  study.score_against_truth(rows, (1, 0, 1))
  # Seed 0: a > b, c > b -> 1. Seed 1: a < b, c > b -> 0.5.
  assert rows["l2tl"]["auc"]["per_seed"] == [1.0, 0.5]
  assert rows["l2tl"]["auc"]["mean"] == 0.75
  assert rows["l2tl"]["auc"]["min"] == 0.5
  assert rows["l2tl"]["oracle_gap_closed"] == pytest.approx(0.25)
  assert rows["oracle"]["oracle_gap_closed"] == pytest.approx(1.0)
  assert rows["joint_uniform"]["oracle_gap_closed"] == 0.0
  assert rows["l2tl"]["oracle_gap"] == pytest.approx(0.04)
  assert rows["l2tl"]["gap_oracle"] == "oracle"
  # With the upweighted oracle present, the gap is to it: 0.68 - 0.60 =
  # 0.08; l2tl closes 0.01 / 0.08, the plain oracle 0.04 / 0.08.
  rows = {"joint_uniform": row(0.60), "oracle": row(0.64),
          "oracle_up": row(0.68), "l2tl": row(0.61)}
  study.score_against_truth(rows, (1, 0, 1))
  assert rows["l2tl"]["gap_oracle"] == "oracle_up"
  assert rows["l2tl"]["oracle_gap"] == pytest.approx(0.08)
  assert rows["l2tl"]["oracle_gap_closed"] == pytest.approx(0.125)
  assert rows["oracle"]["oracle_gap_closed"] == pytest.approx(0.5)
  assert rows["oracle_up"]["oracle_gap_closed"] == pytest.approx(1.0)
  # An oracle below uniform leaves no gap to close.
  flat = {"joint_uniform": row(0.60), "oracle": row(0.59)}
  study.score_against_truth(flat, (1, 0, 1))
  assert flat["oracle"]["oracle_gap_closed"] is None
  flat = {"joint_uniform": row(0.60), "oracle": row(0.64),
          "oracle_up": row(0.60)}
  study.score_against_truth(flat, (1, 0, 1))
  assert flat["oracle"]["oracle_gap_closed"] is None
  with pytest.raises(ValueError, match="has 2 entries, the source has 3"):
    study.score_against_truth({"l2tl": row(0.6, [[1, 2, 3]])}, (1, 0))


@pytest.mark.slow
def test_run_study_end_to_end(tmp_path):
  config = tiny.get_config()
  config.data.data_dir = str(tmp_path / "tfds")
  config.update_from_flattened_dict({
      "train.steps": 8, "eval.every_steps": 4, "log_every_steps": 4,
      "checkpoint_every_steps": 8, "write_plots": False,
      "train.lr_boundaries": (4,), "l2tl.policy_lr_boundaries": (4,)})
  # A made-up known answer: the first five source digits count.
  config.source_class_relevance = (1,) * 5 + (0,) * 5
  names = ["finetune", "reinforce_paired_loo4", "meta_gradient",
           "reinforce_paired_window4", "joint_uniform", "oracle", "datl",
           "oracle_up"]
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
  for name in names[1:4]:
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
  # The oracle ran with its fixed weights, and every learned row is scored.
  oracle = json.load(open(os.path.join(rows["oracle"]["run_dirs"][0],
                                       "config.json")))
  assert oracle["l2tl"]["fixed_class_weights"] == [1.0] * 5 + [0.0] * 5
  assert oracle["l2tl"]["src_normalization"] == "mean"
  up = json.load(open(os.path.join(rows["oracle_up"]["run_dirs"][0],
                                   "config.json")))
  assert up["l2tl"]["fixed_class_weights"] == [2.0] * 5 + [0.0] * 5
  for name in names[1:4] + ["datl"]:
    auc = rows[name]["auc"]
    assert auc["per_seed"] == [
        study.ranking_auc(w, config.source_class_relevance)
        for w in rows[name]["class_weights"]["per_seed"]]
  # DATL's weights are its estimate, scaled to a maximum of 1.
  datl = json.load(open(os.path.join(rows["datl"]["run_dirs"][0],
                                     "results.json")))
  assert rows["datl"]["class_weights"]["per_seed"][0] == [
      datl["datl_class_weights"][n] for n in datl["src_class_names"]]
  assert max(rows["datl"]["class_weights"]["per_seed"][0]) == 1.0
  assert rows["datl"]["gap_oracle"] == "oracle_up"
  gap = rows["oracle_up"]["test_mean"] - rows["joint_uniform"]["test_mean"]
  if gap > 0:
    assert rows["oracle_up"]["oracle_gap_closed"] == pytest.approx(1.0)
  markdown = open(os.path.join(workdir, "study.md")).read()
  assert "gap closed (to oracle_up)" in markdown
  for name in names:
    assert f"| {name} |" in markdown


@pytest.mark.parametrize("method,want", [
    ("finetune", {"tgt": 4}),
    # Source N * M * B = 2 * 3 * 4, target N * B, the validation batch.
    ("l2tl", {"src": 24, "tgt": 8, "val": 6}),
])
def test_step_rate_times_the_batches_of_the_run(monkeypatch, method, want):
  config = train.resolve_config(tiny.get_config())
  config.method = method
  config.update_from_flattened_dict({
      "train.batch_size": 4, "l2tl.val_batch_size": 6, "l2tl.inner_steps": 2,
      "l2tl.src_oversample": 3, "l2tl.estimator": "reinforce"})
  seen = {}

  def steps_per_second(step, state, batch, num_steps):
    del step, state, num_steps
    seen.update(batch if "src" in batch else {"tgt": batch})
    return 1.0

  monkeypatch.setattr(study.timing, "steps_per_second", steps_per_second)
  task = {"image_shape": (8, 8, 1), "src_class_names": list("abcdefghij"),
          "tgt_class_names": list("vwxyz")}
  assert study.step_rate(config, task, num_steps=1) == 1.0
  assert {k: len(v["label"]) for k, v in seen.items()} == want
  for name, b in seen.items():
    chex.assert_shape(b["image"], (want[name], 8, 8, 1))
    classes = 10 if name == "src" else 5
    assert 0 <= int(b["label"].min()) and int(b["label"].max()) < classes


def test_the_recommended_row_is_the_every4_alignment_row():
  # README command 1's 'recommended' rows equal the studies'
  # alignment_ema_every4 rows: the same options, only the mode's name apart.
  def options(name):
    config = study.variant_config(fashion_tops.get_config(),
                                  study.VARIANTS[name], seed=0,
                                  pretrain_dir="/tmp/unused")
    return spec_lib.from_config(config).l2tl

  recommended = options("recommended")
  assert recommended == options("alignment_ema_every4")
  assert recommended.score_every == 4
  assert options("alignment_ema").score_every == 1
