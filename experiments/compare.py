r"""Compares methods over seeds (and target sizes) under one protocol.

  python -m experiments.compare --config=experiments/configs/digits.py \
      --seeds=5 --workdir=runs/digits \
      [--methods=scratch,finetune,joint_uniform,datl,l2tl] \
      [--target_per_class=5,10,20,60] [--config.train.steps=600]

Every run of method m and seed s lives in DIR/runs/<m>/seed<s>; all runs
share one source pre-training, cached in DIR/pretrain. Completed runs are
read back, not retrained, so an interrupted comparison resumes by rerunning
the same command. Writes DIR/summary.json, DIR/summary.md and
DIR/comparison.png; with --target_per_class, fine-tuning and L2TL are also
run per target size under DIR/sweep/n<k>/<m>/seed<s>, summarised in
DIR/sweep.json, DIR/sweep.md and DIR/target_size_sweep.png. Summary files
are written only when every run succeeded, each atomically.

Reported rows: each method's final-step test accuracy, plus
'finetune (val-selected)' and 'l2tl (val-selected)': the test accuracy of
the evaluation step with the best validation accuracy. Nothing is selected
on the test split.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np

from l2tl_jax import checkpointing
from l2tl_jax import plots
from l2tl_jax import train

DEFAULT_METHODS = ("scratch", "finetune", "joint_uniform", "datl", "l2tl")
SWEEP_METHODS = ("finetune", "l2tl")
# Methods whose validation-selected result gets a row of its own.
VAL_SELECTED_METHODS = ("finetune", "l2tl")
VAL_SELECTED = " (val-selected)"

# What each reported row was trained and selected on.
SEES = {
    "scratch": "target train only, random initialisation; last step.",
    "finetune": "source pre-training, then target train only; last step.",
    "finetune (val-selected)": (
        "as finetune, plus the validation split, which picks the evaluation "
        "step of best validation accuracy."),
    "joint_uniform": (
        "source pre-training, then source train + target train jointly, "
        "every source class weighted 1, fixed alpha; validation batches only "
        "feed the logged reward, nothing is learned from them; last step."),
    "datl": (
        "as joint_uniform with fixed class weights P_t(c) / P_s(c) estimated "
        "from the target train images; last step."),
    "l2tl_fixed_alpha": (
        "source pre-training, then source train + target train jointly; "
        "validation batches train the policy (its reward, or its "
        "meta-gradient: config.l2tl.estimator), class weights learned, fixed "
        "alpha; last step."),
    "l2tl": (
        "source pre-training, then source train + target train jointly; "
        "validation batches train the policy (its reward, or its "
        "meta-gradient: config.l2tl.estimator), class weights and alpha "
        "learned; last step."),
    "l2tl (val-selected)": (
        "as l2tl, plus the validation split picking the evaluation step of "
        "best validation accuracy."),
}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (experiments/configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1 per method.")
_METHODS = flags.DEFINE_list(
    "methods", list(DEFAULT_METHODS), f"Methods, among {train.METHODS}."
)
_TARGET_PER_CLASS = flags.DEFINE_list(
    "target_per_class", None,
    "Target train examples per class of the target-size sweep (fine-tuning "
    "and L2TL); none: no sweep.",
)
_SWEEP_SEEDS = flags.DEFINE_integer(
    "sweep_seeds", None, "Seeds per point of the sweep (default: --seeds)."
)
flags.mark_flags_as_required(["config", "workdir"])


class RunFailedError(RuntimeError):
  """Some runs raised; `failures` maps their run dirs to the errors."""

  def __init__(self, failures: dict[str, BaseException]):
    self.failures = failures
    lines = [f"  {d}: {type(e).__name__}: {e}" for d, e in failures.items()]
    super().__init__(
        f"{len(failures)} run(s) failed; no summary was written. Fix the "
        "cause and rerun the same command (completed runs are reused):\n"
        + "\n".join(lines))


class RunInterruptedError(RuntimeError):
  """A run stopped on SIGTERM / SIGINT after saving a checkpoint."""

  def __init__(self, run_dir: str, results: dict[str, Any]):
    self.run_dir = run_dir
    self.signal = results.get("signal")
    super().__init__(
        f"Run {run_dir} was interrupted by signal {self.signal} at step "
        f"{results.get('step')} (checkpoint saved); no summary was written. "
        "Rerun the same command to resume.")


def run_config(
    config: ml_collections.ConfigDict,
    *,
    method: str,
    seed: int,
    pretrain_dir: str,
    target_per_class: int | None = None,
) -> ml_collections.ConfigDict:
  """A copy of `config` for one run.

  Args:
    config: the base config.
    method: config.method of the run.
    seed: config.seed of the run.
    pretrain_dir: the pre-training cache shared by every run.
    target_per_class: if set, config.data.target_train_per_class.

  Returns:
    The run's config.
  """
  out = config.copy_and_resolve_references()
  out.method = method
  out.seed = seed
  out.pretrain_cache_dir = os.path.abspath(pretrain_dir)
  if target_per_class is not None:
    out.data.target_train_per_class = int(target_per_class)
  return out


def _run_all(runs: Sequence[tuple[ml_collections.ConfigDict, str]]
             ) -> dict[str, dict[str, Any]]:
  """Trains (or reads back) every (config, run_dir); raises on failures."""
  results, failures = {}, {}
  for i, (config, run_dir) in enumerate(runs, 1):
    print(f"[{i}/{len(runs)}] {config.method} seed {config.seed}: {run_dir}",
          flush=True)
    try:
      out = train.train_and_evaluate(config, run_dir)
    except Exception as e:  # pylint: disable=broad-except
      print(f"error: run {run_dir} failed: {type(e).__name__}: {e}",
            file=sys.stderr, flush=True)
      failures[run_dir] = e
      continue
    if out.get("status") == "interrupted":
      raise RunInterruptedError(run_dir, out)
    results[run_dir] = out
  if failures:
    raise RunFailedError(failures)
  return results


def _stats(values: Sequence[float]) -> tuple[float, float]:
  """(mean, sample std with ddof=1; 0 for one value)."""
  values = np.asarray(values, np.float64)
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return float(np.mean(values)), std


def std_kind(num_seeds: int) -> str:
  """How the reported std is computed."""
  if num_seeds > 1:
    return "sample std over seeds (ddof=1)"
  return "one seed: std reported as 0"


def _row(method: str, selection: str, values, val_values, seeds, run_dirs,
         **extra) -> dict[str, Any]:
  mean, std = _stats(values)
  return {
      "method": method,
      "selection": selection,
      "mean": mean,
      "std": std,
      "per_seed": [float(v) for v in values],
      "seeds": list(seeds),
      "val_accuracy_mean": (
          float(np.mean(val_values))
          if all(v is not None for v in val_values) else None),
      "val_accuracy_per_seed": list(val_values),
      "run_dirs": list(run_dirs),
      **extra,
  }


def summarize_rows(
    runs: dict[str, list[tuple[int, str, dict[str, Any]]]],
    notes: list[str],
) -> dict[str, dict[str, Any]]:
  """Rows of the comparison table from the results of each method's runs.

  Args:
    runs: method -> [(seed, run_dir, results dict)], methods in display
      order.
    notes: receives a line for each row that could not be reported.

  Returns:
    Row name -> {'method', 'selection', 'mean', 'std', 'per_seed', 'seeds',
    'val_accuracy_mean', 'val_accuracy_per_seed', 'run_dirs', 'sees'}.
  """
  rows = {}
  for method, seed_runs in runs.items():
    seeds = [s for s, _, _ in seed_runs]
    dirs = [d for _, d, _ in seed_runs]
    results = [r for _, _, r in seed_runs]
    rows[method] = _row(
        method, "last step", [r["test_accuracy"] for r in results],
        [r.get("val_accuracy") for r in results], seeds, dirs,
        sees=SEES.get(method, ""))
    if method not in VAL_SELECTED_METHODS:
      continue
    selected = [r.get("val_selected") or {} for r in results]
    name = method + VAL_SELECTED
    if not all("test_accuracy" in s for s in selected):
      notes.append(
          f"No '{name}' row: some runs have no validation-selected test "
          "accuracy (config.eval.every_steps = 0 or no validation split).")
      continue
    rows[name] = _row(
        method, "best validation accuracy",
        [s["test_accuracy"] for s in selected],
        [s["val_accuracy"] for s in selected], seeds, dirs,
        selected_steps=[s["step"] for s in selected],
        sees=SEES.get(name, ""))
  return rows


def _mean_weights(results: list[dict[str, Any]], get) -> dict[str, Any] | None:
  """Per-class mean and std over seeds of the class weights `get` returns."""
  tables = [get(r) for r in results]
  if not tables or any(not t for t in tables):
    return None
  names = list(results[0].get("src_class_names") or tables[0])
  values = np.asarray([[t[n] for n in names] for t in tables], np.float64)
  return {"mean": dict(zip(names, values.mean(0).tolist())),
          "std": dict(zip(names, values.std(0, ddof=1).tolist()
                          if len(tables) > 1 else [0.0] * len(names)))}


def class_weight_summary(
    runs: dict[str, list[tuple[int, str, dict[str, Any]]]]
) -> dict[str, Any]:
  """Class weights of the weighting methods, per class averaged over seeds.

  Args:
    runs: method -> [(seed, run_dir, results dict)].

  Returns:
    Method -> {'expected_class_weights': {'mean': {class: w}, 'std': ...},
    'expected_alpha': {'mean', 'std'}} for the L2TL methods (the policy's
    expectations at the last step), {'class_weights': ...} for datl.
  """
  out = {}
  for method, seed_runs in runs.items():
    results = [r for _, _, r in seed_runs]
    if method in ("l2tl", "l2tl_fixed_alpha"):
      weights = _mean_weights(
          results,
          lambda r: (r.get("policy") or {}).get("expected_class_weights"))
      if weights is None:
        continue
      entry = {"expected_class_weights": weights}
      alphas = [(r.get("policy") or {}).get("expected_alpha") for r in results]
      if all(a is not None for a in alphas):
        mean, std = _stats(alphas)
        entry["expected_alpha"] = {"mean": mean, "std": std}
      out[method] = entry
    elif method == "datl":
      weights = _mean_weights(results, lambda r: r.get("datl_class_weights"))
      if weights is not None:
        out[method] = {"class_weights": weights}
  return out


def protocol(
    config: ml_collections.ConfigDict,
    results: list[dict[str, Any]],
    *,
    seeds: Sequence[int],
    rows: Sequence[str],
) -> dict[str, Any]:
  """What the runs saw: data, split sizes, steps, batch sizes, seeds.

  Args:
    config: the base config.
    results: results dicts of the runs (the first with a task summary
      describes the data; the first with pre-training info, the source
      pre-training).
    seeds: the seeds.
    rows: names of the reported rows.

  Returns:
    A JSON-able dict.
  """
  task = next((r["task"] for r in results if r.get("task")), {})
  pre = next((r["pretrain"] for r in results if r.get("pretrain")), None)
  splits = {
      name: {k: s.get(k) for k in ("dataset", "dataset_split", "size",
                                   "per_class")}
      for name, s in (task.get("splits") or {}).items()
  }
  out = {
      "source": task.get("source"),
      "target": task.get("target"),
      "splits": splits,
      "src_class_names": task.get("src_class_names"),
      "tgt_class_names": task.get("tgt_class_names"),
      "split_seed": task.get("split_seed"),
      "encoder": config.model.encoder,
      "pretrain": {
          "steps": config.pretrain.steps,
          "batch_size": config.pretrain.batch_size,
          "seed": config.pretrain.seed,
          "shared_by_all_runs": True,
      },
      "train": {
          "steps": config.train.steps,
          "batch_size": config.train.batch_size,
          "lr": config.train.lr,
          "src_batch_size": (config.train.batch_size
                             * config.l2tl.src_oversample),
          "val_batch_size": config.l2tl.val_batch_size,
          "inner_steps": config.l2tl.inner_steps,
          "fixed_alpha": config.l2tl.fixed_alpha,
          "l2tl_mode": config.l2tl.get("mode"),
          "estimator": config.l2tl.get("estimator"),
          "policy_lr": config.l2tl.get("policy_lr"),
      },
      "eval_every_steps": config.eval.every_steps,
      "seeds": list(seeds),
      "std": std_kind(len(seeds)),
      "test_split_use": (
          "Nothing is selected on the test split: it is evaluated once per "
          "run on the last-step parameters and once on the "
          "validation-selected parameters."),
      "sees": {name: SEES.get(name, "") for name in rows},
  }
  if pre is not None:
    out["pretrain"]["key"] = pre.get("key")
    if "source_test_accuracy" in pre:
      out["pretrain"]["source_test_accuracy"] = pre["source_test_accuracy"]
      out["pretrain"]["source_test_examples"] = pre.get("source_test_examples")
  return out


def check_arguments(
    config: ml_collections.ConfigDict,
    *,
    seeds: int,
    methods: Sequence[str],
    target_per_class: Sequence[int] | None = None,
) -> None:
  """Raises ValueError on arguments no comparison can run with.

  Args:
    config: the base config.
    seeds: number of seeds.
    methods: methods to run.
    target_per_class: target sizes of the sweep, or None.
  """
  unknown = [m for m in methods if m not in train.METHODS]
  if unknown or not methods:
    raise ValueError(f"Unknown or no methods {unknown}; choose among "
                     f"{', '.join(train.METHODS)}.")
  if len(set(methods)) != len(methods):
    raise ValueError(f"Methods repeat: {list(methods)}.")
  if seeds < 1:
    raise ValueError(f"The number of seeds must be >= 1, got {seeds}.")
  if config.data.target_test_split is None:
    raise ValueError("A comparison needs config.data.target_test_split.")
  if target_per_class is not None and (
      not target_per_class or min(target_per_class) < 1):
    raise ValueError(
        f"Target sizes must be >= 1, got {list(target_per_class)}.")


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
    'std_kind', 'class_weights', 'protocol', 'notes'; with
    `target_per_class`, 'sweep' holds the sweep summary.

  Raises:
    RunFailedError: some runs raised (the others completed); no summary
      file was written.
    RunInterruptedError: a run stopped on a signal.
  """
  check_arguments(config, seeds=seeds, methods=methods,
                  target_per_class=target_per_class)
  config = train.resolve_config(config)
  workdir = os.path.abspath(workdir)
  pretrain_dir = os.path.join(workdir, "pretrain")
  plan = [
      (run_config(config, method=m, seed=s, pretrain_dir=pretrain_dir),
       os.path.join(workdir, "runs", m, f"seed{s}"))
      for m in methods for s in range(seeds)
  ]
  results = _run_all(plan)
  by_method = _by_method(plan, results)
  notes: list[str] = []
  rows = summarize_rows(by_method, notes)
  summary = {
      "methods": rows,
      "std_kind": std_kind(seeds),
      "class_weights": class_weight_summary(by_method),
      "protocol": protocol(config, list(results.values()),
                           seeds=list(range(seeds)), rows=list(rows)),
      "notes": notes,
      "base_config": json.loads(config.to_json_best_effort()),
  }
  plots.plot_comparison(summary, os.path.join(workdir, "comparison.png"))
  checkpointing.write_text_atomic(os.path.join(workdir, "summary.md"),
                                  summary_markdown(summary))
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
    RunFailedError, RunInterruptedError: as `run_comparison`.
  """
  check_arguments(config, seeds=seeds, methods=methods,
                  target_per_class=target_per_class)
  config = train.resolve_config(config)
  sizes = sorted({int(k) for k in target_per_class})
  workdir = os.path.abspath(workdir)
  pretrain_dir = os.path.join(workdir, "pretrain")
  plans = {
      k: [(run_config(config, method=m, seed=s, pretrain_dir=pretrain_dir,
                      target_per_class=k),
           os.path.join(workdir, "sweep", f"n{k}", m, f"seed{s}"))
          for m in methods for s in range(seeds)]
      for k in sizes
  }
  results = _run_all([run for plan in plans.values() for run in plan])
  notes: list[str] = []
  lines: dict[str, list[dict[str, Any]]] = {}
  splits = {}
  for k, plan in plans.items():
    rows = summarize_rows(_by_method(plan, results), notes)
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
      "std_kind": std_kind(seeds),
      "splits": splits,
      "protocol": protocol(config, all_results, seeds=list(range(seeds)),
                           rows=list(lines)),
      "notes": notes,
  }
  plots.plot_target_size_sweep(sweep,
                               os.path.join(workdir, "target_size_sweep.png"))
  checkpointing.write_text_atomic(os.path.join(workdir, "sweep.md"),
                                  sweep_markdown(sweep))
  checkpointing.write_json_atomic(os.path.join(workdir, "sweep.json"), sweep)
  return sweep


def _pct(x: float | None) -> str:
  return "-" if x is None else f"{100 * x:.2f}"


def markdown_table(summary: dict[str, Any]) -> str:
  """The comparison table: method | test acc mean ± std | per-seed | val acc.

  Args:
    summary: the dict `run_comparison` returns.

  Returns:
    Markdown text; accuracies in %.
  """
  lines = ["| method | test acc mean ± std | per-seed | val acc |",
           "|---|---|---|---|"]
  for name, row in summary["methods"].items():
    per_seed = ", ".join(_pct(v) for v in row["per_seed"])
    lines.append(f"| {name} | {_pct(row['mean'])} ± {_pct(row['std'])} | "
                 f"{per_seed} | {_pct(row['val_accuracy_mean'])} |")
  return "\n".join(lines) + "\n"


def _split_lines(splits: dict[str, Any]) -> list[str]:
  out = []
  for name, s in splits.items():
    origin = f"{s.get('dataset')}/{s.get('dataset_split')}"
    out.append(f"- {name}: {s.get('size')} examples from {origin}, per class "
               f"{s.get('per_class')}")
  return out


def summary_markdown(summary: dict[str, Any]) -> str:
  """summary.md: the table, the protocol and the learned class weights.

  Args:
    summary: the dict `run_comparison` returns.

  Returns:
    Markdown text.
  """
  p = summary["protocol"]
  t, pre = p["train"], p["pretrain"]
  lines = [
      f"# {p['source']} -> {p['target']}: method comparison", "",
      f"Target test accuracy in %, mean ± std ({summary['std_kind']}); "
      "val acc: mean validation accuracy of the reported parameters.", "",
      markdown_table(summary),
      "## Protocol", "",
      f"- Source {p['source']} ({len(p['src_class_names'] or [])} classes), "
      f"target {p['target']} ({len(p['tgt_class_names'] or [])} classes: "
      f"{', '.join(p['tgt_class_names'] or [])}); split seed "
      f"{p['split_seed']}.",
      *_split_lines(p["splits"]),
      f"- Encoder {p['encoder']}. Source pre-training: {pre['steps']} steps, "
      f"batch {pre['batch_size']}, computed once and shared by every run"
      + (f"; source test accuracy {_pct(pre['source_test_accuracy'])}%."
         if "source_test_accuracy" in pre else "."),
      f"- Target stage: {t['steps']} steps, target batch {t['batch_size']}; "
      f"joint methods: source batch {t['src_batch_size']}, validation "
      f"(reward) batch {t['val_batch_size']}, {t['inner_steps']} model "
      f"step(s) per policy step, fixed alpha {t['fixed_alpha']} where "
      "alpha is not learned.",
      f"- L2TL policy: config.l2tl.mode {t.get('l2tl_mode')!r}, estimator "
      f"{t.get('estimator')!r}, policy Adam {t.get('policy_lr')}.",
      f"- Validation accuracy evaluated every {p['eval_every_steps']} steps "
      "(curves and the val-selected rows).",
      f"- Seeds {p['seeds']}; {p['std']}.",
      f"- {p['test_split_use']}",
      "", "What each row saw:", "",
      *[f"- {name}: {text}" for name, text in p["sees"].items()],
  ]
  for method, entry in summary["class_weights"].items():
    key = ("expected_class_weights" if "expected_class_weights" in entry
           else "class_weights")
    weights = entry[key]["mean"]
    ranked = sorted(weights.items(), key=lambda kv: -kv[1])
    title = ("expected class weights of the policy at the last step"
             if key == "expected_class_weights" else "fixed class weights")
    lines += ["", f"## {method}: {title}, mean over seeds", ""]
    if "expected_alpha" in entry:
      a = entry["expected_alpha"]
      lines += [f"Expected alpha {a['mean']:.4f} ± {a['std']:.4f}.", ""]
    shown = ranked if len(ranked) <= 20 else ranked[:10] + ranked[-10:]
    if len(shown) < len(ranked):
      lines.append(f"Top 10 and bottom 10 of {len(ranked)} classes.")
      lines.append("")
    lines += ["| source class | weight |", "|---|---|"]
    lines += [f"| {name} | {w:.4f} |" for name, w in shown]
  if summary["notes"]:
    lines += ["", "## Notes", "", *[f"- {n}" for n in summary["notes"]]]
  return "\n".join(lines) + "\n"


def sweep_markdown(sweep: dict[str, Any]) -> str:
  """sweep.md: test accuracy per method and target size, and split sizes.

  Args:
    sweep: the dict `run_target_size_sweep` returns.

  Returns:
    Markdown text.
  """
  sizes = sweep["target_per_class"]
  lines = [
      "# Target-size sweep", "",
      f"Target test accuracy in %, mean ± std ({sweep['std_kind']}), by "
      "target train examples per class.", "",
      "| method | " + " | ".join(f"n={k}" for k in sizes) + " |",
      "|---|" + "---|" * len(sizes),
  ]
  for name, points in sweep["methods"].items():
    by_size = {p["target_per_class"]: p for p in points}
    cells = [f"{_pct(by_size[k]['mean'])} ± {_pct(by_size[k]['std'])}"
             if k in by_size else "-" for k in sizes]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "Split sizes per target size:", ""]
  for k, splits in sweep["splits"].items():
    sizes_text = ", ".join(f"{n} {s['size']}" for n, s in splits.items())
    lines.append(f"- n={k}: {sizes_text}")
  test_sizes = {(s.get("tgt_test") or {}).get("size")
                for s in sweep["splits"].values()}
  if len(test_sizes) > 1:
    lines += ["", "The test split differs between target sizes (it takes the "
              "examples left after the train and validation draws)."]
  lines += ["", f"{sweep['protocol']['test_split_use']}"]
  if sweep["notes"]:
    lines += ["", "Notes:", "", *[f"- {n}" for n in sweep["notes"]]]
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    sizes = [int(k) for k in _TARGET_PER_CLASS.value or []]
  except ValueError as e:
    raise app.UsageError(f"--target_per_class: {e}") from e
  seeds = _SEEDS.value
  sweep_seeds = _SWEEP_SEEDS.value or seeds
  try:
    check_arguments(_CONFIG.value, seeds=seeds, methods=_METHODS.value,
                    target_per_class=sizes or None)
    check_arguments(_CONFIG.value, seeds=sweep_seeds, methods=SWEEP_METHODS)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  try:
    summary = run_comparison(
        _CONFIG.value, _WORKDIR.value, seeds=seeds, methods=_METHODS.value,
        target_per_class=sizes or None, sweep_seeds=sweep_seeds)
  except RunInterruptedError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(128 + (e.signal or 0))
  except RunFailedError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  workdir = os.path.abspath(_WORKDIR.value)
  print()
  print(markdown_table(summary))
  print(f"Summary: {workdir}/summary.md, {workdir}/summary.json, "
        f"{workdir}/comparison.png")
  if "sweep" in summary:
    print(f"Sweep: {workdir}/sweep.md, {workdir}/sweep.json, "
          f"{workdir}/target_size_sweep.png")


if __name__ == "__main__":
  app.run(main)
