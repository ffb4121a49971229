"""Comparison reports: statistics over seeds, table rows, protocol, markdown.

Pure functions of run results (the dicts `train.train_and_evaluate`
returns); what each row saw comes from the methods table
(`l2tl_jax.methods`). Used by experiments.compare, experiments.study and
experiments.relevance (the source relevance report: `source_relevance`,
`relevance_markdown`).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Sequence

import ml_collections
import numpy as np
import scipy.stats

from l2tl_jax import agreement
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


def per_class_summary(
    runs: dict[str, list[tuple[int, str, dict[str, Any]]]],
) -> dict[str, Any] | None:
  """Per target class test accuracy (%) of each method, over seeds.

  The final parameters' accuracy on each target class; a method whose runs
  predate per-class results is left out.

  Args:
    runs: method -> [(seed, run_dir, results dict)], as `summarize_rows`.

  Returns:
    {'classes': [name, ...], 'methods': {method: {'mean': {class: %},
    'std': {class: %}, 'seeds': n}}}, or None when no run has them.
  """
  classes, methods = None, {}
  for method, seed_runs in runs.items():
    tables = [r.get("test_per_class_accuracy") for _, _, r in seed_runs]
    if not tables or any(not t for t in tables):
      continue
    classes = classes or list(tables[0])
    values = 100.0 * np.asarray(
        [[np.nan if t.get(c) is None else t[c] for c in classes]
         for t in tables], np.float64)
    mean, std = stats_columns(values)
    methods[method] = {"mean": dict(zip(classes, mean)),
                       "std": dict(zip(classes, std)),
                       "seeds": len(tables)}
  if not methods:
    return None
  return {"classes": classes, "methods": methods}


def stats_columns(values: np.ndarray) -> tuple[list, list]:
  """Column means and sample stds (0 for one row) of [seeds, columns]."""
  with np.errstate(all="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN columns.
    mean = np.nanmean(values, axis=0)
    std = (np.nanstd(values, axis=0, ddof=1) if len(values) > 1
           else np.zeros(values.shape[1]))
  clean = lambda a: [None if not np.isfinite(x) else float(x) for x in a]
  return clean(mean), clean(std)


def per_class_markdown(per_class: dict[str, Any] | None) -> str:
  """The per-class table of summary.md: classes x methods, best in bold."""
  if not per_class:
    return ""
  methods = list(per_class["methods"])
  lines = [
      "## Per target class", "",
      "Test accuracy in % on each target class (final parameters), mean ± "
      "std over seeds; the best mean of each class in bold. Where a method "
      "helps and where it hurts shows here, not in the mean.", "",
      "| target class | " + " | ".join(methods) + " |",
      "|---|" + "---|" * len(methods)]
  for c in per_class["classes"]:
    means = [per_class["methods"][m]["mean"][c] for m in methods]
    best = max((x for x in means if x is not None), default=None)
    cells = []
    for m, x in zip(methods, means):
      if x is None:
        cells.append("-")
        continue
      std = per_class["methods"][m]["std"][c]
      text = f"{x:.2f}" + ("" if std is None else f" ± {std:.2f}")
      cells.append(f"**{text}**" if x == best else text)
    lines.append(f"| {_cell(c)} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


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


def mean_pairwise_spearman(weights: np.ndarray) -> float | None:
  """Mean Spearman rank correlation over all pairs of rows.

  Args:
    weights: [seeds, classes].

  Returns:
    The mean over the seeds * (seeds - 1) / 2 pairs, or None with fewer than
    2 rows. A pair where one row is constant counts as 0.
  """
  weights = np.asarray(weights, np.float64)
  values = []
  for a, b in itertools.combinations(range(len(weights)), 2):
    if np.ptp(weights[a]) == 0 or np.ptp(weights[b]) == 0:
      values.append(0.0)
      continue
    rho = scipy.stats.spearmanr(weights[a], weights[b]).statistic
    values.append(float(rho))
  return float(np.mean(values)) if values else None


# Where a run's source class weights are, by kind: the policy's expected
# weights (whatever estimator learned them) or DATL's fixed ones.
WEIGHT_KINDS = {
    "learned": "learned weights (the policy's expected weight at the last "
               "step)",
    "datl": "fixed DATL weights (P_t(c) / P_s(c) from the target train "
            "images)",
}


def run_class_weights(results: dict[str, Any]
                      ) -> tuple[str, dict[str, float]] | None:
  """(kind, {source class: weight}) of one run, or None when it has none.

  Args:
    results: a run's results dict.

  Returns:
    ('learned', results['policy']['expected_class_weights']), else
    ('datl', results['datl_class_weights']), else None.
  """
  learned = (results.get("policy") or {}).get("expected_class_weights")
  if learned:
    return "learned", learned
  if results.get("datl_class_weights"):
    return "datl", results["datl_class_weights"]
  return None


def seed_ranks(weights: np.ndarray) -> np.ndarray:
  """Rank of each class within each row, 1 = largest weight.

  Tied classes share the best of their ranks (1, 2, 2, 4).

  Args:
    weights: [seeds, classes].

  Returns:
    [seeds, classes] int ranks.
  """
  weights = np.asarray(weights, np.float64)
  return 1 + (weights[:, None, :] > weights[:, :, None]).sum(-1)


def _relevance_of(method: str, results: dict[str, Any], num_classes: int,
                  notes: list[str]) -> list | None:
  relevance = (results.get("config") or {}).get("source_class_relevance")
  if relevance is None:
    return None
  if len(relevance) != num_classes:
    notes.append(f"{method}: config.source_class_relevance has "
                 f"{len(relevance)} entries, the source {num_classes} "
                 "classes: not shown.")
    return None
  return [int(r) if float(r).is_integer() else float(r) for r in relevance]


def _method_relevance(method, seed_runs, notes):
  """The relevance entry of one method, or None when no run has weights."""
  found = [(s, d, r, run_class_weights(r)) for s, d, r in seed_runs]
  with_weights = [x for x in found if x[3] is not None]
  if not with_weights:
    return None
  missing = [s for s, _, _, w in found if w is None]
  if missing:
    notes.append(f"{method}: seeds {missing} have no source class weights; "
                 "the table uses the others.")
  kinds = {w[0] for *_, w in with_weights}
  if len(kinds) > 1:
    raise ValueError(f"{method}: some seeds have learned class weights, "
                     "others DATL ones.")
  first = with_weights[0][2]
  names = list(first.get("src_class_names") or with_weights[0][3][1])
  for s, d, _, (_, table) in with_weights:
    if set(table) != set(names):
      raise ValueError(
          f"{method} seed {s} ({d}) weights other source classes than seed "
          f"{with_weights[0][0]}: {sorted(set(table) ^ set(names))}.")
  w = np.asarray([[t[n] for n in names] for *_, (_, t) in with_weights],
                 np.float64)  # [S, C]
  ranks = seed_ranks(w)  # [S, C]
  above = (w > np.median(w, axis=1, keepdims=True)).sum(0)  # [C]
  relevance = _relevance_of(method, first, len(names), notes)
  classes = []
  for c in sorted(range(len(names)), key=lambda c: -w[:, c].mean()):
    mean, std = stats(w[:, c])
    classes.append({
        "rank": len(classes) + 1,
        "name": names[c],
        "mean": mean,
        "std": std,
        "min": float(w[:, c].min()),
        "max": float(w[:, c].max()),
        "per_seed": w[:, c].tolist(),
        "seed_ranks": ranks[:, c].tolist(),
        "above_median": int(above[c]),
        "relevant": None if relevance is None else relevance[c],
    })
  kind = next(iter(kinds))
  return {
      "kind": kind,
      "seeds": [s for s, *_ in with_weights],
      "run_dirs": [d for _, d, *_ in with_weights],
      "spearman": mean_pairwise_spearman(w),
      "has_relevance": relevance is not None,
      "classes": classes,
  }


def source_relevance(
    runs: dict[str, list[tuple[int, str, dict[str, Any]]]]
) -> dict[str, Any]:
  """Source classes ranked by weight per method, with agreement over seeds.

  Args:
    runs: method (or study variant) -> [(seed, run_dir, results dict)], in
      display order. Weights are read with `run_class_weights`; the known
      answer, when a run's config has one, from
      results['config']['source_class_relevance'].

  Returns:
    {'methods': {method: {'kind': 'learned' | 'datl', 'seeds', 'run_dirs',
    'spearman' (mean pairwise Spearman over seeds, None with one seed),
    'has_relevance', 'classes': [{'rank', 'name', 'mean', 'std', 'min',
    'max', 'per_seed', 'seed_ranks', 'above_median', 'relevant'}] sorted by
    mean weight, largest first (ties keep the source class order)}},
    'without_weights': methods none of whose runs has class weights,
    'notes'}.

  Raises:
    ValueError: a method's seeds weight different source classes, or mix
      learned and DATL weights.
  """
  out: dict[str, Any] = {"methods": {}, "without_weights": [], "notes": []}
  for method, seed_runs in runs.items():
    entry = _method_relevance(method, seed_runs, out["notes"])
    if entry is None:
      out["without_weights"].append(method)
    else:
      out["methods"][method] = entry
  _datl_agreement(runs, out["methods"])
  return out


def _datl_agreement(runs, entries) -> None:
  """Adds 'datl_agreement' to each learned entry whose seeds have DATL's
  estimate: the run's own ('datl_estimate') or a DATL row's weights of the
  same seed (the same pre-training and target draw)."""
  datl_rows = {s: r["datl_class_weights"]
               for method, seed_runs in runs.items()
               if entries.get(method, {}).get("kind") == "datl"
               for s, _, r in seed_runs if r.get("datl_class_weights")}
  for method, entry in entries.items():
    if entry["kind"] != "learned":
      continue
    per_seed = []
    for s, _, r in runs[method]:
      check = agreement.of_results(r, datl_rows.get(s))
      if check is not None:
        per_seed.append((s, check))
    if per_seed:
      entry["datl_agreement"] = {
          "seeds": [s for s, _ in per_seed],
          "rank_corr": [a["rank_corr_with_datl"] for _, a in per_seed],
          "disagreeing_seeds": [s for s, a in per_seed if a["disagrees"]],
      }


def _datl_agreement_text(a: dict[str, Any]) -> str:
  """One paragraph on a learned method's agreement with DATL's ranking."""
  corr = ", ".join("-" if c is None else f"{c:.2f}" for c in a["rank_corr"])
  text = (f"Spearman rank correlation with DATL's estimate (the pre-trained "
          f"source classifier on the target train images), per seed "
          f"({', '.join(map(str, a['seeds']))}): {corr}.")
  bad = a["disagreeing_seeds"]
  if not bad:
    return text + " No seed disagrees."
  return text + (
      f" Seed{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} "
      "rank the classes against DATL with weights that moved apart: on the "
      "label-mismatch benchmarks, where the alignment estimators ranked the "
      "irrelevant classes first, every seed did; where they ranked right, "
      "none did. Compare with the datl and joint_uniform rows before "
      "trusting this ranking.")


def _shown(rows: list, max_rows: int | None) -> list:
  """`rows`, or their first and last max_rows // 2 around a None gap."""
  if max_rows is None or len(rows) <= max_rows:
    return rows
  half = max(1, max_rows // 2)
  return rows[:half] + [None] + rows[-half:]


def _cell(text: str) -> str:
  """`text` as one markdown table cell."""
  return str(text).replace("|", "\\|")


def relevance_table(entry: dict[str, Any], max_rows: int | None = None) -> str:
  """The ranked table of one method's `source_relevance` entry.

  Args:
    entry: `source_relevance(...)['methods'][method]`.
    max_rows: show only the top and bottom max_rows // 2 classes when there
      are more than max_rows; None: every class.

  Returns:
    Markdown table.
  """
  many = len(entry["seeds"]) > 1
  rel = entry["has_relevance"]
  if many:
    head = ["rank", "source class", "weight mean ± std", "min", "max",
            "rank per seed", "above median"]
  else:
    head = ["rank", "source class", "weight"]
  head += ["relevant"] if rel else []
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  num_seeds = len(entry["seeds"])
  for c in _shown(entry["classes"], max_rows):
    if c is None:
      hidden = len(entry["classes"]) - 2 * max(1, max_rows // 2)
      lines.append(f"| … | ({hidden} classes not shown) |"
                   + " |" * (len(head) - 2))
      continue
    if many:
      cells = [str(c["rank"]), _cell(c["name"]),
               f"{c['mean']:.3f} ± {c['std']:.3f}", f"{c['min']:.3f}",
               f"{c['max']:.3f}", ", ".join(map(str, c["seed_ranks"])),
               f"{c['above_median']}/{num_seeds}"]
    else:
      cells = [str(c["rank"]), _cell(c["name"]), f"{c['mean']:.3f}"]
    cells += [str(c["relevant"])] if rel else []
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def relevance_markdown(relevance: dict[str, Any],
                       max_rows: int | None = None) -> str:
  """The '## Source relevance' section: per method, its ranked table.

  Args:
    relevance: what `source_relevance` returns.
    max_rows: per table, as `relevance_table`.

  Returns:
    Markdown text ('' when no method has class weights).
  """
  entries = relevance["methods"]
  if not entries:
    return ""
  most = max(len(e["seeds"]) for e in entries.values())
  lines = [
      "## Source relevance", "",
      "Source classes ranked by the weight their examples get in the source "
      "loss, mean over seeds. Learned weights: the policy, whichever "
      "estimator trained it, weights up the classes whose examples it "
      "judged to help the target task on the target validation split, so "
      "the top classes are the ones that helped and the bottom ones did "
      "not. DATL's weights are fixed before training (how target-like the "
      "class looks), not learned. Weights compare within a method, not "
      "between methods.",
  ]
  if most > 1:
    lines += [
        "",
        "Columns: mean ± sample std over seeds, min and max over seeds; "
        "rank per seed: the class's rank in each seed, seeds in order "
        "(1 = largest weight, ties share the best rank); above median: in "
        "how many seeds the class's weight is above that seed's median "
        f"weight, i.e. in the top half of the classes ({most}/{most}: every "
        f"seed agrees that it helped, 0/{most}: no seed does). Rank "
        "agreement: the mean Spearman rank correlation of the class weights "
        "over all pairs of seeds (1: every seed ranks the classes alike, 0: "
        "no agreement).",
    ]
  if any(e["has_relevance"] for e in entries.values()):
    lines += ["", "relevant: the known answer of this benchmark "
              "(config.source_class_relevance): 1 a relevant source class, "
              "0 an irrelevant one."]
  for method, e in entries.items():
    n = len(e["seeds"])
    lines += ["", f"### {method}: {WEIGHT_KINDS[e['kind']]}", ""]
    seeds = ", ".join(map(str, e["seeds"]))
    facts = [f"{n} seed{'s' if n > 1 else ''} ({seeds})"]
    if e["spearman"] is not None:
      facts.append(f"rank agreement across seeds (mean pairwise Spearman) "
                   f"{e['spearman']:.2f}")
    lines += ["; ".join(facts) + ".", ""]
    if e.get("datl_agreement"):
      lines += [_datl_agreement_text(e["datl_agreement"]), ""]
    if max_rows is not None and len(e["classes"]) > max_rows:
      lines += [f"Top and bottom {max(1, max_rows // 2)} of "
                f"{len(e['classes'])} classes.", ""]
    lines.append(relevance_table(e, max_rows).rstrip("\n"))
  if relevance["without_weights"]:
    lines += ["", "No source class weights (not shown): "
              + ", ".join(relevance["without_weights"]) + "."]
  if relevance["notes"]:
    lines += ["", *[f"- {n}" for n in relevance["notes"]]]
  return "\n".join(lines) + "\n"


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


# Classes per table in summary.md; relevance.md (experiments.relevance)
# holds every class.
SUMMARY_MAX_ROWS = 20


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
  section = per_class_markdown(summary.get("per_class"))
  if section:
    lines += ["", section.rstrip("\n")]
  if summary["notes"]:
    lines += ["", "## Notes", "", *[f"- {n}" for n in summary["notes"]]]
  section = relevance_markdown(summary.get("source_relevance") or
                               {"methods": {}}, max_rows=SUMMARY_MAX_ROWS)
  if section:
    lines += ["", section.rstrip("\n")]
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
