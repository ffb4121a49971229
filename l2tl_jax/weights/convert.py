"""A file's {key: array} (or a checkpoint's trees) -> `Loaded`: this
project's parameter trees, checked against the architecture they describe.

The key maps, structure and shape rules are the families' (`l2tl_jax.families`);
here they are applied, and every unknown, missing and misshapen key is
reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from typing import Any

import jax
import numpy as np

from l2tl_jax import families
from l2tl_jax import loading
from l2tl_jax import models
from l2tl_jax.weights.files import check_values
from l2tl_jax.weights.files import WeightsError

_SEP = loading.SEP
_OUR_COLLECTIONS = ("params", "batch_stats")


@dataclasses.dataclass(frozen=True)
class Mapped:
  """One array of the file and where it went.

  Attributes:
    file_key: its name in the file ('layer1.0.conv1.weight').
    path: collection and path in this project
      ('params/encoder/layer1_0/conv1/kernel').
    file_shape: its shape in the file.
    shape: its shape here (after transposes).
  """

  file_key: str
  path: str
  file_shape: tuple[int, ...]
  shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Loaded:
  """Parameters read from a weights file.

  Attributes:
    family: the registered encoder these parameters fit ('resnet18',
      'resnet34', 'resnet50', 'resnet_v1', 'bit_r50x1', 'bit_resnet', ...),
      or None for a checkpoint of an encoder not recognised here.
    encoder_kwargs: the encoder arguments that make it fit ({} for the
      standard architectures; width / stage_sizes / block otherwise).
    params: {'encoder': ..., 'src_head': ...?, 'tgt_head': ...?} of numpy
      arrays ('src_head' when the file has a classifier; 'tgt_head' only in
      this project's checkpoints).
    model_state: {'batch_stats': {'encoder': ...}} or {}.
    source_head_classes: classes of the file's classifier (0: none).
    info: 'path', 'format' ('safetensors', 'torch', 'npz', 'orbax'),
      'description', 'mapping' (list of `Mapped`), 'ignored' (file keys
      dropped on purpose, e.g. 'num_batches_tracked'), 'num_params'.
  """

  family: str | None
  encoder_kwargs: dict[str, Any]
  params: dict[str, Any]
  model_state: dict[str, Any]
  source_head_classes: int
  info: dict[str, Any]


def expected_shapes(family: str, encoder_kwargs: Mapping[str, Any],
                    num_src_classes: int) -> dict[str, tuple[int, ...]]:
  """{'params/encoder/...': shape, 'batch_stats/encoder/...': shape} of a model.

  Args:
    family: registered encoder name.
    encoder_kwargs: its arguments.
    num_src_classes: source head classes (0: no head).

  Returns:
    Shapes by collection-prefixed path, computed without allocating
    (`jax.eval_shape`).
  """
  model = models.make_model(
      family, num_src_classes=num_src_classes,
      num_tgt_classes=0 if num_src_classes else 1,
      encoder_kwargs=dict(encoder_kwargs))
  params, model_state = jax.eval_shape(
      lambda: models.init_variables(model, jax.random.key(0), (64, 64, 3)))
  params = {k: v for k, v in params.items() if k != "tgt_head"}
  return {f"{c}{_SEP}{k}": tuple(v.shape)
          for c, tree in {"params": params, **model_state}.items()
          for k, v in loading.flatten(tree).items()}


def convert(flat: dict[str, np.ndarray], path: str, fmt: str,
            family: families.WeightFamily) -> Loaded:
  """`flat` read through `family`'s key map and checked against the
  architecture its keys describe.

  Raises:
    WeightsError: naming every unknown, missing and misshapen key, or a
      tensor that is not finite floating point.
  """
  name, kwargs, description, problems = family.structure(flat)
  classes = family.head(flat)
  unknown, ignored, mapping = [], [], []
  trees: dict[str, dict[str, Any]] = {"params": {}, "batch_stats": {}}
  for key in sorted(flat):
    if family.ignored(key):
      ignored.append(key)
      continue
    target = family.to_path(key)
    if target is None:
      unknown.append(key)
      continue
    collection, our_path = target
    value = np.asarray(flat[key])
    converted = family.convert(key, value)
    trees[collection][our_path] = converted
    mapping.append(Mapped(key, f"{collection}{_SEP}{our_path}",
                          tuple(value.shape), tuple(converted.shape)))
  if not problems:
    try:
      want = expected_shapes(name, kwargs, classes)
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f"its shapes make no valid {name} ({kwargs}): {e}")
      want = None
    if want is not None:
      got = {m.path: m.shape for m in mapping}
      missing = sorted(family.to_key(*p.split(_SEP, 1))
                       for p in set(want) - set(got))
      mismatched = sorted(
          f"{m.file_key}: {m.file_shape}"
          + (f" (here {m.shape})" if m.shape != m.file_shape else "")
          + f", expected {want[m.path]}"
          + (" here" if m.shape != m.file_shape else "")
          for m in mapping if m.path in want and m.shape != want[m.path])
      unknown += sorted(m.file_key for m in mapping if m.path not in want)
      for title, names in (("missing", missing),
                           ("of another shape", mismatched)):
        if names:
          problems.append(f"{len(names)} {title}: {', '.join(names)}")
  if unknown:
    problems.insert(0, f"{len(unknown)} unknown: {', '.join(sorted(unknown))}")
  if problems:
    raise WeightsError(
        f"{path}: does not fit a {description}: " + "; ".join(problems) + ".")
  check_values({m.file_key: flat[m.file_key] for m in mapping}, path)
  params = loading.unflatten(trees["params"])
  model_state = ({"batch_stats": loading.unflatten(trees["batch_stats"])}
                 if trees["batch_stats"] else {})
  return Loaded(
      family=name, encoder_kwargs=kwargs, params=params,
      model_state=model_state, source_head_classes=classes,
      info={"path": path, "format": fmt, "description": description,
            "mapping": mapping, "ignored": ignored,
            "num_params": count(params)})


def count(tree) -> int:
  """Number of scalars in a tree."""
  return sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(tree))



def recognise(encoder: Mapping[str, Any]
              ) -> tuple[str | None, dict[str, Any], str]:
  """(encoder, encoder_kwargs, description) of this project's params tree of
  an encoder of a weight family; (None, {}, ...) for other encoders."""
  for family in families.FAMILIES:
    found = family.recognise(encoder)
    if found is not None:
      return found
  return None, {}, f"encoder with modules {sorted(encoder)[:6]}"


# ---------------------------------------------- this project's flat layout


def is_ours(flat) -> bool:
  """l2tl_jax.export's flat layout: '<collection>/encoder/...' keys."""
  return any(k.startswith(f"params{_SEP}encoder{_SEP}") for k in flat) and all(
      k.split(_SEP, 1)[0] in _OUR_COLLECTIONS for k in flat)


def convert_ours(flat: dict[str, np.ndarray], path: str, fmt: str) -> Loaded:
  """A file of l2tl_jax.export's flat layout; its target head ('tgt_head')
  becomes the file's classifier ('src_head'), as a torchvision file's fc."""
  check_values(flat, path)
  tree = loading.unflatten(flat)
  params = tree.pop("params")
  if "tgt_head" in params:
    params["src_head"] = params.pop("tgt_head")
  family, kwargs, description = recognise(params["encoder"])
  head = params.get("src_head", {}).get("Dense_0", {}).get("bias")
  mapping = [Mapped(k, k.replace(f"{_SEP}tgt_head{_SEP}",
                                 f"{_SEP}src_head{_SEP}"),
                    tuple(np.shape(v)), tuple(np.shape(v)))
             for k, v in sorted(flat.items())]
  return Loaded(
      family=family, encoder_kwargs=kwargs, params=params, model_state=tree,
      source_head_classes=0 if head is None else int(head.shape[-1]),
      info={"path": path, "format": fmt,
            "description": f"l2tl_jax export (flat layout): {description}",
            "mapping": mapping, "ignored": [], "num_params": count(params)})
