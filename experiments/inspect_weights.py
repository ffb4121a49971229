r"""What a weights file holds, where it maps, and what it predicts.

  python -m experiments.inspect_weights FILE [--images=DIR] [--top_k=5]

FILE: a torchvision/timm ResNet state dict (.safetensors; .pth where torch
is installed), a BiT .npz, or a checkpoint directory of this project. Prints
the detected family, the parameter count and every file key -> our path with
shapes. With --images, runs the file's classifier on the images in DIR
(the data pipeline's evaluation preprocessing for the family's weights,
`data.preprocessing_for_family`: torchvision resize 256 / centre crop 224 /
ImageNet mean-std; BiT resize to 224x224 and scale to [-1, 1]) and prints
the top-k classes. ImageNet class names are not shipped with any installed
package; for 1000-way heads the WordNet IDs (TFDS's imagenet2012 labels.txt,
the same sorted order as torchvision's and BiT-S's class indices) are shown
next to the indices.

Exit codes as experiments.main (experiments/cli.py): a user error (a bad or
misfit weights file, a missing image folder, an image that does not decode)
is one line 'error: ...' on stderr and exit code 2. Hidden files (macOS '._*'
AppleDouble files among them) are skipped as the training folder scan skips
them; an image too large to decode safely (Pillow's decompression-bomb limit)
is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import importlib.util
import os
from typing import Any
import warnings

from absl import app
from absl import flags
import jax
import numpy as np
from PIL import Image

from experiments import cli
from l2tl_jax import data
from l2tl_jax import families
from l2tl_jax import models
from l2tl_jax import weights
from l2tl_jax.data import decode
from l2tl_jax.data import preprocess
from l2tl_jax.data import tasks

_IMAGES = flags.DEFINE_string(
    "images", None, "Folder of images to classify (not searched recursively).")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Classes shown per image.",
                              lower_bound=1)
_ITEM = flags.DEFINE_enum("item", "state", ["state", "best"],
                          "For a run's checkpoint: latest or val-selected.")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif",
                  ".tiff")


def imagenet_wnids() -> list[str] | None:
  """The 1000 ImageNet-1k WordNet IDs in class-index order, if installed.

  Read from tensorflow_datasets' imagenet2012 labels.txt without importing
  tensorflow_datasets. None when it is not installed.
  """
  spec = importlib.util.find_spec("tensorflow_datasets")
  if spec is None or not spec.submodule_search_locations:
    return None
  for root in spec.submodule_search_locations:
    path = os.path.join(root, "datasets", "imagenet2012", "labels.txt")
    if os.path.exists(path):
      with open(path) as f:
        wnids = [line.strip() for line in f if line.strip()]
      return wnids if len(wnids) == 1000 else None
  return None


def image_paths(images: str) -> list[str]:
  """The image files directly in folder `images`, sorted.

  Hidden files are skipped, as `data.folder`'s scan skips them for training
  (a name starting with '.': macOS '._*' AppleDouble files among them).

  Raises:
    DataError: `images` is missing, not a folder, or cannot be listed.
  """
  if not os.path.isdir(images):
    what = "not a folder" if os.path.exists(images) else "no such folder"
    raise data.DataError(f"--images={images}: {what}; give the folder that "
                         "holds the images to classify.")
  try:
    names = os.listdir(images)
  except OSError as e:
    raise data.DataError(f"--images={images}: cannot list the folder: "
                         f"{e.strerror or e}.") from e
  return sorted(os.path.join(images, name) for name in names
                if not name.startswith(".")
                and name.lower().endswith(IMAGE_SUFFIXES)
                and os.path.isfile(os.path.join(images, name)))


def _decode(path: str) -> np.ndarray:
  """uint8 [H, W, 1 or 3] of an image file, decoded as training decodes."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise data.DataError(f"Cannot read image {path}: {e.strerror or e}; "
                         "check its permissions, or remove it.") from e
  bombs = (Image.DecompressionBombError, Image.DecompressionBombWarning)
  with warnings.catch_warnings():
    # Past MAX_IMAGE_PIXELS Pillow only warns (an error from twice that).
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:
      return decode.decode_image(raw, path)
    except data.DataError as e:
      if isinstance(e.__cause__, bombs):
        raise data.DataError(
            f"Image {path} is too large to decode safely ({e.__cause__}); "
            "shrink it or remove it from the folder.") from e
      raise


def eval_preprocessing(family: str | None
                       ) -> tuple[preprocess.ImageSpec, str]:
  """(geometry, normalisation) of the data pipeline's evaluation of `family`.

  The settings `data.preprocessing_for_family` gives the family (a family
  without its own, or None, gets torchvision's), read as a run's evaluation
  splits read them (`data.tasks.image_specs`).
  """
  if families.family_of(family) is None:
    family = "torchvision"
  config = data.fill_preprocessing(data.get_default_data_config(), family)
  spec, _, _ = tasks.image_specs(config)
  return spec, config.normalization


def load_image(path: str, family: str | None) -> np.ndarray:
  """An image file as the family's evaluation input, uint8 [224, 224, 3].

  Raises:
    DataError: the file cannot be read or decoded, or is too large.
  """
  spec, _ = eval_preprocessing(family)
  return preprocess.preprocess_image(_decode(path), spec)


