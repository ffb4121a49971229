"""PNG plots of one run (from its workdir files) and of method comparisons.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas, so no
pyplot state is created or leaked and no display is needed. Every file is
written to a temporary name in its directory, then renamed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from l2tl_jax import atomic

PLOTS_DIR = "plots"
# Most class names written on the heatmap's y axis; more are subsampled.
_MAX_CLASS_TICKS = 40


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def _step_axes(num_panels: int, height: float) -> tuple[Figure, list]:
  """A figure of `num_panels` stacked axes sharing a step x axis."""
  fig = _new_figure(8.0, height)
  return fig, list(fig.subplots(num_panels, 1, sharex=True, squeeze=False)[:, 0])


def _save_step_axes(fig: Figure, axes: list, path: str) -> str:
  """Grids every panel, labels the shared step axis and saves."""
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[-1].set_xlabel("step")
  return save_figure(fig, path)


def save_figure(fig: Figure, path: str) -> str:
  """Saves `fig` as a PNG at `path`, atomically, with the umask's mode.

  Args:
    fig: the figure.
    path: destination file; its directory is created if missing.

  Returns:
    `path`.
  """
  with atomic.writer(path, "wb", suffix=".png") as f:
    fig.savefig(f, format="png", bbox_inches="tight")
  return path


def read_metrics(path: str) -> list[dict[str, Any]]:
  """Records of a metrics.jsonl file; [] when it is missing.

  Args:
    path: the metrics.jsonl file.

  Returns:
    One dict per non-empty line, in file order.
  """
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _series(records: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps [T], values [T]) of the records holding a scalar `key`."""
  rows = [(r["step"], r[key]) for r in records
          if isinstance(r.get(key), (int, float))]
  if not rows:
    return np.zeros((0,)), np.zeros((0,))
  steps, values = zip(*rows)
  return np.asarray(steps, np.float64), np.asarray(values, np.float64)


def _edges(centers: np.ndarray) -> np.ndarray:
  """Cell edges [T + 1] around sorted centres [T] (midpoints between them)."""
  if len(centers) == 1:
    return np.asarray([centers[0] - 0.5, centers[0] + 0.5])
  mid = (centers[1:] + centers[:-1]) / 2
  return np.concatenate([[2 * centers[0] - mid[0]], mid,
                         [2 * centers[-1] - mid[-1]]])


def plot_class_weights(
    records: Sequence[dict], class_names: Sequence[str] | None, path: str
) -> str | None:
  """Heatmap of each source class's expected weight over training.

  Args:
    records: metrics.jsonl records; those with
      'policy/expected_class_weights' (a list [C_src]) are used.
    class_names: source class names in label order, or None for indices.
    path: PNG destination.

  Returns:
    `path`, or None when no record holds expected class weights.
  """
  rows = [(r["step"], r["policy/expected_class_weights"]) for r in records
          if r.get("policy/expected_class_weights")]
  if not rows:
    return None
  steps = np.asarray([s for s, _ in rows], np.float64)  # [T]
  weights = np.asarray([w for _, w in rows], np.float64)  # [T, C_src]
  num_classes = weights.shape[1]
  if class_names is None or len(class_names) != num_classes:
    class_names = [str(i) for i in range(num_classes)]
  height = min(max(3.0, 0.22 * num_classes + 1.5), 16.0)
  fig = _new_figure(9.0, height)
  ax = fig.add_subplot()
  # The colour range is the data range: early changes are small.
  low, high = float(weights.min()), float(weights.max())
  if high - low < 1e-6:
    low, high = low - 0.5e-6, high + 0.5e-6
  mesh = ax.pcolormesh(_edges(steps), np.arange(num_classes + 1) - 0.5,
                       weights.T, cmap="viridis", vmin=low, vmax=high,
                       shading="flat")
  ticks = np.arange(num_classes)
  if num_classes > _MAX_CLASS_TICKS:
    ticks = ticks[::int(np.ceil(num_classes / _MAX_CLASS_TICKS))]
  ax.set_yticks(ticks)
  ax.set_yticklabels([class_names[i] for i in ticks],
                     fontsize=8 if num_classes > 20 else 10)
  ax.set_ylim(num_classes - 0.5, -0.5)
  ax.set_xlabel("step")
  ax.set_ylabel("source class")
  ax.set_title("Expected source class weight (policy)")
  fig.colorbar(mesh, ax=ax, label="expected weight")
  return save_figure(fig, path)


def plot_alpha(records: Sequence[dict], path: str) -> str | None:
  """Sampled alpha (mean over each log window) and expected alpha over steps.

  Args:
    records: metrics.jsonl records ('policy/alpha', 'policy/expected_alpha').
    path: PNG destination.

  Returns:
    `path`, or None when neither series is logged.
  """
  sampled = _series(records, "policy/alpha")
  expected = _series(records, "policy/expected_alpha")
  if not len(sampled[0]) and not len(expected[0]):
    return None
  fig = _new_figure(8.0, 4.0)
  ax = fig.add_subplot()
  if len(sampled[0]):
    ax.plot(*sampled, marker=".", alpha=0.6, label="sampled alpha (log mean)")
  if len(expected[0]):
    ax.plot(*expected, linewidth=2, label="expected alpha")
  ax.set_xlabel("step")
  ax.set_ylabel("alpha (source loss weight)")
  ax.set_title("Alpha over training")
  ax.grid(alpha=0.3)
  ax.legend()
  return save_figure(fig, path)


