"""A trained run's target classifier applied to new images.

    run = saved_run.load_run(workdir, params="final")  # or "val_selected"
    out = predict.predict_files(run, paths, batch_size=64)
    out.probs  # float32 [N, C], C = len(run.class_names), head order

The run (`saved_run.Run`) holds the model as training built it;
`make_predict_fn` applies exactly the network the run evaluated. Images are
decoded as training decodes a folder (`data.folder.decode_image`), brought
to the run's evaluation geometry and channels (`data.tasks.image_specs`:
gray images become RGB and RGB become gray as the run's data did) and
scaled by its normalisation (`data.preprocess.normalize`). Also here: the
top-k classes of each image, the scores of labelled images (accuracy,
per-class accuracy, confusion matrix) and the confusion-matrix PNG.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import concurrent.futures
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2tl_jax import data
from l2tl_jax import models
from l2tl_jax import parallel
from l2tl_jax.data import folder
from l2tl_jax.data import preprocess
from l2tl_jax.saved_run import Run


# ------------------------------------------------------------ the function


def make_predict_fn(model: models.TransferModel
                    ) -> Callable[[Any, jax.Array], jax.Array]:
  """A compiled `predict_fn(variables, images) -> probs`.

  Args:
    model: a transfer model with a target head (`build.make_model`).

  Returns:
    A pure jitted function of variables {'params': {'encoder', 'tgt_head',
    ...}, **model_state} and images float32 [B, H, W, C] (scaled as the run's
    batches) to softmax probabilities float32 [B, C] of the target classes
    (evaluation mode: batch statistics are the running ones). It compiles
    once per batch shape and refuses a second trace (feed one fixed shape).
  """

  def predict_fn(variables, images):
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    features, _ = models.apply_encoder(model, params, model_state, images,
                                       train=False)
    logits = models.apply_head(model, params, features, "tgt")  # [B, C]
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

  return jax.jit(parallel.trace_guard(predict_fn, max_traces=1))


# --------------------------------------------------------------- images


def read_image(path: str) -> np.ndarray:
  """An image file decoded as training decodes folder images.

  Args:
    path: the file.

  Returns:
    uint8 [H, W, 1] (gray) or [H, W, 3] (RGB).

  Raises:
    DataError: the file cannot be read or is not a decodable image of a
      format read here (data.folder.DECODE_FORMATS).
  """
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise data.DataError(f"cannot read {path}: {e.strerror or e}") from e
  return folder.decode_image(raw, path)


def prepare(image: np.ndarray, run: Run) -> np.ndarray:
  """One decoded image brought to the run's evaluation geometry.

  Args:
    image: uint8 [H, W, C].
    run: the run.

  Returns:
    uint8 `run.image_shape`.

  Raises:
    DataError: the image cannot take that shape (e.g. another native size
      where the run's config keeps the native size).
  """
  out = preprocess.preprocess_image(image, run.spec)
  if out.shape != tuple(run.image_shape):
    raise data.DataError(
        f"it becomes {out.shape[0]}x{out.shape[1]}x{out.shape[2]}, the "
        f"run's images are {'x'.join(map(str, run.image_shape))}")
  return out


@dataclasses.dataclass(frozen=True)
class Predictions:
  """What `predict_files` made of a list of files.

  Attributes:
    paths: the files predicted, in input order.
    probs: float32 [N, C], row i the class probabilities of paths[i].
    skipped: (path, reason) of each file that could not be used.
  """

  paths: tuple[str, ...]
  probs: np.ndarray
  skipped: tuple[tuple[str, str], ...]


def _load(path: str, run: Run) -> np.ndarray | str:
  """The prepared image, or why it cannot be used."""
  try:
    return prepare(read_image(path), run)
  except data.DataError as e:
    return str(e)
  except Exception as e:  # pylint: disable=broad-except  # PIL on odd files.
    return f"{type(e).__name__}: {e}"


def predict_files(run: Run, paths: Sequence[str], *, batch_size: int,
                  progress: Callable[[int], Any] | None = None,
                  num_threads: int = 4) -> Predictions:
  """Class probabilities of image files, in fixed-size batches.

  Files are decoded and prepared on `num_threads` threads while the previous
  batch runs; a file that cannot be read or decoded is skipped (and
  returned with its reason), never stopping the others. Every batch has
  `batch_size` rows (the last one padded), so the function compiles once.

  Args:
    run: the run (`saved_run.load_run`).
    paths: image files.
    batch_size: images per batch.
    progress: called with the number of files done after each batch.
    num_threads: decoding threads.

  Returns:
    The Predictions.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  predict_fn = make_predict_fn(run.model)
  variables = jax.device_put(run.variables)
  done_paths, skipped, probs = [], [], []
  pending = None  # (paths, device probs) of the batch in flight.

  def collect():
    batch_paths, batch_probs = pending
    host = np.asarray(batch_probs)[:len(batch_paths)]
    done_paths.extend(batch_paths)
    probs.append(host)

  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    for start in range(0, len(paths), batch_size):
      chunk = list(paths[start:start + batch_size])
      loaded = list(pool.map(lambda p: _load(p, run), chunk))
      images = []
      kept = []
      for path, image in zip(chunk, loaded):
        if isinstance(image, str):
          skipped.append((path, image))
        else:
          images.append(image)
          kept.append(path)
      if images:
        batch = np.zeros((batch_size, *run.image_shape), np.uint8)
        batch[:len(images)] = np.stack(images)
        scaled = preprocess.normalize(batch, run.normalization)
        in_flight = predict_fn(variables, scaled)  # Dispatched, not waited.
        if pending is not None:
          collect()
        pending = (kept, in_flight)
      if progress is not None:
        progress(len(chunk))
    if pending is not None:
      collect()
  probs = (np.concatenate(probs) if probs
           else np.zeros((0, run.num_classes), np.float32))
  return Predictions(tuple(done_paths), probs, tuple(skipped))


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """The k most probable classes of each row, most probable first.

  Args:
    probs: [N, C].
    k: classes per row (at most C are returned).

  Returns:
    (classes int [N, k'], probabilities [N, k']), k' = min(k, C); ties keep
    the lower class index first.
  """
  k = min(int(k), probs.shape[-1])
  order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
  return order, np.take_along_axis(probs, order, axis=-1)


# -------------------------------------------------------------- scoring


def score(labels: np.ndarray, probs: np.ndarray,
          class_names: Sequence[str]) -> dict[str, Any]:
  """Accuracy, per-class accuracy and confusion matrix of labelled images.

  Args:
    labels: int [N], the true classes.
    probs: [N, C].
    class_names: the C names.

  Returns:
    {'accuracy', 'count', 'correct', 'per_class_accuracy' (name -> accuracy,
    None for a class without images), 'per_class_count' (name -> images),
    'confusion' (int [C, C], rows true classes, columns predicted)}.
  """
  labels = np.asarray(labels, np.int64)
  num_classes = len(class_names)
  predicted = np.argmax(probs, axis=-1) if len(labels) else labels
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, predicted), 1)
  totals = confusion.sum(axis=1)
  correct = int(np.trace(confusion))
  return {
      "accuracy": correct / len(labels) if len(labels) else None,
      "count": int(len(labels)),
      "correct": correct,
      "per_class_accuracy": {
          name: (float(confusion[i, i] / totals[i]) if totals[i] else None)
          for i, name in enumerate(class_names)},
      "per_class_count": {name: int(totals[i])
                          for i, name in enumerate(class_names)},
      "confusion": confusion,
  }


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str],
                   path: str, *, title: str = "") -> str:
  """A confusion-matrix PNG: counts, coloured by the share of each row.

  Args:
    confusion: int [C, C], rows the true classes, columns the predicted.
    class_names: the C names.
    path: PNG destination (written atomically).
    title: the figure's title.

  Returns:
    `path`.
  """
  # matplotlib only when plotting.
  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  from l2tl_jax import plots
  # pylint: enable=g-import-not-at-top

  confusion = np.asarray(confusion)
  n = len(class_names)
  rows = confusion.sum(axis=1, keepdims=True)
  share = confusion / np.maximum(rows, 1)
  side = min(max(4.0, 0.45 * n + 2.5), 20.0)
  fig = Figure(figsize=(side + 1.5, side), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  mesh = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
  ticks = np.arange(n)
  if n > 40:
    ticks = ticks[::int(np.ceil(n / 40))]
  size = 8 if n > 15 else 10
  ax.set_xticks(ticks)
  ax.set_xticklabels([class_names[i] for i in ticks], rotation=90,
                     fontsize=size)
  ax.set_yticks(ticks)
  ax.set_yticklabels([class_names[i] for i in ticks], fontsize=size)
  if n <= 30:
    for i in range(n):
      for j in range(n):
        if confusion[i, j]:
          ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center",
                  fontsize=size,
                  color="white" if share[i, j] > 0.5 else "black")
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  ax.set_title(title or "Confusion matrix")
  fig.colorbar(mesh, ax=ax, label="share of the true class's images")
  return plots.save_figure(fig, path)
