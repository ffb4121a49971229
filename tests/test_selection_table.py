"""The where-selection-pays table from study summaries, on hand-made rows."""

import json

import pytest

from experiments import selection_table


def _row(mean, std, val=None, auc=None, closed=None):
  row = {"test_mean": mean, "test_std": std, "val_mean": val}
  if auc is not None:
    row["auc"] = {"mean": auc[0], "min": auc[1]}
  if closed is not None:
    row["oracle_gap_closed"] = closed
  return row


def _study(name, **rows):
  return {"benchmark_name": name, "variants": rows}


def test_verdict_against_the_best_of_finetune_and_uniform():
  rows = {"finetune": _row(0.70, 0.01), "joint_uniform": _row(0.72, 0.005)}
  # Best baseline 0.72; spread max(policy std, 0.005).
  assert selection_table.verdict(_row(0.74, 0.01), rows) == "pays"
  assert selection_table.verdict(_row(0.725, 0.01), rows) == "ties"
  assert selection_table.verdict(_row(0.70, 0.01), rows) == "use joint_uniform"


def test_benchmark_table_rows():
  study = _study("crossed", finetune=_row(0.646, 0.007),
                 joint_uniform=_row(0.6636, 0.0083),
                 oracle_up=_row(0.6937, 0.0076),
                 alignment_ema=_row(0.70, 0.01, auc=(0.98, 0.9), closed=1.21))
  text = selection_table.benchmark_table([study], "alignment_ema")
  row = text.splitlines()[2]
  # Gap 3.01 points; spread 0.83 -> 3.6 spreads.
  assert "69.37 ± 0.76 (+3.01 / 3.6)" in row
  assert "| 70.00 ± 1.00 | 0.98 (0.90) | 1.21 | pays |" in row


def test_validation_table_picks_the_best_mean_over_complete_rows():
  a = _study("a", p=_row(0, 0, val=0.70), q=_row(0, 0, val=0.80))
  b = _study("b", p=_row(0, 0, val=0.90), q=_row(0, 0, val=0.70),
             r=_row(0, 0, val=0.99))
  text, best = selection_table.validation_table([a, b], ["p", "q", "r"])
  assert best == "p"  # 0.80 vs 0.75; r did not run on 'a'.
  assert "| p | 70.00 | 90.00 | 80.00 |" in text
  assert "| r | - | 99.00 | - |" in text


def test_two_studies_of_one_benchmark_merge(tmp_path):
  old, new = tmp_path / "bench", tmp_path / "bench_new"
  old.mkdir(), new.mkdir()
  (old / "study.json").write_text(json.dumps(
      {"variants": {"a": _row(0.5, 0.1), "b": _row(0.6, 0.1)}}))
  (new / "study.json").write_text(json.dumps(
      {"variants": {"b": _row(0.7, 0.1), "c": _row(0.8, 0.1)}}))
  study = selection_table.load(f"{old}+{new}")
  assert study["benchmark_name"] == "bench"
  assert {k: v["test_mean"] for k, v in study["variants"].items()} == {
      "a": 0.5, "b": 0.7, "c": 0.8}


def test_paths_without_a_study_are_refused_in_one_line(tmp_path):
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "study.json").write_text(json.dumps({"x": 1}))
  (tmp_path / "rowless").mkdir()
  (tmp_path / "rowless" / "study.json").write_text(json.dumps(
      {"variants": {"a": {"val_mean": 0.5}}}))
  for path, match in ((tmp_path / "none", "cannot read"),
                      (tmp_path / "other", "is not a policy study summary"),
                      (tmp_path / "rowless", "'a' has no test_mean"),
                      (f"{tmp_path / 'other'}+", "has an empty part")):
    with pytest.raises(selection_table.StudyError, match=match) as info:
      selection_table.load(str(path))
    assert "\n" not in str(info.value)


def test_policies_no_study_holds_are_refused():
  studies = [_study("a", p=_row(0, 0)), _study("b", q=_row(0, 0))]
  selection_table.check_policies(studies, "p", ["p", "q"])
  selection_table.check_policies(studies, "q", None)
  with pytest.raises(selection_table.StudyError,
                     match="^pq, x not in any of the studies; their "
                     "variants: p, q.$"):
    selection_table.check_policies(studies, "pq", ["p", "x", "x"])
  with pytest.raises(selection_table.StudyError, match="--policies is empty"):
    selection_table.check_policies(studies, "p", [])


def test_the_default_policy_is_the_recommended_modes_row():
  every4 = _study("a", alignment_ema_every4=_row(0, 0), recommended=_row(0, 0))
  assert selection_table.default_policy([every4]) == "alignment_ema_every4"
  # A study of the README's first command has the 'recommended' row only.
  quick = _study("b", recommended=_row(0, 0))
  assert selection_table.default_policy([quick]) == "recommended"
  assert selection_table.default_policy([every4, quick]) == "recommended"
  assert selection_table.default_policy([_study("c", p=_row(0, 0))]) == (
      "alignment_ema_every4")
