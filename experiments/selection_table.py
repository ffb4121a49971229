r"""Where selection pays: one table over finished policy studies.

  python -m experiments.selection_table \
      --studies=experiments/reports/study/mixed_domain_v2,... \
      [--policy=alignment_ema_every4] \
      [--policies=alignment_ema,reinforce_reference]

Reads each study's study.json (`experiments.study`) and prints two markdown
tables:

* per benchmark: the baselines (fine-tuning, uniform joint training, DATL),
  the upweighted oracle where the benchmark has a known answer, the policy's
  test accuracy, its ranking AUC (mean, min over seeds), the share of the
  oracle gap it closes, and a verdict against the best of fine-tuning and
  uniform joint training: 'pays' (above it by more than the larger of the
  two seed spreads), 'ties' (within it) or 'use <baseline>' (below it by
  more than the spread);
* per policy: last-step validation accuracy on every benchmark and its mean,
  the rule by which `mode=recommended` is chosen (validation only).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from absl import app
from absl import flags

from experiments import cli

BASELINES = ("finetune", "joint_uniform")


class StudyError(ValueError):
  """A path that holds no readable study summary."""


def _read_study(path: str) -> dict[str, Any]:
  """One study.json, checked for the fields the tables read."""
  try:
    with open(path) as f:
      study = json.load(f)
  except (OSError, ValueError) as e:
    raise StudyError(f"cannot read {path}: {e}") from e
  variants = study.get("variants") if isinstance(study, dict) else None
  if not isinstance(variants, dict) or not variants:
    raise StudyError(f"{path} is not a policy study summary (no 'variants'; "
                     "experiments.study writes study.json).")
  for name, row in variants.items():
    if not isinstance(row, dict) or not all(
        isinstance(row.get(k), (int, float))
        for k in ("test_mean", "test_std")):
      raise StudyError(f"{path}: variant {name!r} has no test_mean / "
                       "test_std.")
  return study


def load(path: str) -> dict[str, Any]:
  """A study's summary from its folder (or its study.json).

  'A+B': the variants of both studies of one benchmark (rows of B replace
  A's of the same name), e.g. a study of new variants beside an earlier
  one whose runs are not on this machine; named after A's folder.

  Raises:
    StudyError: a part that is empty, unreadable or no study summary.
  """
  if not all(part.strip() for part in path.split("+")):
    raise StudyError(f"{path!r} has an empty part: give 'A' or 'A+B' with "
                     "study folders (or study.json files).")
  merged = None
  for part in path.split("+"):
    if os.path.isdir(part):
      part = os.path.join(part, "study.json")
    study = _read_study(part)
    if merged is None:
      merged = study
    else:
      merged["variants"] = {**merged["variants"], **study["variants"]}
  merged["benchmark_name"] = os.path.basename(
      os.path.dirname(path.split("+")[0]) if path.split("+")[0].endswith(
          ".json") else os.path.normpath(path.split("+")[0]))
  return merged


def _cell(row: dict[str, Any] | None) -> str:
  if row is None:
    return "-"
  return f"{100 * row['test_mean']:.2f} ± {100 * row['test_std']:.2f}"


def verdict(policy: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
  """'pays', 'ties' or 'use <best baseline>' (test means and spreads)."""
  present = [b for b in BASELINES if b in rows]
  if not present:
    return "-"
  best = max(present, key=lambda b: rows[b]["test_mean"])
  spread = max(policy["test_std"], rows[best]["test_std"])
  diff = policy["test_mean"] - rows[best]["test_mean"]
  if diff > spread:
    return "pays"
  if diff >= -spread:
    return "ties"
  return f"use {best}"


def benchmark_table(studies: Sequence[dict[str, Any]], policy: str) -> str:
  """Markdown: one row per study, for `policy`."""
  lines = [
      f"| benchmark | finetune | joint_uniform | datl | oracle_up (gap / spread) "
      f"| {policy} | AUC mean (min) | oracle gap closed | verdict |",
      "|---|---|---|---|---|---|---|---|---|"]
  for s in studies:
    rows = s["variants"]
    row = rows.get(policy)
    oracle = rows.get("oracle_up")
    oracle_cell = "-"
    if oracle is not None and "joint_uniform" in rows:
      uniform = rows["joint_uniform"]
      gap = oracle["test_mean"] - uniform["test_mean"]
      spread = max(oracle["test_std"], uniform["test_std"])
      oracle_cell = f"{_cell(oracle)} ({100 * gap:+.2f} / {gap / spread:.1f})"
    auc = row.get("auc") if row else None
    auc_cell = f"{auc['mean']:.2f} ({auc['min']:.2f})" if auc else "-"
    closed = row.get("oracle_gap_closed") if row else None
    closed_cell = "-" if closed is None else f"{closed:.2f}"
    lines.append(
        f"| {s['benchmark_name']} | {_cell(rows.get('finetune'))} | "
        f"{_cell(rows.get('joint_uniform'))} | {_cell(rows.get('datl'))} | "
        f"{oracle_cell} | {_cell(row)} | {auc_cell} | {closed_cell} | "
        f"{verdict(row, rows) if row else '-'} |")
  return "\n".join(lines) + "\n"


def validation_table(studies: Sequence[dict[str, Any]],
                     policies: Sequence[str]) -> tuple[str, str | None]:
  """Markdown: validation accuracy per policy and benchmark, and the policy
  with the highest mean over the benchmarks where every policy ran (None
  when none has run on all)."""
  names = [s["benchmark_name"] for s in studies]
  lines = ["| policy | " + " | ".join(names) + " | mean val |",
           "|---|" + "---|" * (len(names) + 1)]
  means = {}
  for p in policies:
    vals = [s["variants"].get(p, {}).get("val_mean") for s in studies]
    cells = ["-" if v is None else f"{100 * v:.2f}" for v in vals]
    mean = (None if any(v is None for v in vals)
            else sum(vals) / len(vals))
    if mean is not None:
      means[p] = mean
    lines.append(f"| {p} | " + " | ".join(cells) + " | "
                 + ("-" if mean is None else f"{100 * mean:.2f}") + " |")
  best = max(means, key=means.get) if means else None
  return "\n".join(lines) + "\n", best


_STUDIES = flags.DEFINE_list(
    "studies", [], "Study folders (or study.json); A+B merges two studies of "
    "one benchmark.")
# The study rows of mode=recommended: its own, or the one it equals.
RECOMMENDED_ROWS = ("alignment_ema_every4", "recommended")
_POLICY = flags.DEFINE_string(
    "policy", None,
    "The policy of the per-benchmark table (default: the studies' row of "
    "mode=recommended, " + " or ".join(RECOMMENDED_ROWS) + ").")
_POLICIES = flags.DEFINE_list(
    "policies", ["alignment_ema_every4", "alignment_ema",
                 "alignment_reinforce", "l2rw", "reinforce_reference",
                 "meta_gradient"],
    "Policies of the validation table.")


def default_policy(studies: Sequence[dict[str, Any]]) -> str:
  """The first of RECOMMENDED_ROWS every study has (else the first)."""
  for name in RECOMMENDED_ROWS:
    if all(name in s["variants"] for s in studies):
      return name
  return RECOMMENDED_ROWS[0]


def check_policies(studies: Sequence[dict[str, Any]], policy: str,
                   policies: Sequence[str] | None) -> None:
  """Raises StudyError on policy names that no study holds (their rows
  would be all '-'); `policies` None: only `policy` is checked."""
  present = sorted({name for s in studies for name in s["variants"]})
  unknown = [p for p in dict.fromkeys([policy, *(policies or ())])
             if p not in present]
  if unknown:
    raise StudyError(f"{', '.join(unknown)} not in any of the studies; "
                     f"their variants: {', '.join(present)}.")
  if policies is not None and not policies:
    raise StudyError("--policies is empty; give policy (variant) names.")


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"Unexpected arguments: {argv[1:]}.")
  if not _STUDIES.value:
    cli.usage_error("--studies: give one or more study folders.")
  try:
    studies = [load(path) for path in _STUDIES.value]
  except StudyError as e:
    cli.usage_error(f"--studies: {e}")
  policy = _POLICY.value or default_policy(studies)
  try:  # The default --policies may name policies these studies lack.
    check_policies(studies, policy,
                   _POLICIES.value if flags.FLAGS["policies"].present
                   else None)
  except StudyError as e:
    cli.usage_error(f"--policy / --policies: {e}")
  print(benchmark_table(studies, policy))
  table, best = validation_table(studies, _POLICIES.value)
  print(table)
  print(f"highest mean validation accuracy: {best}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
