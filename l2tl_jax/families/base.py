"""What every weight family module provides, and the pieces they share.

A weight family (`families.torchvision`, `families.bit`) is one module that
holds, together, the architecture (Linen encoders registered through
`l2tl_jax.encoders`), the key map between its published files and this
project's parameter paths, how its files and this project's checkpoints of
it are recognised, and the preprocessing its weights expect. Each module
ends with one `WeightFamily` value, `FAMILY`, which `l2tl_jax.weights` and
`families.family_of` read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

import numpy as np

Flat = Mapping[str, np.ndarray]  # {file key: array}
# (registered encoder, encoder_kwargs, description), or None.
Recognised = tuple[str, dict[str, Any], str] | None


@dataclasses.dataclass(frozen=True)
class WeightFamily:
  """One family of published weights and the encoders they fit.

  Attributes:
    name: 'torchvision', 'bit'.
    encoders: the registered encoders its weights fit.
    names: the names it is known by, for messages (`matches` may accept
      more: every 'bit*' name is BiT's).
    matches: whether a family or encoder name ('resnet50', 'timm',
      'bit_r50x1', a `weights.Loaded.family`) belongs to this family; the one
      place that rule is written.
    normalization: the per-batch pixel scaling its weights were trained with
      (one of `data.preprocess.NORMALIZATIONS`).
    eval_resize: the evaluation geometry (`config.data.eval_resize`).
    file_keys: how its files' keys look, for error messages.
    detect: whether a file's {key: array} is of this family.
    to_path: file key -> (collection, path in this project), None: unknown.
    to_key: (collection, path) -> file key (the inverse of to_path).
    convert: (file key, array) -> array in this project's layout.
    ignored: file keys dropped on purpose (e.g. 'num_batches_tracked').
    structure: {key: array} -> (encoder, encoder_kwargs, description,
      problems): the architecture the file's keys and shapes describe.
    head: {key: array} -> classes of the file's classifier (0: none).
    recognise: this project's encoder params tree -> `Recognised` (a
      checkpoint of one of this family's encoders), or None.
  """

  name: str
  encoders: tuple[str, ...]
  names: tuple[str, ...]
  matches: Callable[[str], bool]
  normalization: str
  eval_resize: str
  file_keys: str
  detect: Callable[[Flat], bool]
  to_path: Callable[[str], tuple[str, str] | None]
  to_key: Callable[[str, str], str]
  convert: Callable[[str, np.ndarray], np.ndarray]
  ignored: Callable[[str], bool]
  structure: Callable[[Flat], tuple[str, dict[str, Any], str, list[str]]]
  head: Callable[[Flat], int]
  recognise: Callable[[Mapping[str, Any]], Recognised]


def symmetric_pad(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """PyTorch's (and BiT's) symmetric padding for a k x k kernel (k odd).

  flax's 'SAME' pads asymmetrically for stride 2; converted weights give the
  originals' outputs only with the originals' padding.
  """
  return ((k // 2, k // 2), (k // 2, k // 2))
