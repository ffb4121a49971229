"""PNG plots across runs: method comparisons, sweeps, studies, relevance.

  plot_comparison         test accuracy per method over seeds (with its
                          per-target-class panel)
  plot_target_size_sweep  test accuracy against target examples per class
  plot_study_weights      a policy study's learned source-class weights
  plot_source_relevance   source classes ranked by weight, one panel per
                          method

The plots of one run are in `l2tl_jax.plots`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2tl_jax.plots_common import new_figure
from l2tl_jax.plots_common import save_figure


def plot_comparison(summary: dict[str, Any], path: str) -> str:
  """Mean ± std test accuracy per method (error bars), with per-seed dots.

  The accuracy axis spans the data, not 0..1, so that differences of a
  point stay visible; the axis label says so.

  Args:
    summary: {'methods': {row name: {'mean': float, 'std': float,
      'per_seed': [float, ...]}, ...}} in display order (the summary.json
      written by experiments/compare.py); 'std_kind' labels the error bars.
    path: PNG destination.

  Returns:
    `path`.
  """
  rows = summary["methods"]
  names = list(rows)
  means = np.asarray([rows[n]["mean"] for n in names], np.float64)
  stds = np.asarray([rows[n]["std"] for n in names], np.float64)
  per_class = summary.get("per_class")
  width = max(6.0, 1.3 * len(names) + 2.0)
  fig = new_figure(width, 9.0 if per_class else 4.5)
  ax = fig.add_subplot(2, 1, 1) if per_class else fig.add_subplot()
  x = np.arange(len(names))
  ax.errorbar(x, means, yerr=stds, fmt="s", markersize=8, capsize=6,
              color="tab:blue",
              label=f"mean ± std ({summary.get('std_kind', 'std')})")
  rng = np.random.default_rng(0)  # Fixed jitter: the same file every time.
  for i, name in enumerate(names):
    values = np.asarray(rows[name]["per_seed"], np.float64)
    jitter = rng.uniform(-0.15, 0.15, size=len(values))
    ax.plot(i + jitter, values, "o", color="black", markersize=3, alpha=0.7,
            label="per seed" if i == 0 else None)
  ax.set_xticks(x)
  ax.set_xticklabels(names, rotation=20, ha="right")
  ax.set_xlim(-0.6, len(names) - 0.4)
  ax.set_ylabel("target test accuracy (axis not from 0)")
  ax.set_title("Target test accuracy per method")
  ax.grid(axis="y", alpha=0.3)
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
  if per_class:
    _per_class_panel(fig.add_subplot(2, 1, 2), per_class)
  return save_figure(fig, path)


def _per_class_panel(ax, per_class: dict[str, Any]) -> None:
  """Grouped bars: each target class's test accuracy, one bar per method."""
  classes, methods = per_class["classes"], list(per_class["methods"])
  x = np.arange(len(classes))
  bar = 0.8 / max(len(methods), 1)
  for i, m in enumerate(methods):
    entry = per_class["methods"][m]
    mean = np.asarray([np.nan if entry["mean"][c] is None
                       else entry["mean"][c] for c in classes], np.float64)
    std = np.asarray([0.0 if entry["std"][c] is None
                      else entry["std"][c] for c in classes], np.float64)
    ax.bar(x - 0.4 + bar * (i + 0.5), mean, bar, yerr=std, capsize=2,
           label=m)
  ax.set_xticks(x)
  ax.set_xticklabels(classes, rotation=20, ha="right")
  ax.set_ylabel("test accuracy per class (%)")
  ax.set_title("Per target class (final parameters, mean ± std over seeds)")
  ax.grid(axis="y", alpha=0.3)
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def plot_target_size_sweep(sweep_summary: dict[str, Any], path: str) -> str:
  """Test accuracy against target train examples per class, per method.

  Args:
    sweep_summary: {'methods': {name: [{'target_per_class': int, 'mean':
      float, 'std': float}, ...]}} (the sweep.json written by
      experiments/compare.py).
    path: PNG destination.

  Returns:
    `path`.
  """
  fig = new_figure(7.0, 4.5)
  ax = fig.add_subplot()
  sizes = set()
  for name, points in sweep_summary["methods"].items():
    points = sorted(points, key=lambda p: p["target_per_class"])
    n = [p["target_per_class"] for p in points]
    sizes.update(n)
    ax.errorbar(n, [p["mean"] for p in points],
                yerr=[p["std"] for p in points], marker="o", capsize=4,
                linestyle="--" if "val-selected" in name else "-",
                label=name)
  ax.set_xscale("log")
  ax.set_xticks(sorted(sizes))
  ax.set_xticklabels([str(s) for s in sorted(sizes)])
  ax.minorticks_off()
  ax.set_xlabel("target train examples per class")
  ax.set_ylabel("target test accuracy")
  ax.set_title("Target test accuracy against target size")
  ax.grid(alpha=0.3)
  ax.legend()
  return save_figure(fig, path)


