"""Transfer tasks: source and target splits drawn per class from datasets.

build_task reads the data config once (parse.data_spec, or takes a DataSpec)
and builds the task from it. Each split draws N examples per class from a
dataset split; splits drawn from the same dataset split take consecutive,
non-overlapping runs of each class's examples (train, then validation, then
test), so they are disjoint. The run order of each class is the file order or
a permutation seeded by `split_seed`. Class lists and label moduli: labels.py.

For studies, the labels of a fraction of some source classes' src_train
examples can be replaced by uniformly random other source classes
(`source_corrupt_*` in the data config; labels.corrupt_labels); src_test
stays clean and the task summary records what changed.

Target validation or test examples that are also training examples (the same
records, or equal images: overlap.py) are refused unless `allow_overlap`;
the counts are in the task summary ('overlap') either way.
"""

import copy
import dataclasses
import zlib
from typing import Any, Sequence

import ml_collections
import numpy as np

from l2tl_jax.data import overlap as overlap_lib
from l2tl_jax.data import parse
from l2tl_jax.data import preprocess
from l2tl_jax.data import registry
from l2tl_jax.data import sources
from l2tl_jax.data.errors import DataError
from l2tl_jax.data.labels import LabelMap, corrupt_labels, group_map, label_map
from l2tl_jax.data.parse import Draw, image_specs
from l2tl_jax.data.splits import Split, TransferTask

# The pieces a task is built from are offered here too (saved_run.py reads
# label_map and image_specs, the pipeline Split).
__all__ = ['Draw', 'LabelMap', 'Split', 'TransferTask', 'build_task',
           'corrupt_labels', 'draw_splits', 'image_specs', 'label_map',
           'source_class_names']


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


def _corrupt_source(
    corruption: parse.Corruption | None, source: str | None,
    src_ds: sources.Dataset | None, src_map: LabelMap | None,
    src_train: Split | None, *, grouped: bool = False,
) -> tuple[Split | None, dict[str, Any] | None]:
  """Applies the parsed source_corrupt_* to src_train: (split, record).

  The classes name the dataset's classes, or, with `grouped`
  (source_label_groups), the merged ones (by name or index)."""
  if corruption is None:
    return src_train, None
  num_classes = len(src_map.class_names)
  classes = corruption.classes
  if classes is None:
    labels = list(range(num_classes))
  else:
    labels = []
    for given in classes:
      if grouped:
        labels.append(sources.resolve_class(
            given, src_map.class_names, source, 'source_corrupt_classes'))
        continue
      original = sources.resolve_class(given, src_ds.class_names, source,
                                       'source_corrupt_classes')
      label = int(src_map.new_label[original])
      if label < 0:
        raise DataError(
            f'source_corrupt_classes: class'
            f' {src_ds.class_names[original]!r} of {source!r} is not a'
            ' source class of the task (source_classes leaves it out);'
            f' corrupt only kept source classes {list(src_map.class_names)}.'
        )
      labels.append(label)
    if len(set(labels)) < len(labels):
      raise DataError(
          f'source_corrupt_classes names a class twice: {list(classes)}.')
  if corruption.fraction == 0.0:  # Classes checked; nothing to change.
    return src_train, None
  within = corruption.within
  if within and len(labels) < 2:
    raise DataError(
        "source_corrupt_to='within' draws the new labels among"
        f' source_corrupt_classes, but it names one class'
        f' ({src_map.class_names[labels[0]]!r}), so no label would change.'
        ' Name two or more source classes, or use'
        " source_corrupt_to='other' (labels of the other source classes)."
    )
  fraction, seed = corruption.fraction, corruption.seed
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


def _spec(config: ml_collections.ConfigDict | parse.DataSpec
          ) -> parse.DataSpec:
  if isinstance(config, parse.DataSpec):
    return config
  return parse.data_spec(config)


def _open(spec: parse.DataSpec, name: str) -> sources.Dataset:
  return registry.open_dataset(name, data_dir=spec.data_dir,
                               download=spec.download)


def _source_map(spec: parse.DataSpec, src_ds: sources.Dataset) -> LabelMap:
  if spec.source_label_groups is not None:
    return group_map(src_ds.class_names, spec.source_label_groups,
                     dataset=spec.source, field='source_label_groups')
  return label_map(src_ds.class_names, spec.source_classes, None,
                   dataset=spec.source, field='source_classes')


