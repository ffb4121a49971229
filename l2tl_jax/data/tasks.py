"""Transfer tasks: source and target splits drawn per class from datasets.

Class lists keep classes in the given order (labels 0..n-1), or, with a label
modulus, map each kept original label to `label % mod` (SVHN-5: digits 1..5,
digit 5 -> class 0). Each split draws N examples per class from a dataset
split; splits drawn from the same dataset split take consecutive,
non-overlapping runs of each class's examples (train, then validation, then
test), so they are disjoint. The run order of each class is the file order or
a permutation seeded by `split_seed`.

For studies, the labels of a fraction of some source classes' src_train
examples can be replaced by uniformly random other source classes
(`source_corrupt_*` in the data config; corrupt_labels); src_test stays clean
and the task summary records what changed.

Target validation or test examples that are also training examples (the same
records, or equal images: overlap.py) are refused unless `allow_overlap`;
the counts are in the task summary ('overlap') either way.
"""

import dataclasses
import hashlib
import json
import math
import zlib
from typing import Any, Sequence

import ml_collections
import numpy as np

from l2tl_jax.data import config as config_lib
from l2tl_jax.data import overlap as overlap_lib
from l2tl_jax.data import preprocess
from l2tl_jax.data import sources
from l2tl_jax.data.errors import DataError


