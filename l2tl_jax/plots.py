"""PNG plots of one run, from its workdir files.

plot_run writes them into <workdir>/plots: the expected source class weights
over training, alpha, the policy's learning signal, and the target accuracy
and train losses. The plots across runs (method comparisons, target-size
sweeps, policy studies, source relevance) are in `l2tl_jax.plots_comparison`;
the figure and its atomic save in `l2tl_jax.plots_common`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from matplotlib.figure import Figure
import numpy as np

from l2tl_jax.plots_common import new_figure
from l2tl_jax.plots_common import save_figure  # Also read as plots.save_figure.
# Read as plots.plot_study_weights by experiments/study.py.
from l2tl_jax.plots_comparison import plot_study_weights  # pylint: disable=unused-import

PLOTS_DIR = "plots"
# Most class names written on the heatmap's y axis; more are subsampled.
_MAX_CLASS_TICKS = 40


def _step_axes(num_panels: int, height: float) -> tuple[Figure, list]:
  """A figure of `num_panels` stacked axes sharing a step x axis."""
  fig = new_figure(8.0, height)
  return fig, list(fig.subplots(num_panels, 1, sharex=True, squeeze=False)[:, 0])


def _save_step_axes(fig: Figure, axes: list, path: str) -> str:
  """Grids every panel, labels the shared step axis and saves."""
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[-1].set_xlabel("step")
  return save_figure(fig, path)


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
  fig = new_figure(9.0, height)
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
  fig = new_figure(8.0, 4.0)
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
