r"""A trained run's predictions on new images: top-k target class names.

  python -m experiments.predict --workdir=RUN --images=PATH[,PATH...] \
      [--params=final|val_selected] [--top_k=5] [--output=predictions.csv] \
      [--plot=confusion.png] [--batch_size=N] [--progress_bar=false]

PATH is an image file, several (comma-separated, or as arguments after the
flags: `--workdir=RUN photos/*.jpg`), or a folder. The images go through the
run's own evaluation preprocessing (its config.json: size, channels, pixel
scaling; gray and RGB images are converted as its data were) and its
final params, or with --params=val_selected those of its best validation
accuracy.

A folder's images are predicted (hidden files skipped, as the training scan
skips them). When it holds class subfolders named as the run's target
classes (results.json's tgt_class_names; a '/' in a name is '_' in the
folder's), the images under them are scored: accuracy, per-class accuracy
and a confusion-matrix PNG (--plot; by default beside --output, else
<workdir>/plots/predict_confusion_<params>.png).

Without --output every image gets a line, `path [true class]: class p, ...`;
with --output the lines go to a CSV instead (written atomically): path,
true_class, class_1, prob_1, ..., class_k, prob_k, error. A file that cannot
be read or decoded is skipped and listed at the end (and in the CSV with its
error); it never stops the others. Images run in batches of the run's
config.eval.batch_size (--batch_size), compiled once; a progress bar shows
on a terminal (--progress_bar=false hides it).

Exit codes as experiments.main (experiments/cli.py): a user error (no run or
no checkpoint in --workdir, a run saved by another version, a missing image
path, class folders that are not the run's classes, no usable image,
--params=val_selected where nothing was selected) is one line 'error: ...'
on stderr and exit code 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import collections
import csv
import io
import os
import sys
from typing import Any

from absl import flags
import numpy as np
import tqdm

from experiments import cli
from l2tl_jax import checkpointing
from l2tl_jax import data
from l2tl_jax import predict
from l2tl_jax import saved_run
from l2tl_jax.data import folder

# Its own flag set: importable beside experiments.inspect_weights, whose
# flags share names (--images, --top_k).
FLAGS = flags.FlagValues()
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The run's --workdir (experiments.main).",
    flag_values=FLAGS)
_IMAGES = flags.DEFINE_list(
    "images", [], "Image files and folders, comma-separated (more may follow "
    "the flags as arguments).", flag_values=FLAGS)
_PARAMS = flags.DEFINE_enum(
    "params", "final", list(saved_run.PARAMS),
    "'final': the params at the run's last step; 'val_selected': those of "
    "its best validation accuracy.", flag_values=FLAGS)
_TOP_K = flags.DEFINE_integer("top_k", 5, "Classes shown per image.",
                              lower_bound=1, flag_values=FLAGS)
_OUTPUT = flags.DEFINE_string(
    "output", None, "CSV of the predictions (instead of a line per image).",
    flag_values=FLAGS)
_PLOT = flags.DEFINE_string(
    "plot", None, "Confusion-matrix PNG of the images in class folders; "
    "default: beside --output, else in <workdir>/plots.", flag_values=FLAGS)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 0, "Images per batch; 0: the run's config.eval.batch_size.",
    lower_bound=0, flag_values=FLAGS)
_PROGRESS_BAR = flags.DEFINE_boolean(
    "progress_bar", True, "A progress bar on stderr when it is a terminal.",
    flag_values=FLAGS)


def class_folder_name(class_name: str) -> str:
  """The folder name of a target class: the name, '/' written '_'."""
  return class_name.replace("/", "_")


def _is_image_name(name: str) -> bool:
  return name.lower().endswith(tuple(folder.IMAGE_EXTENSIONS))


def _images_below(directory: str, others: collections.Counter) -> list[str]:
  """Image files below `directory` (sorted walk, hidden entries skipped);
  files of other extensions are counted in `others`."""
  out = []
  for root, dirs, files in os.walk(directory):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(files):
      if name.startswith("."):
        continue
      if _is_image_name(name):
        out.append(os.path.join(root, name))
      else:
        others[os.path.splitext(name)[1].lower() or "(none)"] += 1
  return out


def collect_images(paths: Sequence[str], class_names: Sequence[str]
                   ) -> tuple[list[tuple[str, int | None]], list[str]]:
  """The images to predict and their true classes, where folders say them.

  Args:
    paths: files and folders. A file is predicted whatever its extension. A
      folder's image files directly in it are predicted without a class;
      its subfolders must be named as classes (`class_folder_name`), and
      the images below each are of that class.
    class_names: the run's target class names, in head order.

  Returns:
    ([(path, class index or None)], notes), in the order given, each
    folder's images sorted.

  Raises:
    DataError: a path that does not exist, subfolders that are not class
      names, or no image at all.
  """
  by_folder = {class_folder_name(c): i for i, c in enumerate(class_names)}
  items, notes = [], []
  others: collections.Counter = collections.Counter()
  for path in paths:
    if os.path.isfile(path):
      items.append((path, None))
      continue
    if not os.path.isdir(path):
      raise data.DataError(f"{path}: no such image file or folder.")
    entries = sorted(e for e in os.listdir(path) if not e.startswith("."))
    subfolders = [e for e in entries if os.path.isdir(os.path.join(path, e))]
    unknown = [e for e in subfolders if e not in by_folder]
    if unknown:
      shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
      raise data.DataError(
          f"{path}: its subfolder(s) {shown} are not target classes of the "
          f"run ({', '.join(by_folder)}); name class folders as the classes "
          "to score them, or give the image files or a folder of images.")
    for entry in entries:
      full = os.path.join(path, entry)
      if entry in subfolders:
        items += [(p, by_folder[entry]) for p in _images_below(full, others)]
      elif _is_image_name(entry):
        items.append((full, None))
      else:
        others[os.path.splitext(entry)[1].lower() or "(none)"] += 1
  if others:
    counts = ", ".join(f"{ext}: {n}" for ext, n in sorted(others.items()))
    notes.append(f"Skipped {sum(others.values())} file(s) whose extension is "
                 f"not an image's ({counts}).")
  if not items:
    raise data.DataError(
        f"No image files in {', '.join(paths)} (extensions "
        f"{', '.join(folder.IMAGE_EXTENSIONS)}).")
  return items, notes


def predictions_csv(items: Sequence[tuple[str, int | None]],
                    result: predict.Predictions,
                    class_names: Sequence[str], top_k: int) -> str:
  """CSV text: one row per item, predicted or skipped, in item order."""
  k = min(top_k, len(class_names))
  classes, probs = predict.top_k(result.probs, k)
  row_of = {p: i for i, p in enumerate(result.paths)}
  errors = dict(result.skipped)
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["path", "true_class"]
                  + [f"{c}_{i}" for i in range(1, k + 1)
                     for c in ("class", "prob")] + ["error"])
  for path, label in items:
    true = "" if label is None else class_names[label]
    if path in row_of:
      i = row_of[path]
      top = [v for c, p in zip(classes[i], probs[i])
             for v in (class_names[c], f"{p:.6f}")]
      writer.writerow([path, true, *top, ""])
    else:
      writer.writerow([path, true, *[""] * (2 * k), errors.get(path, "")])
  return out.getvalue()


def _plot_path(plot: str | None, output: str | None, workdir: str,
               params: str) -> str:
  if plot:
    return plot
  if output:
    return os.path.splitext(output)[0] + "_confusion.png"
  return os.path.join(workdir, "plots", f"predict_confusion_{params}.png")


def run_predict(workdir: str, images: Sequence[str], *,
                params: str = "final", top_k: int = 5,
                output: str | None = None, plot: str | None = None,
                batch_size: int = 0, progress_bar: bool = False,
                emit: Callable[[str], Any] = print,
                warn: Callable[[str], Any] | None = None) -> dict[str, Any]:
  """Predicts, prints and writes; returns what it found.

  Args:
    workdir: the run's workdir.
    images: image files and folders.
    params: 'final' or 'val_selected'.
    top_k: classes per image.
    output: CSV path, or None to print a line per image.
    plot: confusion-matrix PNG (scored folders); None: `_plot_path`.
    batch_size: images per batch; 0: the run's config.eval.batch_size.
    progress_bar: show one on stderr (where it is a terminal).
    emit: prints a line of results.
    warn: prints a warning line (default: 'warning: ...' on stderr).

  Returns:
    {'run': {workdir, params, step}, 'predicted': N, 'skipped': [(path,
    reason)], 'predictions': [(path, [(class name, prob)])], and for
    images in class folders 'score' (predict.score's dict, the confusion
    matrix as lists) and 'plot'}.

  Raises:
    RunError: no usable run in `workdir` (saved_run.load_run).
    DataError: a missing path, unknown class folders, or no usable image.
  """
  warn = warn or (lambda line: print(f"warning: {line}", file=sys.stderr,
                                     flush=True))
  run = saved_run.load_run(workdir, params=params)
  for note in run.notes:
    warn(note)
  items, notes = collect_images(images, run.class_names)
  for note in notes:
    warn(note)
  paths = [p for p, _ in items]
  size = batch_size or int(run.config.get("eval", {}).get("batch_size", 64))
  size = max(1, min(size, len(paths)))
  with tqdm.tqdm(total=len(paths), unit="img", file=sys.stderr,
                 desc="predict", leave=False, dynamic_ncols=True,
                 disable=not (progress_bar and sys.stderr.isatty())) as bar:
    result = predict.predict_files(run, paths, batch_size=size,
                                   progress=bar.update)
  classes, probs = predict.top_k(result.probs, top_k)
  names = run.class_names
  label_of = dict(items)
  summary: dict[str, Any] = {
      "run": {"workdir": run.workdir, "params": run.params,
              "step": run.step},
      "predicted": len(result.paths),
      "skipped": list(result.skipped),
      "predictions": [
          (path, [(names[c], float(p)) for c, p in zip(classes[i], probs[i])])
          for i, path in enumerate(result.paths)],
  }
  if output is None:
    for path, top in summary["predictions"]:
      true = label_of.get(path)
      shown = "" if true is None else f" [{names[true]}]"
      emit(f"{path}{shown}: "
           + ", ".join(f"{name} {p:.4f}" for name, p in top))
  else:
    checkpointing.write_text_atomic(
        output, predictions_csv(items, result, names, top_k))
  emit(f"predicted {len(result.paths)} image(s) with the {run.params} "
       f"params of {run.workdir} (step {run.step})"
       + (f"; predictions in {output}" if output else ""))
  labelled = [i for i, p in enumerate(result.paths)
              if label_of.get(p) is not None]
  if labelled:
    labels = np.asarray([label_of[result.paths[i]] for i in labelled])
    scores = predict.score(labels, result.probs[labelled], names)
    width = max(len(n) for n in names)
    emit(f"accuracy: {scores['accuracy']:.4f} ({scores['correct']} of "
         f"{scores['count']} images in class folders)")
    emit("per-class accuracy:")
    for i, name in enumerate(names):
      acc, count = (scores["per_class_accuracy"][name],
                    scores["per_class_count"][name])
      emit(f"  {name:<{width}}  " + ("-" if acc is None else
                                     f"{acc:.4f} ({scores['confusion'][i, i]}"
                                     f"/{count})"))
    path = predict.plot_confusion(
        scores["confusion"], names, _plot_path(plot, output, run.workdir,
                                               run.params),
        title=f"{os.path.basename(run.workdir)} ({run.params} params, step "
              f"{run.step}): accuracy {scores['accuracy']:.4f} on "
              f"{scores['count']} images")
    emit(f"confusion matrix: {path}")
    summary["score"] = {**scores, "confusion": scores["confusion"].tolist()}
    summary["plot"] = path
  if result.skipped:
    warn(f"skipped {len(result.skipped)} image(s) that could not be used:")
    for path, reason in result.skipped:
      warn(f"  {path}: {reason}")
  if not result.paths:
    raise data.DataError(
        f"None of the {len(paths)} image(s) could be used (listed above).")
  return summary


def _check_args(rest: Sequence[str]) -> list[str]:
  """The image paths; every argument checked before any work."""
  if not _WORKDIR.value:
    cli.usage_error("--workdir is required: the run's --workdir.")
  if not os.path.isdir(_WORKDIR.value):
    cli.usage_error(f"--workdir={_WORKDIR.value}: no such directory.")
  images = [p for p in [*_IMAGES.value, *rest] if p]
  if not images:
    cli.usage_error("--images is required: image files or folders.")
  missing = [p for p in images if not os.path.exists(p)]
  if missing:
    cli.usage_error(f"no such image file or folder: {', '.join(missing)}.")
  for name, value in (("output", _OUTPUT.value), ("plot", _PLOT.value)):
    if value and os.path.isdir(value):
      cli.usage_error(f"--{name}={value} is a directory; give a file name.")
  return images


def main(argv: Sequence[str]) -> None:
  """Parses `argv` (program name first) into FLAGS and predicts."""
  rest = cli.start_command(argv, FLAGS, __doc__)
  if rest is None:  # --help
    return
  images = _check_args(rest[1:])
  cli.run_or_exit(run_predict, _WORKDIR.value, images,
                  params=_PARAMS.value, top_k=_TOP_K.value,
                  output=_OUTPUT.value, plot=_PLOT.value,
                  batch_size=_BATCH_SIZE.value,
                  progress_bar=_PROGRESS_BAR.value)


if __name__ == "__main__":
  main(sys.argv)
