"""The examples of a transfer task: Split (one role) and TransferTask (all).

A Split holds the record indices and new labels of one role (src_train,
tgt_val, ...) and reads its images from the loaded dataset split; a
TransferTask holds the five roles with what the task was built from, its
fingerprint and identity (what a resumed run compares) and its summary.
"""

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np

from l2tl_jax.data import sources


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
