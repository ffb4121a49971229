"""Class lists -> task labels, and source label corruption for studies.

Class lists keep classes in the given order (labels 0..n-1), or, with a label
modulus, map each kept original label to `label % mod` (SVHN-5: digits 1..5,
digit 5 -> class 0). corrupt_labels replaces a fraction of some classes'
labels by random ones (`source_corrupt_*` in the data config).
"""

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from l2tl_jax.data import sources
from l2tl_jax.data.errors import DataError


@dataclasses.dataclass(frozen=True)
class LabelMap:
  """Original label -> new label (-1: dropped), and the new class names."""

  new_label: np.ndarray  # int64 [C_orig]
  class_names: tuple[str, ...]


def _two_or_more(labels_map: LabelMap, dataset: str, field: str,
                 label_mod: int | None) -> LabelMap:
  """Returns the map, refusing one that leaves fewer than two classes."""
  if len(labels_map.class_names) < 2:
    mod = f' with label_mod={label_mod}' if label_mod is not None else ''
    raise DataError(
        f'{field} leaves {dataset!r} with a single class'
        f' {list(labels_map.class_names)}{mod}; a classifier needs at least'
        ' two (with one, every prediction is right). Keep two or more'
        ' classes.'
    )
  return labels_map


def group_map(class_names: Sequence[str], groups: Sequence[Sequence[Any]],
              *, dataset: str, field: str) -> LabelMap:
  """Source classes merged: group k of `groups` becomes class k.

  Args:
    class_names: the dataset's class names, in original label order.
    groups: groups of classes (names or indices); each class in at most one
      group; classes in no group are dropped.
    dataset: dataset string, for messages.
    field: config field, for messages.

  Returns:
    The LabelMap; class k is named by its members' names joined with '|'.

  Raises:
    DataError: an empty group, an unknown class, a class in two groups, or
      fewer than two groups.
  """
  names = list(class_names)
  new_label = np.full(len(names), -1, np.int64)
  new_names = []
  for k, group in enumerate(groups):
    if isinstance(group, (str, int)):
      group = (group,)
    if not group:
      raise DataError(f'{field} has an empty group (number {k}); list the '
                      'classes each group merges.')
    members = [sources.resolve_class(c, names, dataset, field) for c in group]
    taken = [names[m] for m in members if new_label[m] >= 0]
    if taken or len(set(members)) < len(members):
      raise DataError(f'{field} puts a class in two groups or twice in one '
                      f'({taken or list(group)}); each class merges once.')
    new_label[members] = k
    new_names.append('|'.join(names[m] for m in members))
  return _two_or_more(LabelMap(new_label, tuple(new_names)), dataset, field,
                      None)


def label_map(
    class_names: Sequence[str], classes: Sequence[Any] | None,
    label_mod: int | None, *, dataset: str, field: str,
) -> LabelMap:
  """Builds the mapping from original labels to task labels.

  Args:
    class_names: the dataset's class names, in original label order.
    classes: classes to keep (indices or names) or None for all. Without
      `label_mod` they are relabelled 0..n-1 in the given order.
    label_mod: if set, the new label is original_label % label_mod and the
      new class k is named by joining the names of the kept classes mapped
      to it with '|'.
    dataset: dataset string, for messages.
    field: config field, for messages.

  Returns:
    The LabelMap.

  Raises:
    DataError: an unknown or repeated class, a bad modulus, or fewer than two
      classes left.
  """
  names = list(class_names)
  if classes is None:
    kept = list(range(len(names)))
  else:
    if isinstance(classes, (str, int)):
      classes = (classes,)
    kept = [sources.resolve_class(c, names, dataset, field) for c in classes]
    if not kept:
      raise DataError(f'{field} is empty; list at least one class or use None.')
    if len(set(kept)) < len(kept):
      raise DataError(f'{field} names a class twice: {list(classes)}.')
  new_label = np.full(len(names), -1, np.int64)
  if label_mod is None:
    new_label[kept] = np.arange(len(kept))
    return _two_or_more(LabelMap(new_label, tuple(names[k] for k in kept)),
                        dataset, field, label_mod)
  if int(label_mod) < 1:
    raise DataError(f'label_mod must be a positive integer, got {label_mod}.')
  mod = int(label_mod)
  kept_arr = np.asarray(kept)
  new_label[kept_arr] = kept_arr % mod
  new_names = []
  for k in range(mod):
    members = [names[c] for c in kept if c % mod == k]
    if not members:
      raise DataError(
          f'With label_mod={mod}, no kept class of {dataset!r} maps to label'
          f' {k}; keep classes covering every residue 0..{mod - 1} or change'
          ' the modulus.'
      )
    new_names.append('|'.join(members))
  return _two_or_more(LabelMap(new_label, tuple(new_names)), dataset, field,
                      label_mod)


def corrupt_labels(
    labels: np.ndarray, *, classes: Sequence[int], num_classes: int,
    fraction: float, rng: np.random.Generator, within: bool = False,
) -> np.ndarray:
  """Replaces a fraction of some classes' labels by random ones.

  Of the n examples labelled c (for each c in `classes`), round(fraction * n)
  (halves rounded up), drawn uniformly without replacement, get a label drawn
  uniformly from the num_classes - 1 classes other than c; with `within`,
  uniformly from `classes` (c included: at fraction 1 the labels of those
  classes say nothing about their images, and the noisy examples keep labels
  of those classes only). Classes are chosen from the given (clean) labels,
  so an example is relabelled at most once.

  Args:
    labels: int [N], clean labels in 0..num_classes-1.
    classes: the labels to corrupt, each once.
    num_classes: number of classes, at least 2.
    fraction: share of each listed class's examples to relabel, in [0, 1].
    rng: the generator; used class by class in the order of `classes`.
    within: draw the new labels among `classes` instead.

  Returns:
    int32 [N], a copy of `labels` with the chosen ones replaced.
  """
  labels = np.asarray(labels)
  noisy = labels.astype(np.int32)  # A copy.
  for c in classes:
    members = np.flatnonzero(labels == c)
    n = int(math.floor(fraction * len(members) + 0.5))
    chosen = rng.permutation(members)[:n]
    if within:
      noisy[chosen] = np.asarray(classes)[rng.integers(0, len(classes),
                                                       size=n)]
    else:
      # c + 1..C-1 (mod C): uniform over the other classes.
      noisy[chosen] = (c + rng.integers(1, num_classes, size=n)) % num_classes
  return noisy