@dataclasses.dataclass(eq=False)
class Split:
  """Examples of one role (src_train, tgt_val, ...) with their new labels.

  Attributes:
    name: role, e.g. 'tgt_train'.
    dataset: the dataset string.
    dataset_split: the split of the dataset the examples come from.
    indices: int64 [N], record indices within `dataset_split`, ascending.
    labels: int32 [N], labels after class selection / remapping.
    class_names: names of the new labels.
    image_shape: (H, W, C) of the images in batches (after crop_size).
    crop_padding: zero padding of the random crop when augmenting.
    normalization: per-batch pixel scaling (preprocess.NORMALIZATIONS).
    train_crop: what augmenting does (preprocess.TRAIN_CROPS).
    crop_size: side of the batch images when the stored ones are larger
      (random_resized_crop train splits, stored at resize_size): augmented
      batches are random resized crops to it, the others centre crops; None:
      batches have the stored size.
    clean_labels: int32 [N], the labels before source label corruption
      (corrupt_labels); None when the labels are not corrupted.
  """

  name: str
  dataset: str
  dataset_split: str
  indices: np.ndarray
  labels: np.ndarray
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  crop_padding: int
  _loaded: sources.LoadedSplit
  _images: np.ndarray | None = dataclasses.field(default=None, repr=False)
  normalization: str = 'unit'
  train_crop: str = 'pad_flip'
  crop_size: int | None = None
  clean_labels: np.ndarray | None = dataclasses.field(default=None,
                                                      repr=False)

  def __post_init__(self):
    images = self._loaded.images
    if images is not None and self._images is None:
      if len(self.indices) == len(images):  # Indices are sorted and unique.
        self._images = images  # The whole split: share, don't copy.
      else:
        self._images = images[self.indices]  # [N, H, W, C]

  def __len__(self) -> int:
    return len(self.indices)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def in_memory(self) -> bool:
    """Whether the images are held in memory (else read per record)."""
    return self._images is not None

  def get(self, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Returns examples at positions 0..N-1 of this split, as stored.

    Args:
      positions: int [B].

    Returns:
      {'image': uint8 [B, H, W, C], 'label': int32 [B]}; H, W are the stored
      size (resize_size, before the batch crop, when crop_size is set).
    """
    if self._images is not None:
      images = self._images[positions]
    else:
      images = self._loaded.read_images(self.indices[positions])
    return {'image': images, 'label': self.labels[positions]}

  @property
  def stored_images(self) -> np.ndarray | None:
    """uint8 [N, H, W, C], the images held in memory; None: read per record."""
    return self._images

  def records(self) -> list[tuple[sources.LoadedSplit, np.ndarray,
                                  np.ndarray]]:
    """Where the examples are stored, one entry per dataset split read.

    Returns:
      (loaded split, positions int [n] in this split, their record indices
      int [n] in that split) per dataset split; a joined dataset's examples
      are given as records of its parts' splits.
    """
    part_splits = getattr(self._loaded, 'part_splits', None)
    if not part_splits:
      return [(self._loaded, np.arange(len(self)), self.indices)]
    part_of = self._loaded.part_of[self.indices]
    record_of = self._loaded.record_of[self.indices]
    out = []
    for p, part_split in enumerate(part_splits):
      positions = np.flatnonzero(part_of == p)
      if len(positions):
        out.append((part_split, positions, record_of[positions]))
    return out

  def class_counts(self) -> list[int]:
    """Number of examples of each new label."""
    return np.bincount(self.labels, minlength=self.num_classes).tolist()

  def fingerprint(self) -> str:
    """Hash of the dataset, split, chosen record indices and labels."""
    h = hashlib.sha256(f'{self.dataset}|{self.dataset_split}|'.encode())
    h.update(np.ascontiguousarray(self.indices, np.int64).tobytes())
    h.update(np.ascontiguousarray(self.labels, np.int32).tobytes())
    return h.hexdigest()[:16]

  def summary(self) -> dict[str, Any]:
    """JSON-able description: origin, size, per-class counts, fingerprint.

    A split of a joined dataset adds 'per_part' (examples from each part, in
    the join's order); a split with corrupted labels adds 'corrupted_labels'
    (how many differ from the clean ones). per_class counts the labels as
    they are (corrupted).
    """
    out = {
        'dataset': self.dataset,
        'dataset_split': self.dataset_split,
        'size': len(self),
        'per_class': self.class_counts(),
        'fingerprint': self.fingerprint(),
        'in_memory': self.in_memory,
    }
    part_counts = getattr(self._loaded, 'part_counts', None)
    if part_counts is not None:  # A joined dataset (joined.JoinedSplit).
      out['per_part'] = part_counts(self.indices)
    if self.clean_labels is not None:
      out['corrupted_labels'] = int(
          np.count_nonzero(self.labels != self.clean_labels))
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class TransferTask:
  """The splits of one source -> target transfer experiment.

  Attributes:
    src_train: source examples the model trains on; None for a target-only
      task (config.source None).
    src_test: source examples for evaluating pre-training (None if not asked).
    tgt_train: target train examples.
    tgt_val: target validation examples (the L2TL reward); None if not asked.
    tgt_test: target test examples; None if not asked.
    src_class_names: source class names, in label order.
    tgt_class_names: target class names, in label order.
    image_shape: (H, W, C) shared by every split.
    config: the data config the task was built from, as a dict.
    resolved: dataset string -> where its data came from.
    notes: what opening the datasets skipped and why (e.g. broken symlinks
      in an image folder), one sentence each; also logged as warnings.
    data_ids: dataset string -> the identity of its data on disk (the
      prepared directory, whose name carries an image folder's or IDX
      directory's content fingerprint); None where not on disk (mocks).
    joins: joined dataset string -> its parts (JoinedPart.summary: dataset,
      resolved, kept classes, original and joined labels); empty when no
      dataset is joined.
    src_corruption: what source label corruption did (classes, fraction,
      seed, examples and changed labels per class); None: none.
    overlap: examples the splits share (overlap.find) and whether that was
      allowed: {'allowed': bool, 'pairs': {'tgt_test_in_src_train': {...},
      ...}}; None: not checked (a task not made by build_task).
  """

  src_train: Split | None
  src_test: Split | None
  tgt_train: Split
  tgt_val: Split | None
  tgt_test: Split | None
  src_class_names: list[str]
  tgt_class_names: list[str]
  image_shape: tuple[int, int, int]
  config: dict[str, Any]
  resolved: dict[str, str]
  notes: tuple[str, ...] = ()
  data_ids: dict[str, str | None] = dataclasses.field(default_factory=dict)
  joins: dict[str, list[dict[str, Any]]] = dataclasses.field(
      default_factory=dict)
  src_corruption: dict[str, Any] | None = None
  overlap: dict[str, Any] | None = None

  @property
  def num_src_classes(self) -> int:
    return len(self.src_class_names)

  @property
  def num_tgt_classes(self) -> int:
    return len(self.tgt_class_names)

  def splits(self) -> dict[str, Split]:
    """The present splits by role."""
    all_splits = {
        'src_train': self.src_train, 'src_test': self.src_test,
        'tgt_train': self.tgt_train, 'tgt_val': self.tgt_val,
        'tgt_test': self.tgt_test,
    }
    return {k: v for k, v in all_splits.items() if v is not None}

  def fingerprint(self) -> str:
    """Hash over every split's fingerprint and the preprocessing."""
    h = hashlib.sha256(json.dumps(
        [self.image_shape,
         {k: s.fingerprint() for k, s in self.splits().items()}],
        sort_keys=True).encode())
    return h.hexdigest()[:16]

  def identity(self) -> dict[str, Any]:
    """What must not change while a run resumes: the drawn examples and the
    data they are read from (edited images change the data ids)."""
    return {'fingerprint': self.fingerprint(), 'data': dict(self.data_ids)}

  def summary(self) -> dict[str, Any]:
    """JSON-able record of the task for results files.

    Adds 'joined' (joined dataset string -> its parts) when a dataset is
    joined, 'source_corruption' when source labels are corrupted, and
    'overlap' (examples the splits share, allowed or not) when checked.
    """
    out = {
        'source': self.config['source'],
        'target': self.config['target'],
        'resolved': dict(self.resolved),
        'split_seed': self.config['split_seed'],
        'split_shuffle': self.config['split_shuffle'],
        'image_shape': list(self.image_shape),
        'src_class_names': list(self.src_class_names),
        'tgt_class_names': list(self.tgt_class_names),
        'splits': {k: s.summary() for k, s in self.splits().items()},
        'fingerprint': self.fingerprint(),
        'notes': list(self.notes),
    }
    if self.joins:
      out['joined'] = {k: [dict(p) for p in v] for k, v in self.joins.items()}
    if self.src_corruption is not None:
      out['source_corruption'] = json.loads(json.dumps(self.src_corruption))
    if self.overlap is not None:
      out['overlap'] = json.loads(json.dumps(self.overlap))
    return out


@dataclasses.dataclass(frozen=True)
class LabelMap:
  """Original label -> new label (-1: dropped), and the new class names."""

  new_label: np.ndarray  # int64 [C_orig]
  class_names: tuple[str, ...]


_resolve_class = sources.resolve_class


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
    kept = [_resolve_class(c, names, dataset, field) for c in classes]
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


@dataclasses.dataclass(frozen=True)
class Draw:
  """One split to draw: role name, dataset split, examples per task class."""

  name: str
  split: str
  per_class: int | None
  field: str
  # Preprocessing of this split's images; None: draw_splits' `spec`.
  spec: preprocess.ImageSpec | None = None
  # Batch-time crop side (Split.crop_size); None: no crop.
  crop_size: int | None = None


def _class_pool(dataset: sources.Dataset, split: str, labels_map: LabelMap, *,
                spec: preprocess.ImageSpec, seed: int, shuffle: bool,
                in_memory_max_bytes: int) -> dict[str, Any]:
  """One dataset split's examples per new class, in draw order, unconsumed."""
  loaded = sources.load_split(
      dataset, split, spec=spec, in_memory_max_bytes=in_memory_max_bytes,
  )
  if len(loaded.labels) and (
      loaded.labels.min() < 0
      or loaded.labels.max() >= len(labels_map.new_label)
  ):
    raise DataError(
        f'{dataset.name!r}[{split}] has labels outside'
        f' 0..{len(labels_map.new_label) - 1}; the dataset is inconsistent'
        ' with its class names.'
    )
  new = labels_map.new_label[loaded.labels]  # [N]
  rng = np.random.default_rng(
      [seed, zlib.crc32(f'{dataset.name}|{split}'.encode())]
  )
  order = []
  for k in range(len(labels_map.class_names)):
    members = np.flatnonzero(new == k)
    order.append(rng.permutation(members) if shuffle else members)
  return dict(loaded=loaded, new=new, order=order, cursor=[0] * len(order),
              taken_by=[])


def draw_splits(
    dataset: sources.Dataset, labels_map: LabelMap, draws: Sequence[Draw], *,
    spec: preprocess.ImageSpec, seed: int, shuffle: bool,
    in_memory_max_bytes: int, crop_padding: int,
    classes_field: str = 'the class list', normalization: str = 'unit',
    train_crop: str = 'pad_flip',
) -> dict[str, Split]:
  """Draws the examples of several splits of one dataset, per class.

  Draws from the same dataset split consume each class's examples in turn, in
  the order given, so they never overlap. A class drawn into some of the
  splits must be drawn into all of them: one missing from train (or from
  validation or test) makes the accuracies meaningless.

  Args:
    dataset: the opened Dataset.
    labels_map: original -> new labels.
    draws: the splits to draw, in consumption order.
    spec: preprocessing of the draws that name none.
    seed: seed of the per-class permutations (when `shuffle`).
    shuffle: permute each class's examples; else take them in file order.
    in_memory_max_bytes: see sources.load_split.
    crop_padding: stored on the splits for augmentation.
    classes_field: the config field that keeps classes, for messages.
    normalization: stored on the splits for batching.
    train_crop: stored on the splits for augmentation.

  Returns:
    Role name -> Split.

  Raises:
    DataError: a bad count, too few examples, or a class with examples in
      some of the splits but none in another.
  """
  out = {}
  pools = {}
  for draw in draws:
    if draw.per_class is not None and int(draw.per_class) < 1:
      raise DataError(
          f'{draw.field} must be a positive number of examples per class or'
          f' None (all), got {draw.per_class}.'
      )
    draw_spec = spec if draw.spec is None else draw.spec
    if draw.split not in pools:
      pools[draw.split] = _class_pool(
          dataset, draw.split, labels_map, spec=draw_spec, seed=seed,
          shuffle=shuffle, in_memory_max_bytes=in_memory_max_bytes)
    pool = pools[draw.split]
    chosen = []
    for k, members in enumerate(pool['order']):
      start = pool['cursor'][k]
      left = len(members) - start
      n = left if draw.per_class is None else int(draw.per_class)
      if n > left:
        earlier = (f', {start} already taken by {pool["taken_by"]}'
                   if start else '')
        raise DataError(
            f'{draw.field}={draw.per_class}, but class'
            f' {labels_map.class_names[k]!r} of {dataset.name!r}'
            f'[{draw.split}] has {len(members)} examples{earlier}, so only'
            f' {left} are left. Lower {draw.field}, or draw from another'
            ' split.'
        )
      chosen.append(members[start : start + n])
      pool['cursor'][k] = start + n
    pool['taken_by'].append(draw.name)
    counts = [len(c) for c in chosen]
    _check_every_class_drawn(dataset, labels_map, draw, counts, pool,
                             out, classes_field)
    indices = np.sort(np.concatenate(chosen)).astype(np.int64)
    if not len(indices):
      raise DataError(
          f'{draw.name} drew no examples from {dataset.name!r}[{draw.split}]:'
          ' the kept classes have none left there. Check the class list and'
          ' the per-class counts.'
      )
    loaded = pool['loaded']
    if loaded.spec != draw_spec:  # One dataset split, two geometries.
      loaded = sources.load_split(dataset, draw.split, spec=draw_spec,
                                  in_memory_max_bytes=in_memory_max_bytes)
    image_shape = tuple(loaded.image_shape)
    if draw.crop_size is not None:
      image_shape = (draw.crop_size, draw.crop_size, image_shape[2])
    out[draw.name] = Split(
        name=draw.name,
        dataset=dataset.name,
        dataset_split=draw.split,
        indices=indices,
        labels=pool['new'][indices].astype(np.int32),
        class_names=labels_map.class_names,
        image_shape=image_shape,
        crop_padding=crop_padding,
        _loaded=loaded,
        normalization=normalization,
        train_crop=train_crop,
        crop_size=draw.crop_size,
    )
  return out


def _check_every_class_drawn(
    dataset: sources.Dataset, labels_map: LabelMap, draw: Draw,
    counts: list[int], pool: dict[str, Any], earlier: dict[str, Split],
    classes_field: str,
) -> None:
  """Refuses a class drawn into some splits of a task but not into another."""
  earlier_counts = {name: s.class_counts() for name, s in earlier.items()}
  for k, name in enumerate(labels_map.class_names):
    has = {d: c[k] for d, c in earlier_counts.items() if c[k]}
    lacks = [d for d, c in earlier_counts.items() if not c[k]]
    if counts[k]:
      if not lacks:
        continue
      has[draw.name] = counts[k]
      missing, where = lacks[0], earlier[lacks[0]].dataset_split
    elif has:
      missing, where = draw.name, draw.split
    else:
      continue
    total = len(pool['order'][k]) if missing == draw.name else 0
    taken = (f' (its {total} examples there went to'
             f' {pool["taken_by"][:-1]})' if total else '')
    raise DataError(
        f'Class {name!r} of {dataset.name!r} has no examples in split'
        f' {where!r} (drawn for {missing}){taken}, but has some in'
        f' {", ".join(f"{d} ({n})" for d, n in has.items())}: a class'
        ' missing from a split makes the results meaningless. Add'
        f' {name!r} examples to split {where!r} (for an image folder, a'
        f' {name}/ class folder of images in its {where} folder), lower the'
        f' per-class counts, or leave the class out with {classes_field}.'
    )


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


def _corrupt_source(config: ml_collections.ConfigDict,
                    src_ds: sources.Dataset | None, src_map: LabelMap | None,
                    src_train: Split | None
                    ) -> tuple[Split | None, dict[str, Any] | None]:
  """Applies config.source_corrupt_* to src_train: (split, summary record)."""
  fraction = config.get('source_corrupt_fraction', 0.0)
  classes = _as_tuple(config.get('source_corrupt_classes'))
  seed = config.get('source_corrupt_seed', 0)
  if fraction is None:
    fraction = 0.0
  if (isinstance(fraction, bool)
      or not isinstance(fraction, (int, float, np.integer, np.floating))
      or not 0.0 <= float(fraction) <= 1.0):
    raise DataError(
        'source_corrupt_fraction is the share of train labels replaced in'
        f' each chosen source class, a number in [0, 1]; got {fraction!r}.'
        ' Use 0.0 for no corruption.'
    )
  fraction = float(fraction)
  if fraction == 0.0 and classes is None:
    return src_train, None
  if src_train is None:
    raise DataError(
        'source_corrupt_classes / source_corrupt_fraction corrupt source'
        ' labels, but the task has no source (config.source is None). Set a'
        ' source, or source_corrupt_fraction=0.0 and'
        ' source_corrupt_classes=None.'
    )
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise DataError(
        f'source_corrupt_seed must be an integer, got {seed!r}.')
  num_classes = len(src_map.class_names)
  if classes is None:
    labels = list(range(num_classes))
  else:
    if not classes:
      raise DataError(
          'source_corrupt_classes is empty; list the source classes to'
          ' corrupt, or None for every source class.'
      )
    labels = []
    for spec in classes:
      original = _resolve_class(spec, src_ds.class_names, config.source,
                                'source_corrupt_classes')
      label = int(src_map.new_label[original])
      if label < 0:
        raise DataError(
            f'source_corrupt_classes: class'
            f' {src_ds.class_names[original]!r} of {config.source!r} is not a'
            ' source class of the task (source_classes leaves it out);'
            f' corrupt only kept source classes {list(src_map.class_names)}.'
        )
      labels.append(label)
    if len(set(labels)) < len(labels):
      raise DataError(
          f'source_corrupt_classes names a class twice: {list(classes)}.')
  if fraction == 0.0:  # Classes checked; nothing to change.
    return src_train, None
  within = _choice(config, 'source_corrupt_to', 'other',
                   ('other', 'within')) == 'within'
  if within and len(labels) < 2:
    raise DataError(
        "source_corrupt_to='within' draws the new labels among"
        f' source_corrupt_classes, but it names one class'
        f' ({src_map.class_names[labels[0]]!r}), so no label would change.'
        ' Name two or more source classes, or use'
        " source_corrupt_to='other' (labels of the other source classes)."
    )
  rng = np.random.default_rng([int(seed), zlib.crc32(b'source_corrupt')])
  clean = src_train.labels
  noisy = corrupt_labels(clean, classes=labels, num_classes=num_classes,
                         fraction=fraction, rng=rng, within=within)
  changed = noisy != clean
  record = {
      'classes': [src_map.class_names[k] for k in labels],
      'labels': labels,
      'fraction': fraction,
      'to': 'within' if within else 'other',
      'seed': int(seed),
      'per_class': [
          {'class': src_map.class_names[k],
           'examples': int(np.count_nonzero(clean == k)),
           'changed': int(np.count_nonzero(changed & (clean == k)))}
          for k in labels],
      'changed': int(np.count_nonzero(changed)),
      # How many changed labels went to each source class, in label order.
      'changed_to': np.bincount(noisy[changed],
                                minlength=num_classes).tolist(),
  }
  return dataclasses.replace(src_train, labels=noisy,
                             clean_labels=clean), record


def _as_tuple(value: Any) -> tuple | None:
  if value is None:
    return None
  if isinstance(value, (str, int)):
    return (value,)
  return tuple(value)


def _choice(config: ml_collections.ConfigDict, field: str, default: str,
            allowed: tuple[str, ...]) -> str:
  value = config.get(field, default)
  if value not in allowed:
    raise DataError(f'Unknown {field} {value!r}; use one of {allowed}.')
  return value


def image_specs(config: ml_collections.ConfigDict
                ) -> tuple[preprocess.ImageSpec, preprocess.ImageSpec,
                           int | None]:
  """The geometry a data config asks for.

  Args:
    config: the `config.data` ConfigDict.

  Returns:
    (eval_spec, train_spec, crop_size): the ImageSpec of every split but the
    train ones (src_train, tgt_train), theirs, and their batch-time crop side
    (None unless train_crop is 'random_resized_crop', which stores them at
    resize_size x resize_size and crops image_size per batch).

  Raises:
    DataError: an unknown setting, or one that needs an image_size.
  """
  image_size, channels = config.image_size, config.channels
  eval_resize = _choice(config, 'eval_resize', 'none', preprocess.EVAL_RESIZES)
  train_crop = _choice(config, 'train_crop', 'pad_flip', preprocess.TRAIN_CROPS)
  resize_size = config.get('resize_size')
  for field, value, default in (('eval_resize', eval_resize, 'none'),
                                ('train_crop', train_crop, 'pad_flip')):
    if value != default and image_size is None:
      raise DataError(
          f'{field}={value!r} needs image_size (the crop side, e.g. 224);'
          ' set it in the data config.'
      )
  if resize_size is None and image_size is not None:
    resize_size = config_lib.default_resize_size(image_size)
  if eval_resize == 'none':
    eval_spec = preprocess.ImageSpec(
        image_size=image_size, channels=channels,
        resize_method=config.get('resize_method', 'auto'))
  elif eval_resize == 'resize_center_crop':
    eval_spec = preprocess.ImageSpec(image_size, channels,
                                     'resize_center_crop', int(resize_size))
  else:
    eval_spec = preprocess.ImageSpec(image_size, channels, 'squash')
  if train_crop == 'pad_flip':
    return eval_spec, eval_spec, None
  if resize_size < image_size:
    raise DataError(
        f'resize_size={resize_size} must be at least image_size={image_size}:'
        ' random_resized_crop crops image_size from images stored at'
        ' resize_size (e.g. 256 for 224).'
    )
  train_spec = preprocess.ImageSpec(int(resize_size), channels,
                                    'resize_center_crop', int(resize_size))
  return eval_spec, train_spec, int(image_size)


def _source_splits(config, common, train, data_dir, download):
  """(source splits by role, the opened dataset, its label map)."""
  src_ds = sources.open_dataset(config.source, data_dir=data_dir,
                                download=download)
  src_map = label_map(src_ds.class_names, _as_tuple(config.source_classes),
                      None, dataset=config.source, field='source_classes')
  src_draws = [Draw('src_train', config.source_split,
                    config.get('source_train_per_class'),
                    'source_train_per_class', **train)]
  if config.get('source_test_split'):
    src_draws.append(Draw('src_test', config.source_test_split,
                          config.get('source_test_per_class'),
                          'source_test_per_class'))
  src = draw_splits(src_ds, src_map, src_draws, classes_field='source_classes',
                    **common)
  return src, src_ds, src_map


def source_class_names(config: ml_collections.ConfigDict) -> list[str]:
  """The task's source class names in label order, without reading images.

  Opens the source dataset (preparing a built-in one if needed) and applies
  source_classes, as build_task does; cheap enough to check a config (e.g.
  checks.check_class_relevance) before anything trains.

  Args:
    config: the `config.data` ConfigDict.

  Returns:
    The names; [] for a target-only task (source None).

  Raises:
    DataError: the source cannot be opened, or an unknown class.
  """
  if config.source is None:
    return []
  src_ds = sources.open_dataset(config.source,
                                data_dir=config.get('data_dir'),
                                download=config.get('download', True))
  return list(label_map(src_ds.class_names, _as_tuple(config.source_classes),
                        None, dataset=config.source,
                        field='source_classes').class_names)


def build_task(config: ml_collections.ConfigDict) -> TransferTask:
  """Builds the source and target splits described by a data config.

  Args:
    config: the `config.data` ConfigDict (see get_default_data_config).

  Returns:
    The TransferTask.

  Raises:
    DataError: any dataset, class or count that cannot be honoured.
  """
  spec, train_spec, crop_size = image_specs(config)
  normalization = _choice(config, 'normalization', 'unit',
                          preprocess.NORMALIZATIONS)
  data_dir = config.get('data_dir')
  download = config.get('download', True)
  max_bytes = int(config.get('in_memory_max_bytes', 2 * 1024**3))
  crop_padding = int(config.get('crop_padding', 4))
  common = dict(spec=spec, seed=int(config.split_seed),
                shuffle=bool(config.split_shuffle),
                in_memory_max_bytes=max_bytes, crop_padding=crop_padding,
                normalization=normalization,
                train_crop=config.get('train_crop', 'pad_flip'))
  train = dict(spec=train_spec, crop_size=crop_size)

  src, src_ds, src_map = {}, None, None
  if config.source is not None:  # None: a target-only task.
    src, src_ds, src_map = _source_splits(config, common, train, data_dir,
                                          download)
  src_names = [] if src_map is None else list(src_map.class_names)
  src_train, src_corruption = _corrupt_source(config, src_ds, src_map,
                                              src.get('src_train'))

  tgt_ds = sources.open_dataset(config.target, data_dir=data_dir,
                                download=download)
  tgt_map = label_map(tgt_ds.class_names, _as_tuple(config.target_classes),
                      config.get('target_label_mod'), dataset=config.target,
                      field='target_classes')
  tgt_draws = [Draw('tgt_train', config.target_train_split,
                    config.target_train_per_class, 'target_train_per_class',
                    **train)]
  if config.get('target_val_split'):
    tgt_draws.append(Draw('tgt_val', config.target_val_split,
                          config.target_val_per_class, 'target_val_per_class'))
  if config.get('target_test_split'):
    tgt_draws.append(Draw('tgt_test', config.target_test_split,
                          config.target_test_per_class,
                          'target_test_per_class'))
  if (config.target_train_per_class is None and len(tgt_draws) > 1
      and any(d.split == config.target_train_split for d in tgt_draws[1:])):
    # Train takes all that the splits drawn from the same dataset split leave
    # (e.g. the authors' Pets: 20 per class for validation, the rest train).
    tgt_draws = tgt_draws[1:] + tgt_draws[:1]
  tgt = draw_splits(tgt_ds, tgt_map, tgt_draws, classes_field='target_classes',
                    **common)

  shapes = {s.image_shape for s in (*src.values(), *tgt.values())}
  if len(shapes) > 1:
    raise DataError(
        f'Source {config.source!r} and target {config.target!r} images end up'
        f' in different shapes {sorted(shapes)}; one encoder needs one shape.'
        ' Set image_size and channels in the config.'
    )
  image_shape = shapes.pop()
  if normalization == 'imagenet' and image_shape[-1] != 3:
    raise DataError(
        f"normalization='imagenet' needs RGB images, but the task's have"
        f' {image_shape[-1]} channel(s); set channels=3 in the data config.'
    )
  datasets = {config.target: tgt_ds}
  if src_ds is not None:
    datasets = {config.source: src_ds, **datasets}
  allow_overlap = config.get('allow_overlap', False)
  if not isinstance(allow_overlap, bool):
    raise DataError(
        f'allow_overlap is True or False, got {allow_overlap!r}.')
  found = overlap_lib.find({'src_train': src_train, **tgt})
  overlap_lib.check(found, allow=allow_overlap, source=config.source,
                    target=config.target)
  return TransferTask(
      src_train=src_train,
      src_test=src.get('src_test'),
      tgt_train=tgt['tgt_train'],
      tgt_val=tgt.get('tgt_val'),
      tgt_test=tgt.get('tgt_test'),
      src_class_names=src_names,
      tgt_class_names=list(tgt_map.class_names),
      image_shape=image_shape,
      config=config.to_dict(),
      resolved={k: d.resolved for k, d in datasets.items()},
      notes=tuple(dict.fromkeys(n for d in datasets.values() for n in d.notes)),
      data_ids={k: d.cache_key for k, d in datasets.items()},
      joins={k: [p.summary() for p in d.parts]
             for k, d in datasets.items() if d.parts},
      src_corruption=src_corruption,
      overlap={'allowed': allow_overlap, 'pairs': found},
  )
