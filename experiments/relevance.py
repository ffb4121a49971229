r"""Which source classes helped: the source relevance report of a finished run.

  python -m experiments.relevance --workdir=DIR [--max_rows=40]

DIR is one finished run (DIR/results.json, e.g. of experiments.main), a
comparison (experiments.compare: DIR/runs/<method>/seed<s>/results.json), a
policy study (experiments.study: DIR/runs/<variant>/seed<s>), one point of a
target-size sweep (DIR/sweep/n<k>: <method>/seed<s>) or one method's folder
of seeds (DIR/seed<s>). Per method with source class weights (learned by the
policy: results['policy']['expected_class_weights']; DATL's fixed ones:
results['datl_class_weights']) it ranks the source classes by mean weight
over seeds, with sample std, min, max, each seed's rank, in how many seeds
the class is above that seed's median weight (the top half), the mean
pairwise Spearman correlation of the weights across seeds, and the known
answer where the config has config.source_class_relevance.

Writes DIR/relevance.md (every class) and DIR/source_relevance.png, and
prints the tables (the top and bottom --max_rows // 2 classes of a longer
table). Runs without results.json (unfinished) are left out and named.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from absl import app
from absl import flags

from experiments import cli
from experiments import report
from l2tl_jax import checkpointing
from l2tl_jax import methods as methods_lib
from l2tl_jax import plots_comparison

REPORT_FILE = "relevance.md"
PLOT_FILE = "source_relevance.png"

_SEED_DIR = re.compile(r"seed(\d+)$")
RunList = list[tuple[int, str, dict[str, Any]]]


class RelevanceError(ValueError):
  """A folder that holds no source class weights to report."""


def _seed_dirs(directory: str) -> list[tuple[int, str]]:
  """[(seed, path)] of the seed<N> folders of `directory`, by seed."""
  if not os.path.isdir(directory):
    return []
  found = []
  for name in os.listdir(directory):
    match = _SEED_DIR.match(name)
    path = os.path.join(directory, name)
    if match and os.path.isdir(path):
      found.append((int(match.group(1)), path))
  return sorted(found)


def _read_results(run_dir: str) -> dict[str, Any]:
  path = os.path.join(run_dir, "results.json")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise RelevanceError(f"cannot read {path}: {e}") from e


def _method_order(name: str) -> tuple[int, str]:
  known = list(methods_lib.METHODS)
  return (known.index(name) if name in known else len(known), name)


def find_runs(workdir: str) -> tuple[dict[str, RunList], list[str]]:
  """The finished runs of a run or comparison folder, by method.

  Args:
    workdir: a run folder (results.json), a folder of seed<N> folders, or a
      folder of <method>/seed<N> folders (directly or under runs/).

  Returns:
    (method -> [(seed, run_dir, results)] in the methods table's order,
    run folders without results.json).

  Raises:
    RelevanceError: no folder, or no finished run in it.
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise RelevanceError(f"{workdir} is not a directory.")
  if os.path.exists(os.path.join(workdir, "results.json")):
    results = _read_results(workdir)
    method = results.get("method") or os.path.basename(workdir)
    return {method: [(results.get("seed", 0), workdir, results)]}, []
  if _seed_dirs(workdir):
    groups = {os.path.basename(workdir): _seed_dirs(workdir)}
  else:
    root = os.path.join(workdir, "runs")
    root = root if os.path.isdir(root) else workdir
    groups = {name: _seed_dirs(os.path.join(root, name))
              for name in sorted(os.listdir(root), key=_method_order)}
    groups = {name: dirs for name, dirs in groups.items() if dirs}
  runs: dict[str, RunList] = {}
  unfinished = []
  for name, dirs in groups.items():
    for seed, run_dir in dirs:
      if os.path.exists(os.path.join(run_dir, "results.json")):
        runs.setdefault(name, []).append(
            (seed, run_dir, _read_results(run_dir)))
      else:
        unfinished.append(run_dir)
  if runs:
    return runs, unfinished
  if unfinished:
    raise RelevanceError(
        f"no finished run in {workdir}: {len(unfinished)} run folder(s) have "
        "no results.json yet (a run writes it when it finishes); rerun the "
        "comparison to finish them.")
  hint = ""
  if os.path.exists(os.path.join(workdir, "summary.json")):
    hint = (" Its summary.json is there but not the run folders, where the "
            "per-seed weights are.")
  raise RelevanceError(
      f"no results in {workdir}: it is not a finished run (results.json) or "
      "comparison (runs/<method>/seed<N>/results.json)." + hint)