def plot_study_weights(summary: dict[str, Any], path: str) -> str | None:
  """Learned expected class weight per source class, one bar per variant.

  Bars are means over seeds with sample-std error bars; the legend gives
  each variant's mean pairwise Spearman correlation across seeds.

  Args:
    summary: {'benchmark': str, 'variants': {name: {'class_weights':
      {'names', 'mean', 'std'}, 'spearman': float | None}}} (the study.json
      written by experiments/study.py); variants without weights are
      skipped.
    path: PNG destination.

  Returns:
    `path`, or None when no variant learned class weights.
  """
  rows = {n: r for n, r in summary["variants"].items() if "class_weights" in r}
  if not rows:
    return None
  names = next(iter(rows.values()))["class_weights"]["names"]
  x = np.arange(len(names))
  width = 0.8 / len(rows)
  fig = new_figure(max(7.0, 0.9 * len(names) * max(1, len(rows) / 3) + 3.0),
                    4.5)
  ax = fig.add_subplot()
  for i, (name, r) in enumerate(rows.items()):
    w = r["class_weights"]
    rho = r.get("spearman")
    label = name if rho is None else f"{name} (rank corr. {rho:.2f})"
    ax.bar(x + (i - (len(rows) - 1) / 2) * width, w["mean"], width,
           yerr=w["std"], capsize=2, label=label)
  levels = ((summary.get("base_config") or {}).get("l2tl") or {}).get(
      "num_levels")
  if levels:  # Zero logits: the mean of the levels 0..K-1 over K.
    ax.axhline((levels - 1) / (2 * levels), color="gray", linestyle="--",
               linewidth=1, label="initial weight")
  ax.set_xticks(x)
  ax.set_xticklabels(names, rotation=30 if len(names) > 6 else 0,
                     ha="right" if len(names) > 6 else "center")
  ax.set_ylim(0.0, 1.0)
  ax.set_ylabel("expected class weight (mean ± std over seeds)")
  ax.set_title(f"Learned source-class weights: {summary.get('benchmark', '')}")
  ax.grid(axis="y", alpha=0.3)
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
  return save_figure(fig, path)


def plot_source_relevance(relevance: dict[str, Any], path: str,
                          max_classes: int = 40) -> str | None:
  """Source classes sorted by mean weight, one panel per method.

  Horizontal bars are the mean weight over seeds, largest at the top; dots
  are the seeds. Where the benchmark knows which classes are relevant, bars
  of relevant classes are green and the others grey.

  Args:
    relevance: {'methods': {name: {'kind', 'seeds', 'spearman',
      'has_relevance', 'classes': [{'name', 'mean',
      'per_seed', 'relevant'}, ...] sorted}}} (what
      experiments.report.source_relevance returns).
    path: PNG destination.
    max_classes: with more classes, a panel shows the top and bottom
      max_classes // 2.

  Returns:
    `path`, or None when no method has class weights.
  """
  entries = relevance["methods"]
  if not entries:
    return None
  shown = {}
  for name, e in entries.items():
    classes = e["classes"]
    if len(classes) > max_classes:
      half = max_classes // 2
      classes = classes[:half] + classes[-half:]
    shown[name] = classes
  rows = max(len(c) for c in shown.values())
  fig = new_figure(4.5 * len(entries) + 1.5,
                    min(max(3.0, 0.28 * rows + 1.5), 16.0))
  axes = fig.subplots(1, len(entries), squeeze=False)[0]
  for ax, (name, e) in zip(axes, entries.items()):
    classes = shown[name]
    y = np.arange(len(classes))
    means = np.asarray([c["mean"] for c in classes], np.float64)
    if e.get("has_relevance"):
      colors = ["tab:green" if c["relevant"] else "tab:gray" for c in classes]
    else:
      colors = ["tab:blue"] * len(classes)
    ax.barh(y, means, color=colors, alpha=0.7)
    for i, c in enumerate(classes):
      ax.plot(c["per_seed"], [i] * len(c["per_seed"]), "o", color="black",
              markersize=3, alpha=0.7, label="per seed" if i == 0 else None)
    if e.get("has_relevance"):
      ax.barh([0], [0], color="tab:green", alpha=0.7, label="relevant")
      ax.barh([0], [0], color="tab:gray", alpha=0.7, label="irrelevant")
    hidden = len(e["classes"]) - len(classes)
    if hidden:
      ax.axhline(len(classes) / 2 - 0.5, color="gray", linestyle=":")
      ax.text(0.98, len(classes) / 2 - 0.5, f"{hidden} classes not shown",
              transform=ax.get_yaxis_transform(), ha="right", va="center",
              fontsize=8, backgroundcolor="white")
    ax.set_yticks(y)
    ax.set_yticklabels([c["name"] for c in classes],
                       fontsize=8 if len(classes) > 20 else 10)
    ax.set_ylim(len(classes) - 0.5, -0.5)
    n = len(e["seeds"])
    kind = "learned" if e["kind"] == "learned" else "fixed, DATL"
    title = f"{name}: source classes by weight ({kind}, {n} seed"
    title += "s)" if n > 1 else ")"
    if e.get("spearman") is not None:
      title += f"\nrank correlation across seeds {e['spearman']:.2f}"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("class weight (bar: mean over seeds)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
  return save_figure(fig, path)