def describe(loaded: weights.Loaded) -> list[str]:
  """Lines: family, parameter counts, and the key mapping."""
  info = loaded.info
  encoder = sum(int(np.prod(np.shape(x)))
                for x in jax.tree.leaves(loaded.params.get("encoder", {})))
  stats = sum(int(np.prod(np.shape(x)))
              for x in jax.tree.leaves(loaded.model_state))
  lines = [
      f"file: {info['path']} ({info['format']})",
      f"family: {loaded.family or 'not recognised'}  {info['description']}",
      f"encoder_kwargs: {loaded.encoder_kwargs}",
      f"source head: {loaded.source_head_classes or 'none'}"
      + (" classes" if loaded.source_head_classes else ""),
      f"parameters: {info['num_params']:,} (encoder {encoder:,}, heads "
      f"{info['num_params'] - encoder:,}); batch statistics: {stats:,}",
      f"mapping ({len(info['mapping'])} arrays: file key -> our path, "
      "file shape -> our shape):",
  ]
  width = max((len(m.file_key) for m in info["mapping"]), default=0)
  for m in info["mapping"]:
    shapes = (f"{m.file_shape}" if m.file_shape == m.shape
              else f"{m.file_shape} -> {m.shape}")
    lines.append(f"  {m.file_key:<{width}} -> {m.path}  {shapes}")
  ignored = info["ignored"]
  if ignored:
    counters = [k for k in ignored if k.endswith("num_batches_tracked")]
    others = [k for k in ignored if k not in counters]
    if counters:
      lines.append(f"ignored: {len(counters)} BatchNorm step counters "
                   "(*.num_batches_tracked)")
    if others:
      lines.append(f"ignored ({len(others)}): {', '.join(others)}")
  return lines


def predict(loaded: weights.Loaded, image_paths: Sequence[str], *,
            top_k: int = 5, batch_size: int = 16
            ) -> list[list[tuple[int, float]]]:
  """Top-k (class, probability) of the file's classifier for each image.

  Raises:
    WeightsError: the file has no classifier, or its encoder is unknown.
    DataError: an image cannot be read or decoded.
  """
  source = loaded.info.get("path", "the weights")
  if not loaded.source_head_classes:
    raise weights.WeightsError(f"{source}: has no classifier, so nothing to "
                               "predict; leave out --images.")
  if loaded.family is None:
    raise weights.WeightsError(f"{source}: the encoder of this checkpoint is "
                               "not recognised, so it cannot be run.")
  model = models.make_model(loaded.family,
                            num_src_classes=loaded.source_head_classes,
                            encoder_kwargs=loaded.encoder_kwargs)
  variables = jax.tree.map(lambda x: np.asarray(x, np.float32),
                           {"params": {k: v for k, v in loaded.params.items()
                                       if k in ("encoder", "src_head")},
                            **loaded.model_state})

  @jax.jit
  def probabilities(images):
    features = model.apply(variables, images, train=False)
    logits = model.apply(variables, features, "src",
                         method=models.TransferModel.classify)
    return jax.nn.softmax(logits)

  spec, normalization = eval_preprocessing(loaded.family)
  out = []
  for start in range(0, len(image_paths), batch_size):
    chunk = image_paths[start:start + batch_size]
    images = np.stack([preprocess.preprocess_image(_decode(p), spec)
                       for p in chunk])
    probs = np.asarray(probabilities(preprocess.normalize(images,
                                                          normalization)))
    for row in probs:
      best = np.argsort(-row)[:top_k]
      out.append([(int(c), float(row[c])) for c in best])
  return out


def inspect(path: str, *, images: str | None = None, top_k: int = 5,
            item: str = "state", emit: Callable[[str], Any] = print) -> None:
  """Prints `describe` and, with `images`, the top-k predictions.

  Raises:
    WeightsError: the file cannot be read, fits no known architecture, or
      (with `images`) has no classifier.
    DataError: `images` is not a folder (checked before the file is read),
      or one of its images does not decode.
  """
  paths = None if images is None else image_paths(images)
  loaded = weights.load(path, item=item)
  for line in describe(loaded):
    emit(line)
  if paths is None:
    return
  if not paths:
    emit(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images}")
    return
  names = imagenet_wnids() if loaded.source_head_classes == 1000 else None
  if loaded.source_head_classes == 1000:
    emit("class names: none installed offline; showing ImageNet class "
         "indices" + (" and WordNet IDs" if names else ""))
  else:
    emit(f"class names: unknown for a {loaded.source_head_classes}-way "
         "head; showing indices")
  for image, top in zip(paths, predict(loaded, paths, top_k=top_k)):
    emit(f"{os.path.basename(image)}:")
    for c, p in top:
      emit(f"  {c:>5} {names[c] if names else '':<10} {p:.4f}")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("Usage: python -m experiments.inspect_weights FILE "
                         "[--images=DIR] [--top_k=5]", exitcode=2)
  cli.setup_logging(None)
  cli.run_or_exit(inspect, argv[1], images=_IMAGES.value, top_k=_TOP_K.value,
                  item=_ITEM.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
