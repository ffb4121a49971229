"""Comparison reports: statistics over seeds, table rows, protocol, markdown.

Pure functions of run results (the dicts `train.train_and_evaluate`
returns); what each row saw comes from the methods table
(`l2tl_jax.methods`). Used by experiments.compare and experiments.study.
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections
import numpy as np

from l2tl_jax import methods


def sees(row: str) -> str:
  """What the report row `row` ('l2tl', 'l2tl (val-selected)', ...) saw."""
  method = row.removesuffix(methods.VAL_SELECTED)
  return methods.report_rows(method).get(row, "")


def stats(values: Sequence[float]) -> tuple[float, float]:
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
  mean, std = stats(values)
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
        sees=methods.get(method).sees)
    if not methods.get(method).val_selected_row:
      continue
    selected = [r.get("val_selected") or {} for r in results]
    name = method + methods.VAL_SELECTED
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
        sees=methods.report_rows(method)[name])
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
    weighting = methods.get(method).class_weights
    if weighting == "learned":
      weights = _mean_weights(
          results,
          lambda r: (r.get("policy") or {}).get("expected_class_weights"))
      if weights is None:
        continue
      entry = {"expected_class_weights": weights}
      alphas = [(r.get("policy") or {}).get("expected_alpha") for r in results]
      if all(a is not None for a in alphas):
        mean, std = stats(alphas)
        entry["expected_alpha"] = {"mean": mean, "std": std}
      out[method] = entry
    elif weighting == "datl":
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
      "sees": {name: sees(name) for name in rows},
  }
  if pre is not None:
    out["pretrain"]["key"] = pre.get("key")
    if "source_test_accuracy" in pre:
      out["pretrain"]["source_test_accuracy"] = pre["source_test_accuracy"]
      out["pretrain"]["source_test_examples"] = pre.get("source_test_examples")
  return out


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
