"""Run plots from synthetic workdir files; comparison and sweep plots."""

import json
import os

from matplotlib import image as mpimg
import numpy as np
import pytest

from l2tl_jax import plots
from l2tl_jax import plots_comparison

NUM_SRC = 6
SRC_NAMES = [f"class_{i}" for i in range(NUM_SRC)]


def _log_record(step, *, policy=True, alpha=True, classes=True, src=True):
  record = {"step": step, "train/tgt_loss": 2.0 / step, "steps_per_s": 10.0}
  if src:
    record["train/src_loss"] = 3.0 / step
  if policy:
    record.update({"policy/reward": 0.1 * step, "policy/baseline": 0.09 * step,
                   "policy/advantage": 0.01 * step})
    if alpha:
      record["policy/alpha"] = 0.5 + 0.01 * step
      record["policy/expected_alpha"] = 0.5
    if classes:
      record["policy/expected_class_weights"] = list(
          np.linspace(0.2, 0.8, NUM_SRC) * step / 10)
  return record


def _write_run(workdir, *, method="l2tl", results=True, **log_kw):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for step in range(2, 12, 2):
      f.write(json.dumps(_log_record(step, **log_kw)) + "\n")
      if step % 4 == 0:
        f.write(json.dumps({"step": step, "eval/val_accuracy": 0.1 * step,
                            "eval/val_loss": 1.0}) + "\n")
  if results:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({"method": method, "test_accuracy": 0.7,
                 "val_selected": {"step": 8, "val_accuracy": 0.8,
                                  "test_accuracy": 0.72},
                 "src_class_names": SRC_NAMES}, f)
  return str(workdir)


def _assert_png(path):
  assert os.path.getsize(path) > 1000
  pixels = mpimg.imread(path)
  assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
  assert pixels.shape[0] > 200 and pixels.shape[1] > 300
  assert pixels.std() > 0.01  # Not a blank canvas.


def _names(paths):
  return sorted(os.path.basename(p) for p in paths)


def test_l2tl_run_gets_every_panel(tmp_path):
  workdir = _write_run(tmp_path / "l2tl")
  paths = plots.plot_run(workdir)
  assert _names(paths) == ["accuracy.png", "alpha.png", "class_weights.png",
                           "reward.png"]
  for path in paths:
    assert os.path.dirname(path) == os.path.join(workdir, "plots")
    _assert_png(path)
  assert sorted(os.listdir(os.path.join(workdir, "plots"))) == _names(paths)


def test_finetune_run_skips_policy_panels(tmp_path):
  workdir = _write_run(tmp_path / "ft", method="finetune", policy=False,
                       src=False)
  paths = plots.plot_run(workdir)
  assert _names(paths) == ["accuracy.png"]
  _assert_png(paths[0])


def test_fixed_alpha_run_has_sampled_alpha_and_class_weights(tmp_path):
  workdir = _write_run(tmp_path / "fixed", method="l2tl_fixed_alpha")
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(l) for l in f]
  for r in records:
    r.pop("policy/expected_alpha", None)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  assert _names(plots.plot_run(workdir)) == [
      "accuracy.png", "alpha.png", "class_weights.png", "reward.png"]


def test_joint_run_without_learned_weights(tmp_path):
  workdir = _write_run(tmp_path / "joint", method="joint_uniform",
                       alpha=False, classes=False)
  assert _names(plots.plot_run(workdir)) == ["accuracy.png", "reward.png"]


def test_missing_files_and_partial_data(tmp_path):
  assert plots.plot_run(str(tmp_path / "empty")) == []
  assert not os.path.exists(tmp_path / "empty" / "plots")
  # A log but no results.json (e.g. an interrupted run): no test line.
  workdir = _write_run(tmp_path / "partial", results=False)
  assert "accuracy.png" in _names(plots.plot_run(workdir))
  # Class names of the wrong length fall back to indices.
  path = plots.plot_class_weights(
      [_log_record(2)], ["a", "b"], str(tmp_path / "cw.png"))
  _assert_png(path)


def test_many_source_classes(tmp_path):
  records = [{"step": s, "policy/expected_class_weights":
              list(np.random.RandomState(s).rand(150))} for s in (5, 10, 15)]
  path = plots.plot_class_weights(records, [f"c{i}" for i in range(150)],
                                  str(tmp_path / "many.png"))
  _assert_png(path)


def test_comparison_and_sweep_plots(tmp_path):
  summary = {"std_kind": "sample std over seeds (ddof=1)", "methods": {
      "finetune": {"mean": 0.6, "std": 0.05, "per_seed": [0.55, 0.6, 0.65]},
      "finetune (val-selected)": {"mean": 0.62, "std": 0.0,
                                  "per_seed": [0.62, 0.62, 0.62]},
      "l2tl": {"mean": 0.7, "std": 0.1, "per_seed": [0.6, 0.7, 0.8]},
  }}
  path = plots_comparison.plot_comparison(summary,
                                          str(tmp_path / "out" / "cmp.png"))
  _assert_png(path)
  sweep = {"methods": {
      name: [{"target_per_class": k, "mean": 0.5 + 0.01 * k, "std": 0.02}
             for k in (20, 5, 10)]
      for name in ("finetune", "l2tl", "l2tl (val-selected)")}}
  path = plots_comparison.plot_target_size_sweep(sweep,
                                                 str(tmp_path / "sweep.png"))
  _assert_png(path)
  # Only the finished files: the temporary ones were renamed.
  assert os.listdir(tmp_path / "out") == ["cmp.png"]


def test_meta_gradient_signal_plot(tmp_path):
  records = [{"step": s, "policy/meta_objective": 1.0 / s,
              "policy/grad_norm": 0.1 / s} for s in range(1, 20)]
  _assert_png(plots.plot_reward(records, str(tmp_path / "reward.png")))
  assert plots.plot_reward([{"step": 1, "train/tgt_loss": 1.0}],
                           str(tmp_path / "none.png")) is None


def test_study_weights_plot(tmp_path):
  def row(mean, rho):
    return {"class_weights": {"names": SRC_NAMES, "mean": mean,
                              "std": [0.05] * NUM_SRC},
            "spearman": rho}
  summary = {"benchmark": "a -> b", "base_config": {"l2tl": {"num_levels": 100}},
             "variants": {
                 "finetune": {"test_mean": 0.6},  # No weights: no bars.
                 "meta_gradient": row(np.linspace(0.1, 0.9, NUM_SRC).tolist(),
                                      0.8),
                 "reinforce_reference": row([0.495] * NUM_SRC, None),
             }}
  _assert_png(plots_comparison.plot_study_weights(summary,
                                                  str(tmp_path / "w.png")))
  del summary["variants"]["meta_gradient"]
  del summary["variants"]["reinforce_reference"]
  assert plots_comparison.plot_study_weights(
      summary, str(tmp_path / "none.png")) is None
  assert not os.path.exists(tmp_path / "none.png")
  # experiments/study.py reads it as plots.plot_study_weights.
  assert plots.plot_study_weights is plots_comparison.plot_study_weights


def test_no_pyplot_figures_leak(tmp_path):
  pyplot = pytest.importorskip("matplotlib.pyplot")
  before = pyplot.get_fignums()
  plots.plot_run(_write_run(tmp_path / "run"))
  assert pyplot.get_fignums() == before