def plot_reward(records: Sequence[dict], path: str) -> str | None:
  """The policy's learning signal over steps.

  REINFORCE: the reward against its baseline, and the advantage below. The
  meta-gradient estimator: its objective (the validation loss after the
  model step), and the policy gradient norm below.

  Args:
    records: metrics.jsonl records ('policy/reward', 'policy/baseline',
      'policy/advantage'; or 'policy/meta_objective', 'policy/grad_norm').
    path: PNG destination.

  Returns:
    `path`, or None when neither signal is logged.
  """
  reward = _series(records, "policy/reward")
  if not len(reward[0]):
    return _plot_meta_objective(records, path)
  baseline = _series(records, "policy/baseline")
  advantage = _series(records, "policy/advantage")
  fig, axes = _step_axes(2 if len(advantage[0]) else 1,
                         6.0 if len(advantage[0]) else 4.0)
  axes[0].plot(*reward, marker=".", label="reward")
  if len(baseline[0]):
    axes[0].plot(*baseline, linewidth=2, label="baseline")
  axes[0].set_ylabel("reward")
  axes[0].set_title("Policy reward and baseline")
  axes[0].legend()
  if len(advantage[0]):
    axes[1].plot(*advantage, color="tab:purple", marker=".", label="advantage")
    axes[1].axhline(0.0, color="gray", linewidth=0.8)
    axes[1].set_ylabel("advantage")
    axes[1].legend()
  return _save_step_axes(fig, axes, path)


def _plot_meta_objective(records: Sequence[dict], path: str) -> str | None:
  objective = _series(records, "policy/meta_objective")
  if not len(objective[0]):
    return None
  grad_norm = _series(records, "policy/grad_norm")
  fig, axes = _step_axes(2 if len(grad_norm[0]) else 1,
                         6.0 if len(grad_norm[0]) else 4.0)
  axes[0].plot(*objective, marker=".", label="validation loss after the step")
  axes[0].set_ylabel("meta objective")
  axes[0].set_title("Meta-gradient objective")
  axes[0].legend()
  if len(grad_norm[0]):
    axes[1].plot(*grad_norm, color="tab:purple", marker=".",
                 label="policy gradient norm")
    axes[1].set_yscale("log")
    axes[1].legend()
  return _save_step_axes(fig, axes, path)


def plot_accuracy(
    records: Sequence[dict], results: dict[str, Any], path: str
) -> str | None:
  """Target accuracy curves (top) and train losses (bottom) of one run.

  The final test accuracy is a horizontal line labelled 'test (final)'; the
  validation-selected step is a star.

  Args:
    records: metrics.jsonl records ('eval/val_accuracy', 'train/src_loss',
      'train/tgt_loss').
    results: results.json contents ({} if absent); 'test_accuracy' and
      'val_selected' are drawn when present.
    path: PNG destination.

  Returns:
    `path`, or None when there is nothing to draw.
  """
  val = _series(records, "eval/val_accuracy")
  losses = {k: _series(records, f"train/{k}") for k in ("tgt_loss", "src_loss")}
  losses = {k: v for k, v in losses.items() if len(v[0])}
  test = results.get("test_accuracy")
  has_acc = bool(len(val[0])) or test is not None
  if not has_acc and not losses:
    return None
  num_panels = int(has_acc) + int(bool(losses))
  fig, axes = _step_axes(num_panels, 3.5 * num_panels + 0.5)
  if has_acc:
    ax = axes[0]
    if len(val[0]):
      ax.plot(*val, marker="o", label="validation")
    selected = results.get("val_selected") or {}
    if selected.get("step"):
      ax.plot([selected["step"]], [selected["val_accuracy"]], marker="*",
              markersize=14, linestyle="none", color="tab:green",
              label="val-selected")
    if test is not None:
      ax.axhline(test, color="tab:red", linestyle="--",
                 label=f"test (final) {test:.3f}")
    ax.set_ylabel("target accuracy")
    ax.set_title(f"Target accuracy ({results.get('method', 'run')})")
    ax.legend()
  if losses:
    ax = axes[-1]
    labels = {"tgt_loss": "target train loss", "src_loss": "source train loss"}
    for key, series in losses.items():
      ax.plot(*series, marker=".", label=labels[key])
    ax.set_ylabel("loss")
    ax.legend()
  return _save_step_axes(fig, axes, path)


def plot_run(workdir: str) -> list[str]:
  """Writes the PNG plots of one run into workdir/plots.

  Reads workdir/metrics.jsonl and workdir/results.json (either may be
  missing); panels whose data are absent (e.g. the policy plots of
  fine-tuning) are skipped.

  Args:
    workdir: a run directory written by `train.train_and_evaluate`.

  Returns:
    Paths of the files written, among class_weights.png (expected source
    class weights), alpha.png, reward.png and accuracy.png.
  """
  records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  results: dict[str, Any] = {}
  results_path = os.path.join(workdir, "results.json")
  if os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
  out = os.path.join(workdir, PLOTS_DIR)
  written = [
      plot_class_weights(records, results.get("src_class_names"),
                         os.path.join(out, "class_weights.png")),
      plot_alpha(records, os.path.join(out, "alpha.png")),
      plot_reward(records, os.path.join(out, "reward.png")),
      plot_accuracy(records, results, os.path.join(out, "accuracy.png")),
  ]
  return [p for p in written if p is not None]


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
  fig = _new_figure(width, 9.0 if per_class else 4.5)
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
  fig = _new_figure(7.0, 4.5)
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
  fig = _new_figure(max(7.0, 0.9 * len(names) * max(1, len(rows) / 3) + 3.0),
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
  fig = _new_figure(4.5 * len(entries) + 1.5,
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
