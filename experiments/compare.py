r"""Compares methods over seeds (and target sizes) under one protocol.

  python -m experiments.compare --config=experiments/configs/digits.py \
      --seeds=5 --workdir=runs/digits \
      [--methods=scratch,finetune,joint_uniform,datl,l2tl] \
      [--target_per_class=5,10,20,60] [--config.train.steps=600]

Every run of method m and seed s lives in DIR/runs/<m>/seed<s>; all runs
share one source pre-training, cached in DIR/pretrain (or in
config.pretrain_cache_dir when set, shared across comparisons). Completed
runs are read back, not retrained, so an interrupted comparison resumes by
rerunning the same command. Writes DIR/summary.json, DIR/summary.md and
DIR/comparison.png, and where some method weights the source classes
(learned or DATL) DIR/source_relevance.png: the classes ranked by weight
with their agreement across seeds (summary.md's '## Source relevance';
experiments.relevance writes the same for any finished folder). With
--target_per_class, fine-tuning and L2TL are also run per target size
under DIR/sweep/n<k>/<m>/seed<s>, summarised in DIR/sweep.json,
DIR/sweep.md and DIR/target_size_sweep.png. Summary files
are written only when every run succeeded, each atomically.

Reported rows: each method's final-step test accuracy, plus
'finetune (val-selected)' and 'l2tl (val-selected)': the test accuracy of
the evaluation step with the best validation accuracy. Nothing is selected
on the test split.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from experiments import cli
from experiments import report
from experiments import runner
from l2tl_jax import checkpointing
from l2tl_jax import methods as methods_lib
from l2tl_jax import plots_comparison
from l2tl_jax import spec as spec_lib

DEFAULT_METHODS = ("scratch", "finetune", "joint_uniform", "datl", "l2tl")
SWEEP_METHODS = ("finetune", "l2tl")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (experiments/configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1 per method.",
                              lower_bound=1)
_METHODS = flags.DEFINE_list(
    "methods", list(DEFAULT_METHODS), f"Methods, among {tuple(methods_lib.METHODS)}."
)
_TARGET_PER_CLASS = flags.DEFINE_list(
    "target_per_class", None,
    "Target train examples per class of the target-size sweep (fine-tuning "
    "and L2TL); none: no sweep.",
)
_SWEEP_SEEDS = flags.DEFINE_integer(
    "sweep_seeds", None, "Seeds per point of the sweep (default: --seeds).",
    lower_bound=1)
flags.mark_flags_as_required(["config", "workdir"])


def check_arguments(
    config: ml_collections.ConfigDict,
    *,
    seeds: int,
    methods: Sequence[str],
    target_per_class: Sequence[int] | None = None,
) -> None:
  """Raises ValueError on arguments no comparison can run with.

  Also checks config.l2tl.mode (validation.ConfigError, a ValueError).

  Args:
    config: the base config.
    seeds: number of seeds.
    methods: methods to run.
    target_per_class: target sizes of the sweep, or None.
  """
  unknown = [m for m in methods if m not in tuple(methods_lib.METHODS)]
  if unknown or not methods:
    raise ValueError(f"Unknown or no methods {unknown}; choose among "
                     f"{', '.join(tuple(methods_lib.METHODS))}.")
  if len(set(methods)) != len(methods):
    raise ValueError(f"Methods repeat: {list(methods)}.")
  if seeds < 1:
    raise ValueError(f"The number of seeds must be >= 1, got {seeds}.")
  if config.data.target_test_split is None:
    raise ValueError("A comparison needs config.data.target_test_split.")
  spec_lib.check_mode(config)
  if target_per_class is not None and (
      not target_per_class or min(target_per_class) < 1):
    raise ValueError(
        f"Target sizes must be >= 1, got {list(target_per_class)}.")


def _check_plan(plan) -> None:
  """Every run's config checked before the first run starts
  (validation.ConfigError)."""
  for config, _ in plan:
    spec_lib.from_config(config)


def _by_method(plan, results):
  """method -> [(seed, run_dir, results)] in plan order."""
  out: dict[str, list] = {}
  for config, run_dir in plan:
    out.setdefault(config.method, []).append(
        (config.seed, run_dir, results[run_dir]))
  return out


def run_comparison(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    seeds: int,
    methods: Sequence[str] = DEFAULT_METHODS,
    target_per_class: Sequence[int] | None = None,
    sweep_seeds: int | None = None,
) -> dict[str, Any]:
  """Runs every method for seeds 0..seeds-1 and writes the summaries.

  Args:
    config: the base config (method and seed are set per run).
    workdir: output directory DIR.
    seeds: number of seeds.
    methods: methods to run, in display order.
    target_per_class: if set, also runs `run_target_size_sweep` over these
      target train sizes.
    sweep_seeds: seeds per sweep point (default: `seeds`).

  Returns:
    The summary also written to DIR/summary.json: 'methods' (row name ->
    mean, std, per-seed test accuracies, mean validation accuracy, ...),
    'std_kind', 'class_weights', 'source_relevance'
    (`report.source_relevance`), 'protocol', 'notes'; with
    `target_per_class`, 'sweep' holds the sweep summary.

  Raises:
    runner.RunFailedError: some runs raised (the others completed); no summary
      file was written.
    runner.RunInterruptedError: a run stopped on a signal.
  """
  check_arguments(config, seeds=seeds, methods=methods,
                  target_per_class=target_per_class)
  config = spec_lib.resolve_config(config)
  workdir = os.path.abspath(workdir)
  pretrain_dir = runner.pretrain_dir(config, workdir)
  plan = [
      (runner.run_config(config, method=m, seed=s, pretrain_dir=pretrain_dir),
       os.path.join(workdir, "runs", m, f"seed{s}"))
      for m in methods for s in range(seeds)
  ]
  _check_plan(plan)
  results = runner.run_all(plan)
  by_method = _by_method(plan, results)
  notes: list[str] = []
  rows = report.summarize_rows(by_method, notes)
  summary = {
      "methods": rows,
      "std_kind": report.std_kind(seeds),
      "class_weights": report.class_weight_summary(by_method),
      "source_relevance": report.source_relevance(by_method),
      "per_class": report.per_class_summary(by_method),
      "protocol": report.protocol(config, list(results.values()),
                           seeds=list(range(seeds)), rows=list(rows)),
      "notes": notes,
      "base_config": json.loads(config.to_json_best_effort()),
  }
  plots_comparison.plot_comparison(summary,
                                   os.path.join(workdir, "comparison.png"))
  plots_comparison.plot_source_relevance(
      summary["source_relevance"],
      os.path.join(workdir, "source_relevance.png"))
  checkpointing.write_text_atomic(os.path.join(workdir, "summary.md"),
                                  report.summary_markdown(summary))
  checkpointing.write_json_atomic(os.path.join(workdir, "summary.json"),
                                  summary)
  if target_per_class:
    summary["sweep"] = run_target_size_sweep(
        config, workdir, seeds=sweep_seeds or seeds,
        target_per_class=target_per_class)
  return summary


def run_target_size_sweep(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    seeds: int,
    target_per_class: Sequence[int],
    methods: Sequence[str] = SWEEP_METHODS,
) -> dict[str, Any]:
  """Runs `methods` per target train size k in DIR/sweep/n<k>/<m>/seed<s>.

  Args:
    config: the base config.
    workdir: output directory DIR (the pre-training cache DIR/pretrain is
      shared with the comparison).
    seeds: number of seeds per point.
    target_per_class: target train examples per class, one point each.
    methods: methods to run.

  Returns:
    The sweep summary also written to DIR/sweep.json: 'target_per_class',
    'methods' (row name -> [{'target_per_class', 'mean', 'std',
    'per_seed', ...}] by size), 'std_kind', 'splits' (split sizes per
    size), 'protocol', 'notes'.

  Raises:
    runner.RunFailedError, runner.RunInterruptedError: as `run_comparison`.
  """
  check_arguments(config, seeds=seeds, methods=methods,
                  target_per_class=target_per_class)
  config = spec_lib.resolve_config(config)
  sizes = sorted({int(k) for k in target_per_class})
  workdir = os.path.abspath(workdir)
  pretrain_dir = runner.pretrain_dir(config, workdir)
  plans = {
      k: [(runner.run_config(config, method=m, seed=s, pretrain_dir=pretrain_dir,
                      target_per_class=k),
           os.path.join(workdir, "sweep", f"n{k}", m, f"seed{s}"))
          for m in methods for s in range(seeds)]
      for k in sizes
  }
  _check_plan([run for plan in plans.values() for run in plan])
  results = runner.run_all([run for plan in plans.values() for run in plan])
  notes: list[str] = []
  lines: dict[str, list[dict[str, Any]]] = {}
  splits = {}
  for k, plan in plans.items():
    rows = report.summarize_rows(_by_method(plan, results), notes)
    for name, row in rows.items():
      lines.setdefault(name, []).append({"target_per_class": k, **row})
    task = results[plan[0][1]].get("task") or {}
    splits[str(k)] = {name: {"size": s.get("size"),
                             "per_class": s.get("per_class")}
                      for name, s in (task.get("splits") or {}).items()}
  all_results = list(results.values())
  sweep = {
      "target_per_class": sizes,
      "methods": lines,
      "std_kind": report.std_kind(seeds),
      "splits": splits,
      "protocol": report.protocol(config, all_results, seeds=list(range(seeds)),
                           rows=list(lines)),
      "notes": notes,
  }
  plots_comparison.plot_target_size_sweep(
      sweep, os.path.join(workdir, "target_size_sweep.png"))
  checkpointing.write_text_atomic(os.path.join(workdir, "sweep.md"),
                                  report.sweep_markdown(sweep))
  checkpointing.write_json_atomic(os.path.join(workdir, "sweep.json"), sweep)
  return sweep


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"Unexpected arguments: {argv[1:]}.")
  if _TARGET_PER_CLASS.value is not None and not _TARGET_PER_CLASS.value:
    cli.usage_error("--target_per_class is empty: give target sizes (e.g. "
                    "5,10,20), or leave the flag out for no sweep.")
  try:
    sizes = [int(k) for k in _TARGET_PER_CLASS.value or []]
  except ValueError as e:
    cli.usage_error(f"--target_per_class: {e}.")
  seeds = _SEEDS.value
  sweep_seeds = _SWEEP_SEEDS.value or seeds
  try:
    check_arguments(_CONFIG.value, seeds=seeds, methods=_METHODS.value,
                    target_per_class=sizes or None)
    if sizes:
      check_arguments(_CONFIG.value, seeds=sweep_seeds, methods=SWEEP_METHODS)
  except ValueError as e:
    cli.usage_error(str(e))
  cli.setup_logging(_WORKDIR.value)
  summary = cli.run_or_exit(
      run_comparison, _CONFIG.value, _WORKDIR.value, seeds=seeds,
      methods=_METHODS.value, target_per_class=sizes or None,
      sweep_seeds=sweep_seeds)
  workdir = os.path.abspath(_WORKDIR.value)
  print()
  print(report.markdown_table(summary))
  print(f"Summary: {workdir}/summary.md, {workdir}/summary.json, "
        f"{workdir}/comparison.png")
  if summary["source_relevance"]["methods"]:
    print(f"Source relevance: {workdir}/source_relevance.png (summary.md, "
          "'## Source relevance')")
  if "sweep" in summary:
    print(f"Sweep: {workdir}/sweep.md, {workdir}/sweep.json, "
          f"{workdir}/target_size_sweep.png")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