def source_class_names(
    config: ml_collections.ConfigDict | parse.DataSpec) -> list[str]:
  """The task's source class names in label order, without reading images.

  Opens the source dataset (preparing a built-in one if needed) and applies
  source_classes, as build_task does; cheap enough to check a config (e.g.
  checks.check_class_relevance) before anything trains.

  Args:
    config: the `config.data` ConfigDict, or its DataSpec.

  Returns:
    The names; [] for a target-only task (source None).

  Raises:
    DataError: the source cannot be opened, or an unknown class.
  """
  spec = _spec(config)
  if spec.source is None:
    return []
  return list(_source_map(spec, _open(spec, spec.source)).class_names)


def build_task(
    config: ml_collections.ConfigDict | parse.DataSpec) -> TransferTask:
  """Builds the source and target splits described by a data config.

  Args:
    config: the `config.data` ConfigDict (see get_default_data_config), or
      its DataSpec (parse.data_spec).

  Returns:
    The TransferTask.

  Raises:
    DataError: any dataset, class or count that cannot be honoured.
  """
  spec = _spec(config)
  common = dict(spec=spec.spec, seed=spec.split_seed,
                shuffle=spec.split_shuffle,
                in_memory_max_bytes=spec.in_memory_max_bytes,
                crop_padding=spec.crop_padding,
                normalization=spec.normalization, train_crop=spec.train_crop)

  src, src_ds, src_map = {}, None, None
  if spec.source is not None:  # None: a target-only task.
    src_ds = _open(spec, spec.source)
    src_map = _source_map(spec, src_ds)
    src = draw_splits(src_ds, src_map, spec.src_draws,
                      classes_field='source_classes', **common)
  src_names = [] if src_map is None else list(src_map.class_names)
  src_train, src_corruption = _corrupt_source(
      spec.corruption, spec.source, src_ds, src_map, src.get('src_train'),
      grouped=spec.source_label_groups is not None)

  tgt_ds = _open(spec, spec.target)
  tgt_map = label_map(tgt_ds.class_names, spec.target_classes,
                      spec.target_label_mod, dataset=spec.target,
                      field='target_classes')
  tgt = draw_splits(tgt_ds, tgt_map, spec.tgt_draws,
                    classes_field='target_classes', **common)

  shapes = {s.image_shape for s in (*src.values(), *tgt.values())}
  if len(shapes) > 1:
    raise DataError(
        f'Source {spec.source!r} and target {spec.target!r} images end up'
        f' in different shapes {sorted(shapes)}; one encoder needs one shape.'
        ' Set image_size and channels in the config.'
    )
  image_shape = shapes.pop()
  if spec.normalization == 'imagenet' and image_shape[-1] != 3:
    raise DataError(
        f"normalization='imagenet' needs RGB images, but the task's have"
        f' {image_shape[-1]} channel(s); set channels=3 in the data config.'
    )
  datasets = {spec.target: tgt_ds}
  if src_ds is not None:
    datasets = {spec.source: src_ds, **datasets}
  found = overlap_lib.find({'src_train': src_train, **tgt})
  overlap_lib.check(found, allow=spec.allow_overlap, source=spec.source,
                    target=spec.target)
  return TransferTask(
      src_train=src_train,
      src_test=src.get('src_test'),
      tgt_train=tgt['tgt_train'],
      tgt_val=tgt.get('tgt_val'),
      tgt_test=tgt.get('tgt_test'),
      src_class_names=src_names,
      tgt_class_names=list(tgt_map.class_names),
      image_shape=image_shape,
      config=copy.deepcopy(spec.config),
      resolved={k: d.resolved for k, d in datasets.items()},
      notes=tuple(dict.fromkeys(n for d in datasets.values() for n in d.notes)),
      data_ids={k: d.cache_key for k, d in datasets.items()},
      joins={k: [p.summary() for p in d.parts]
             for k, d in datasets.items() if d.parts},
      src_corruption=src_corruption,
      overlap={'allowed': spec.allow_overlap, 'pairs': found},
  )