def _with_weights() -> str:
  """The methods that write source class weights, for messages."""
  table = methods_lib.METHODS
  learned = [m for m, e in table.items() if e.class_weights == "learned"]
  datl = [m for m, e in table.items() if e.class_weights == "datl"]
  return f"{', '.join(learned)} (learned) and {', '.join(datl)} (DATL, fixed)"


def relevance_report(workdir: str) -> dict[str, Any]:
  """Writes DIR/relevance.md and DIR/source_relevance.png.

  Args:
    workdir: a finished run or comparison folder (see `find_runs`).

  Returns:
    What `report.source_relevance` returns, plus 'workdir', 'unfinished'
    (run folders left out) and 'files' (paths written).

  Raises:
    RelevanceError: no finished run, or none with source class weights.
  """
  workdir = os.path.abspath(workdir)
  runs, unfinished = find_runs(workdir)
  try:
    relevance = report.source_relevance(runs)
  except ValueError as e:
    raise RelevanceError(str(e)) from e
  if not relevance["methods"]:
    raise RelevanceError(
        f"no source class weights in {workdir}: its runs "
        f"({', '.join(relevance['without_weights'])}) neither learn them nor "
        f"use DATL's. Methods with source class weights: {_with_weights()}.")
  if unfinished:
    relevance["notes"].append(
        "Unfinished runs (no results.json), left out: "
        + ", ".join(os.path.relpath(d, workdir) for d in unfinished) + ".")
  relevance.update(workdir=workdir, unfinished=unfinished)
  md_path = os.path.join(workdir, REPORT_FILE)
  checkpointing.write_text_atomic(md_path, relevance_file(relevance, runs))
  png_path = plots_comparison.plot_source_relevance(
      relevance, os.path.join(workdir, PLOT_FILE))
  relevance["files"] = [md_path, png_path]
  return relevance


def relevance_file(relevance: dict[str, Any], runs: dict[str, RunList]) -> str:
  """relevance.md: a title naming the task and folder, then the section."""
  task = next((r["task"] for group in runs.values() for _, _, r in group
               if r.get("task")), {})
  title = "# Source relevance"
  if task.get("source") and task.get("target"):
    title += f": {task['source']} -> {task['target']}"
  count = sum(len(e["seeds"]) for e in relevance["methods"].values())
  lines = [title, "",
           f"From {count} finished run(s) in {relevance['workdir']}.", "",
           report.relevance_markdown(relevance).rstrip("\n")]
  return "\n".join(lines) + "\n"


def report_or_exit(workdir: str, max_rows: int | None = 40) -> dict[str, Any]:
  """`relevance_report(workdir)`, its tables printed; known errors exit.

  A folder without weights to report exits with code 2 and one
  'error: ...' line on stderr, as the other launchers' user errors.

  Args:
    workdir: a finished run or comparison folder.
    max_rows: classes per printed table, as `report.relevance_table`.

  Returns:
    What `relevance_report` returns.
  """
  try:
    relevance = cli.run_or_exit(relevance_report, workdir)
  except RelevanceError as e:
    cli.fail(str(e), 2)
  print(report.relevance_markdown(relevance, max_rows=max_rows))
  print(f"Source relevance: {', '.join(relevance['files'])}")
  return relevance


def define_flags() -> None:
  """--workdir and --max_rows, defined only when this module is the program
  (experiments.compare defines --workdir too, and tests import both)."""
  flags.DEFINE_string("workdir", None, "A finished run or comparison folder.")
  flags.DEFINE_integer(
      "max_rows", 40, "Classes per printed table (top and bottom half); "
      "relevance.md holds every class.", lower_bound=2)
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"Unexpected arguments: {argv[1:]}.")
  cli.setup_logging(None)
  report_or_exit(flags.FLAGS.workdir, max_rows=flags.FLAGS.max_rows)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
