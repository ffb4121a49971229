"""A data config read once: the DataSpec a transfer task is built from.

    spec = data.data_spec(config.data)  # Every setting read and checked.
    task = data.build_task(spec)        # build_task also takes config.data.

What needs the datasets (class names and counts, the classes a corruption
names) is checked when the task is built (tasks.py); everything else here,
before any dataset is opened.
"""

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from l2tl_jax.data import config as config_lib
from l2tl_jax.data import preprocess
from l2tl_jax.data.errors import DataError


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


@dataclasses.dataclass(frozen=True)
class Corruption:
  """config.source_corrupt_*, read: which src_train labels to corrupt.

  Attributes:
    classes: source classes as given (indices or names); None: every source
      class.
    fraction: share of each class's src_train labels replaced, in [0, 1]
      (0.0: the classes are only checked).
    seed: seed of which examples change and their new labels.
    within: new labels among `classes` ('within'), else among the other
      source classes ('other'); read only when fraction > 0.
  """

  classes: tuple[Any, ...] | None
  fraction: float
  seed: int
  within: bool = False


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The data config, read and checked: what build_task draws and how.

  Attributes:
    source: source dataset string; None: a target-only task.
    source_classes: source classes to keep (indices or names); None: all.
    source_label_groups: source classes merged into coarser ones (group k
      becomes class k); None: no merging.
    src_draws: the source splits to draw (src_train, then src_test); () when
      source is None.
    target: target dataset string.
    target_classes: target classes to keep; None: all.
    target_label_mod: target label = original label % mod; None: the order
      of target_classes.
    tgt_draws: the target splits to draw, in consumption order.
    spec: the ImageSpec of every split but the train ones (theirs is on
      their Draw).
    normalization: per-batch pixel scaling (preprocess.NORMALIZATIONS).
    train_crop: what augmenting does (preprocess.TRAIN_CROPS).
    crop_padding: zero padding of the random crop.
    split_seed: seed of the per-class draws.
    split_shuffle: draw each class in a seeded random order (else file
      order).
    in_memory_max_bytes: larger splits are read per record.
    data_dir: TFDS data dir; None: the TFDS default.
    download: whether a missing catalog dataset may be prepared.
    corruption: source label corruption; None: none.
    allow_overlap: run although evaluation examples are training examples.
    config: the data config as a dict (TransferTask.config, summaries).
    augment: train batches are augmented (train_crop).
    read_threads: threads reading a split record by record; None: the
      pipeline's default.
  """

  source: str | None
  source_classes: tuple[Any, ...] | None
  source_label_groups: tuple[tuple[Any, ...], ...] | None
  src_draws: tuple[Draw, ...]
  target: str
  target_classes: tuple[Any, ...] | None
  target_label_mod: int | None
  tgt_draws: tuple[Draw, ...]
  spec: preprocess.ImageSpec
  normalization: str
  train_crop: str
  crop_padding: int
  split_seed: int
  split_shuffle: bool
  in_memory_max_bytes: int
  data_dir: str | None
  download: bool
  corruption: Corruption | None
  allow_overlap: bool
  config: dict[str, Any] = dataclasses.field(compare=False, repr=False)
  augment: bool = False
  read_threads: int | None = None


def _corruption(config: ml_collections.ConfigDict) -> Corruption | None:
  """Reads config.source_corrupt_*; None when nothing is to be corrupted."""
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
    return None
  if config.source is None:
    raise DataError(
        'source_corrupt_classes / source_corrupt_fraction corrupt source'
        ' labels, but the task has no source (config.source is None). Set a'
        ' source, or source_corrupt_fraction=0.0 and'
        ' source_corrupt_classes=None.'
    )
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise DataError(
        f'source_corrupt_seed must be an integer, got {seed!r}.')
  if classes is not None and not classes:
    raise DataError(
        'source_corrupt_classes is empty; list the source classes to'
        ' corrupt, or None for every source class.'
    )
  within = fraction > 0.0 and _choice(
      config, 'source_corrupt_to', 'other', ('other', 'within')) == 'within'
  return Corruption(classes=classes, fraction=fraction, seed=int(seed),
                    within=within)


def data_spec(config: ml_collections.ConfigDict) -> DataSpec:
  """Reads a data config (see get_default_data_config) into a DataSpec.

  Args:
    config: the `config.data` ConfigDict.

  Returns:
    The DataSpec.

  Raises:
    DataError: an unknown setting, a value of the wrong type or range.
  """
  spec, train_spec, crop_size = image_specs(config)
  normalization = _choice(config, 'normalization', 'unit',
                          preprocess.NORMALIZATIONS)
  train = dict(spec=train_spec, crop_size=crop_size)
  src_draws = []
  if config.source is not None:  # None: a target-only task.
    src_draws.append(Draw('src_train', config.source_split,
                          config.get('source_train_per_class'),
                          'source_train_per_class', **train))
    if config.get('source_test_split'):
      src_draws.append(Draw('src_test', config.source_test_split,
                            config.get('source_test_per_class'),
                            'source_test_per_class'))
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
  corruption = _corruption(config)
  groups = config.get('source_label_groups')
  if groups is not None:
    groups = tuple(_as_tuple(g) for g in groups)
    if config.get('source_classes') is not None:
      raise DataError(
          'source_classes and source_label_groups are both set; the groups '
          'name the classes they keep: set source_classes=None.')
  allow_overlap = config.get('allow_overlap', False)
  if not isinstance(allow_overlap, bool):
    raise DataError(
        f'allow_overlap is True or False, got {allow_overlap!r}.')
  return DataSpec(
      source=config.source,
      source_classes=_as_tuple(config.get('source_classes')),
      source_label_groups=groups,
      src_draws=tuple(src_draws),
      target=config.target,
      target_classes=_as_tuple(config.target_classes),
      target_label_mod=config.get('target_label_mod'),
      tgt_draws=tuple(tgt_draws),
      spec=spec,
      normalization=normalization,
      train_crop=config.get('train_crop', 'pad_flip'),
      crop_padding=int(config.get('crop_padding', 4)),
      split_seed=int(config.split_seed),
      split_shuffle=bool(config.split_shuffle),
      in_memory_max_bytes=int(config.get('in_memory_max_bytes', 2 * 1024**3)),
      data_dir=config.get('data_dir'),
      download=config.get('download', True),
      corruption=corruption,
      allow_overlap=allow_overlap,
      config=config.to_dict(),
      augment=bool(config.get('augment', False)),
      read_threads=config.get('read_threads'),
  )
