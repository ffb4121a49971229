"""experiments/relevance.py and the source relevance report of report.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import compare
from experiments import relevance
from experiments import report
from experiments.configs import tiny
from l2tl_jax import train

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["a", "b", "c", "d"]
# Learned weights of three seeds, by hand:
#   seed 0: a .2, b .6, c .4, d .8 -> ranks a4 b2 c3 d1, median .5: b d above
#   seed 1: a .3, b .9, c .5, d .7 -> ranks a4 b1 c3 d2, median .6: b d above
#   seed 2: a .1, b .5, c .6, d .9 -> ranks a4 b3 c2 d1, median .55: c d above
# Means: d .8, b .6667, c .5, a .2. Ascending ranks (a, b, c, d): seed 0
# (1, 3, 2, 4), seed 1 (1, 4, 2, 3), seed 2 (1, 2, 3, 4); Spearman
# 1 - 6 sum d^2 / (n (n^2 - 1)): (0, 1) 1 - 12/60 = .8, (0, 2) .8,
# (1, 2) 1 - 36/60 = .4 -> mean 2/3.
WEIGHTS = [
    {"a": 0.2, "b": 0.6, "c": 0.4, "d": 0.8},
    {"a": 0.3, "b": 0.9, "c": 0.5, "d": 0.7},
    {"a": 0.1, "b": 0.5, "c": 0.6, "d": 0.9},
]
RELEVANCE = (0, 1, 0, 1)


def _learned(seed, weights, relevance=None):
  return {"status": "completed", "method": "l2tl", "seed": seed,
          "test_accuracy": 0.5, "val_accuracy": 0.5,
          "val_selected": {"step": 1, "val_accuracy": 0.5,
                           "test_accuracy": 0.5},
          "src_class_names": NAMES,
          "policy": {"expected_class_weights": weights,
                     "expected_alpha": 0.4},
          "task": {"source": "src_set", "target": "tgt_set"},
          "config": {"source_class_relevance": relevance}}


def _datl(seed, weights):
  return {"status": "completed", "method": "datl", "seed": seed,
          "test_accuracy": 0.5, "val_accuracy": 0.5,
          "src_class_names": NAMES, "datl_class_weights": weights}


def _plain(method, seed):
  return {"status": "completed", "method": method, "seed": seed,
          "test_accuracy": 0.5, "val_accuracy": 0.5,
          "val_selected": {"step": 1, "val_accuracy": 0.5,
                           "test_accuracy": 0.5},
          "src_class_names": NAMES}


def _runs(relevance_=None):
  return {
      "finetune": [(s, f"/f{s}", _plain("finetune", s)) for s in range(3)],
      "l2tl": [(s, f"/l{s}", _learned(s, w, relevance_))
               for s, w in enumerate(WEIGHTS)],
  }


def _write(run_dir, results):
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "results.json"), "w") as f:
    json.dump(results, f)


def _fake_comparison(root):
  for s, w in enumerate(WEIGHTS):
    _write(root / "runs" / "l2tl" / f"seed{s}", _learned(s, w, RELEVANCE))
    _write(root / "runs" / "finetune" / f"seed{s}", _plain("finetune", s))
    _write(root / "runs" / "datl" / f"seed{s}", _datl(s, {
        "a": 1.5, "b": 0.5, "c": 1.0, "d": 1.0}))
  (root / "pretrain").mkdir()
  return str(root)


def test_seed_ranks_by_hand():
  ranks = report.seed_ranks([[0.2, 0.6, 0.4, 0.8], [0.5, 0.9, 0.5, 0.1]])
  np.testing.assert_array_equal(ranks, [[4, 2, 3, 1], [2, 1, 2, 4]])


def test_mean_pairwise_spearman_by_hand():
  w = [[WEIGHTS[s][n] for n in NAMES] for s in range(3)]
  assert report.mean_pairwise_spearman(w) == pytest.approx(2 / 3)
  # One swapped pair of 4: rho = 1 - 6 * 2 / (4 * 15) = 0.8.
  assert report.mean_pairwise_spearman(
      [[1, 2, 3, 4], [2, 1, 3, 4]]) == pytest.approx(0.8)
  assert report.mean_pairwise_spearman([[0.5, 0.5], [0.1, 0.9]]) == 0.0
  assert report.mean_pairwise_spearman([[0.1, 0.9]]) is None


def test_classes_ranked_with_statistics_over_seeds():
  out = report.source_relevance(_runs(RELEVANCE))
  assert out["without_weights"] == ["finetune"]
  assert list(out["methods"]) == ["l2tl"]
  e = out["methods"]["l2tl"]
  assert e["kind"] == "learned"
  assert e["seeds"] == [0, 1, 2]
  assert e["spearman"] == pytest.approx(2 / 3)
  classes = e["classes"]
  assert [c["name"] for c in classes] == ["d", "b", "c", "a"]
  assert [c["rank"] for c in classes] == [1, 2, 3, 4]
  d, b, c, a = classes
  assert d["mean"] == pytest.approx(0.8)
  assert d["std"] == pytest.approx(0.1)  # Sample std of .8, .7, .9.
  assert b["mean"] == pytest.approx(2 / 3)
  # Deviations -1/15, 7/30, -1/6: sum of squares 0.0867 over 2 -> 0.2082.
  assert b["std"] == pytest.approx(np.sqrt((1 / 225 + 49 / 900 + 1 / 36) / 2))
  assert (b["min"], b["max"]) == (0.5, 0.9)
  assert b["per_seed"] == [0.6, 0.9, 0.5]
  assert [x["seed_ranks"] for x in classes] == [
      [1, 2, 1], [2, 1, 3], [3, 3, 2], [4, 4, 4]]
  assert [x["above_median"] for x in classes] == [3, 2, 1, 0]
  assert [x["relevant"] for x in classes] == [1, 1, 0, 0]
  assert out["notes"] == []


def test_datl_weights_one_seed_and_no_known_answer():
  runs = {"datl": [(0, "/d0", _datl(0, {"a": 2.0, "b": 0.5, "c": 1.0,
                                         "d": 1.0}))]}
  e = report.source_relevance(runs)["methods"]["datl"]
  assert e["kind"] == "datl"
  assert e["spearman"] is None and not e["has_relevance"]
  # Ties keep the source class order.
  assert [c["name"] for c in e["classes"]] == ["a", "c", "d", "b"]
  assert [c["seed_ranks"] for c in e["classes"]] == [[1], [2], [2], [4]]
  assert e["classes"][0]["std"] == 0.0
  text = report.relevance_markdown(report.source_relevance(runs))
  assert "| rank | source class | weight |" in text
  assert "| 1 | a | 2.000 |" in text and "rank per seed" not in text
  assert "fixed DATL weights" in text


def test_seeds_without_weights_and_mismatched_relevance_are_noted():
  runs = _runs((1, 0))  # Two entries for four classes.
  runs["l2tl"].append((3, "/l3", _plain("l2tl", 3)))
  out = report.source_relevance(runs)
  assert out["methods"]["l2tl"]["seeds"] == [0, 1, 2]
  assert not out["methods"]["l2tl"]["has_relevance"]
  assert any("seeds [3] have no source class weights" in n
             for n in out["notes"])
  assert any("source_class_relevance has 2 entries" in n for n in out["notes"])


def test_seeds_with_other_classes_are_refused():
  runs = _runs()
  runs["l2tl"][1][2]["policy"]["expected_class_weights"] = {"a": 1.0, "z": 0.}
  with pytest.raises(ValueError, match=r"seed 1 .* other source classes"):
    report.source_relevance(runs)


def test_markdown_rows_in_order():
  text = report.relevance_markdown(report.source_relevance(_runs(RELEVANCE)))
  assert text.startswith("## Source relevance\n")
  header = ("| rank | source class | weight mean ± std | min | max | "
            "rank per seed | above median | relevant |")
  rows = ["| 1 | d | 0.800 ± 0.100 | 0.700 | 0.900 | 1, 2, 1 | 3/3 | 1 |",
          "| 2 | b | 0.667 ± 0.208 | 0.500 | 0.900 | 2, 1, 3 | 2/3 | 1 |",
          "| 3 | c | 0.500 ± 0.100 | 0.400 | 0.600 | 3, 3, 2 | 1/3 | 0 |",
          "| 4 | a | 0.200 ± 0.100 | 0.100 | 0.300 | 4, 4, 4 | 0/3 | 0 |"]
  lines = text.splitlines()
  start = lines.index(header)
  assert lines[start + 2:start + 6] == rows
  assert "### l2tl: learned weights" in text
  assert "mean pairwise Spearman) 0.67" in text
  assert "above that seed's median weight" in text  # The column is defined.
  assert "No source class weights (not shown): finetune." in text
  # A long table shows its top and bottom.
  short = report.relevance_markdown(report.source_relevance(_runs()),
                                    max_rows=2)
  assert "Top and bottom 1 of 4 classes." in short
  assert "| 1 | d |" in short and "| 4 | a |" in short
  assert "| 2 | b |" not in short
  assert "| … | (2 classes not shown) | | | | | |" in short
  assert report.relevance_markdown({"methods": {}}) == ""


def test_summary_markdown_ends_with_the_section():
  summary = {
      "methods": {}, "std_kind": "x", "class_weights": {}, "notes": [],
      "protocol": report.protocol(tiny.get_config(), [], seeds=[0], rows=[]),
  }
  assert "Source relevance" not in report.summary_markdown(summary)
  summary["source_relevance"] = report.source_relevance(_runs())
  text = report.summary_markdown(summary)
  assert "\n## Source relevance\n" in text
  assert text.index("| 1 | d |") < text.index("| 4 | a |")


def test_plot_written(tmp_path):
  from l2tl_jax import plots_comparison  # pylint: disable=g-import-not-at-top
  out = report.source_relevance(_runs(RELEVANCE))
  path = plots_comparison.plot_source_relevance(out, str(tmp_path / "r.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert plots_comparison.plot_source_relevance(
      {"methods": {}}, str(tmp_path / "n.png")) is None
  assert not (tmp_path / "n.png").exists()
  # Many classes: the top and bottom are drawn.
  many = {f"c{i}": i / 100 for i in range(100)}
  runs = {"l2tl": [(0, "/x", {"src_class_names": list(many),
                               "policy": {"expected_class_weights": many}})]}
  assert plots_comparison.plot_source_relevance(
      report.source_relevance(runs), str(tmp_path / "m.png"), max_classes=10)


def test_report_of_a_comparison_folder(tmp_path, capsys):
  workdir = _fake_comparison(tmp_path / "cmp")
  os.makedirs(os.path.join(workdir, "runs", "l2tl", "seed3"))  # Unfinished.
  out = relevance.report_or_exit(workdir)
  assert list(out["methods"]) == ["datl", "l2tl"]  # The methods table order.
  assert out["without_weights"] == ["finetune"]
  assert out["methods"]["l2tl"]["has_relevance"]
  # Identical seeds agree fully.
  assert out["methods"]["datl"]["spearman"] == pytest.approx(1.0)
  assert out["unfinished"] == [os.path.join(workdir, "runs", "l2tl", "seed3")]
  with open(os.path.join(workdir, "relevance.md")) as f:
    text = f.read()
  assert text.startswith("# Source relevance: src_set -> tgt_set\n")
  assert "From 6 finished run(s)" in text
  assert "| 1 | d | 0.800 ± 0.100 |" in text
  assert "Unfinished runs (no results.json), left out: runs/l2tl/seed3." in text
  assert os.path.getsize(os.path.join(workdir, "source_relevance.png")) > 0
  printed = capsys.readouterr().out
  assert "| 4 | a | 0.200 ± 0.100 |" in printed
  assert "source_relevance.png" in printed


def test_report_of_one_run_and_of_a_seed_folder(tmp_path):
  run_dir = tmp_path / "run"
  _write(run_dir, _learned(4, WEIGHTS[0]))
  out = relevance.relevance_report(str(run_dir))
  assert out["methods"]["l2tl"]["seeds"] == [4]
  assert [c["name"] for c in out["methods"]["l2tl"]["classes"]] == [
      "d", "b", "c", "a"]
  with open(run_dir / "relevance.md") as f:
    assert "| 1 | d | 0.800 |" in f.read()
  workdir = _fake_comparison(tmp_path / "cmp")
  runs, unfinished = relevance.find_runs(os.path.join(workdir, "runs", "l2tl"))
  assert list(runs) == ["l2tl"] and not unfinished
  assert [s for s, _, _ in runs["l2tl"]] == [0, 1, 2]
  # A point of a target-size sweep: <method>/seed<s> without runs/.
  _write(tmp_path / "n5" / "l2tl" / "seed0", _learned(0, WEIGHTS[0]))
  (tmp_path / "n5" / "notes.txt").write_text("")
  runs, _ = relevance.find_runs(str(tmp_path / "n5"))
  assert list(runs) == ["l2tl"]


def _error(capsys, workdir):
  with pytest.raises(SystemExit) as info:
    relevance.report_or_exit(str(workdir))
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1
  return err


def test_errors_are_one_line(tmp_path, capsys):
  assert "is not a directory" in _error(capsys, tmp_path / "none")
  empty = tmp_path / "empty"
  empty.mkdir()
  assert "no results in" in _error(capsys, empty)
  (empty / "summary.json").write_text("{}")
  assert "summary.json is there but not the run folders" in _error(
      capsys, empty)
  unfinished = tmp_path / "unfinished"
  (unfinished / "runs" / "l2tl" / "seed0").mkdir(parents=True)
  assert "1 run folder(s) have no results.json yet" in _error(
      capsys, unfinished)
  plain = tmp_path / "plain"
  _write(plain / "runs" / "finetune" / "seed0", _plain("finetune", 0))
  err = _error(capsys, plain)
  assert "no source class weights" in err and "(finetune)" in err
  assert "l2tl_fixed_alpha, l2tl (learned) and datl (DATL, fixed)" in err
  damaged = tmp_path / "damaged"
  damaged.mkdir()
  (damaged / "results.json").write_text("{")
  assert "cannot read" in _error(capsys, damaged)


def test_comparison_writes_the_section_and_plot(tmp_path, monkeypatch):
  def fake(config, run_dir):
    if config.method == "l2tl":
      return _learned(config.seed, WEIGHTS[config.seed])
    return _plain(config.method, config.seed)

  monkeypatch.setattr(train, "train_and_evaluate", fake)
  workdir = tmp_path / "cmp"
  summary = compare.run_comparison(tiny.get_config(), str(workdir), seeds=2,
                                   methods=("finetune", "l2tl"))
  assert summary["source_relevance"]["methods"]["l2tl"]["seeds"] == [0, 1]
  with open(workdir / "summary.md") as f:
    text = f.read()
  assert "## Source relevance" in text
  # Seeds 0 and 1: d (.8, .7) .75, b (.6, .9) .75 (tie: source order), ...
  assert text.index("| 1 | b |") < text.index("| 2 | d |")
  assert (workdir / "source_relevance.png").exists()
  with open(workdir / "summary.json") as f:
    assert json.load(f)["source_relevance"] == json.loads(
        json.dumps(summary["source_relevance"]))


@pytest.mark.slow  # A subprocess.
def test_command_line(tmp_path):
  workdir = _fake_comparison(tmp_path / "cmp")
  out = subprocess.run(
      [sys.executable, "-m", "experiments.relevance", f"--workdir={workdir}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| 1 | d | 0.800 ± 0.100 |" in out.stdout
  assert os.path.exists(os.path.join(workdir, "relevance.md"))
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.relevance",
       f"--workdir={tmp_path / 'none'}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      f"error: {tmp_path / 'none'} is not a directory."]


def test_agreement_with_datl_per_seed_by_hand():
  # DATL ascending a < b < c < d. Learned ascending ranks (a, b, c, d):
  # seed 0 (1, 3, 2, 4): sum d^2 = 2, rho = 1 - 12/60 = 0.8; seed 1
  # (1, 4, 2, 3): 6, 0.4; seed 2 (1, 2, 3, 4): 1.0.
  ascending = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
  runs = {**_runs(), "datl": [(s, f"/d{s}", _datl(s, ascending))
                              for s in range(3)]}
  e = report.source_relevance(runs)["methods"]["l2tl"]
  assert e["datl_agreement"]["seeds"] == [0, 1, 2]
  assert e["datl_agreement"]["rank_corr"] == pytest.approx([0.8, 0.4, 1.0])
  assert e["datl_agreement"]["disagreeing_seeds"] == []
  assert "datl_agreement" not in report.source_relevance(runs)["methods"][
      "datl"]
  text = report.relevance_markdown(report.source_relevance(runs))
  assert "per seed (0, 1, 2): 0.80, 0.40, 1.00. No seed disagrees." in text
  # A run's own estimate comes first: seed 1 reversed, -0.4 with weights
  # that moved apart ((0.9 - 0.3) / 0.6 = 1.0 >= 0.1): it disagrees.
  runs["l2tl"][1][2]["datl_estimate"] = dict(zip("abcd", (0.4, 0.3, 0.2,
                                                          0.1)))
  e = report.source_relevance(runs)["methods"]["l2tl"]
  assert e["datl_agreement"]["rank_corr"] == pytest.approx([0.8, -0.4, 1.0])
  assert e["datl_agreement"]["disagreeing_seeds"] == [1]
  text = report.relevance_markdown(report.source_relevance(runs))
  assert "Seed 1 rank the classes against DATL" in text
  # Without DATL's weights anywhere: no agreement.
  assert "datl_agreement" not in report.source_relevance(_runs())[
      "methods"]["l2tl"]
