"""The comparison report's per-class table, from hand-made results."""

from experiments import report
from l2tl_jax import plots_comparison


def _runs():
  a = [{"test_per_class_accuracy": {"shirt": 0.5, "coat": 1.0}},
       {"test_per_class_accuracy": {"shirt": 0.7, "coat": 0.8}}]
  b = [{"test_per_class_accuracy": {"shirt": 0.9, "coat": None}},
       {"test_per_class_accuracy": {"shirt": 0.9, "coat": 0.4}}]
  old = [{"test_accuracy": 0.5}]  # Predates per-class results.
  return {"finetune": [(s, f"d{s}", r) for s, r in enumerate(a)],
          "l2tl": [(s, f"e{s}", r) for s, r in enumerate(b)],
          "scratch": [(0, "f0", old[0])]}


def test_per_class_summary_means_and_sample_stds():
  out = report.per_class_summary(_runs())
  assert out["classes"] == ["shirt", "coat"]
  assert set(out["methods"]) == {"finetune", "l2tl"}
  ft = out["methods"]["finetune"]
  assert ft["seeds"] == 2
  assert abs(ft["mean"]["shirt"] - 60.0) < 1e-9
  assert abs(ft["std"]["shirt"] - 14.142135623730951) < 1e-9  # ddof=1
  assert abs(ft["mean"]["coat"] - 90.0) < 1e-9
  l2 = out["methods"]["l2tl"]
  # A class without test examples in one seed: the mean of the others.
  assert abs(l2["mean"]["coat"] - 40.0) < 1e-9
  assert l2["std"]["shirt"] == 0.0
  assert report.per_class_summary({"scratch": _runs()["scratch"]}) is None


def test_per_class_markdown_bolds_the_best_of_each_class():
  text = report.per_class_markdown(report.per_class_summary(_runs()))
  lines = text.splitlines()
  assert lines[0] == "## Per target class"
  assert "| target class | finetune | l2tl |" in lines
  assert "| shirt | 60.00 ± 14.14 | **90.00 ± 0.00** |" in lines
  assert "| coat | **90.00 ± 14.14** | 40.00 |" in lines  # One seed.
  assert report.per_class_markdown(None) == ""


def test_comparison_plot_with_the_per_class_panel(tmp_path):
  summary = {"std_kind": "sample std", "methods": {
      "finetune": {"mean": 0.6, "std": 0.1, "per_seed": [0.5, 0.7]},
      "l2tl": {"mean": 0.7, "std": 0.0, "per_seed": [0.7, 0.7]}},
             "per_class": report.per_class_summary(_runs())}
  path = plots_comparison.plot_comparison(summary, str(tmp_path / "cmp.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
