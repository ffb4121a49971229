"""Opened datasets and their splits read into memory (or per record).

A Dataset is what a dataset kind's opener returns (registry.py; the kinds in
l2tl_jax.data.kinds): class names, splits and how to read records through
`builder.as_data_source`. `from_builder` makes one from a TFDS builder;
`load_split` reads a split's labels, and its preprocessed images when they
fit in memory, cached in-process.
"""

import collections
import dataclasses
import os
import threading
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from l2tl_jax.data import decode as decode_lib
from l2tl_jax.data import preprocess
from l2tl_jax.data.errors import DataError

_READ_CHUNK = 2048


@dataclasses.dataclass(eq=False)
class Dataset:
  """One dataset, opened: class names, splits, and how to read records.

  Attributes:
    name: the dataset string as given.
    resolved: where the data actually comes from (e.g. the IDX directory
      used for 'fashion_mnist' offline, or the prepared TFDS directory).
    class_names: names in label order.
    splits: available split names; None when not known in advance (mocked
      catalog datasets accept any split).
    native_shape: (H, W, C) of the stored images; None entries vary.
    cache_key: identifies the data on disk for the in-process cache; None
      when the data is not on disk (mocked), which disables caching.
    notes: what opening skipped and why (e.g. a folder's broken symlinks),
      one sentence each; build_task records them in the task summary.
    parts: for a joined dataset ('join:...'), its joined.JoinedParts in
      label order; () otherwise.
    files: for an image folder, split -> its folder.SplitFiles (each
      record's file and size; overlap.py compares their bytes); None
      otherwise.
  """

  name: str
  resolved: str
  class_names: tuple[str, ...]
  splits: tuple[str, ...] | None
  native_shape: tuple[int | None, int | None, int | None]
  cache_key: str | None
  _as_data_source: Callable[..., Sequence[Any]]
  image_key: str = 'image'
  label_key: str = 'label'
  encoded: bool = False
  notes: tuple[str, ...] = ()
  parts: tuple[Any, ...] = ()
  # Reads a whole split itself, (dataset, split, spec, in_memory_max_bytes)
  # -> LoadedSplit (joined datasets read their parts); None: record by record
  # through the data source.
  _load_split: Callable[..., Any] | None = None
  files: Callable[[str], Any] | None = None

  def source(self, split: str, *, skip_image_decoding: bool = False):
    """Returns the TFDS data source of a split.

    Args:
      split: split name.
      skip_image_decoding: leave catalog images encoded (labels-only reads).
    """
    if self.splits is not None and split not in self.splits:
      raise DataError(
          f'Dataset {self.name!r} has no split {split!r}; it has'
          f' {list(self.splits)}. Choose one of those in the config.'
      )
    decoders = None
    if skip_image_decoding and not self.encoded:
      decoders = {self.image_key: tfds.decode.SkipDecoding()}
    return self._as_data_source(split=split, decoders=decoders)

  def decode(self, value: Any, where: Callable[[], str]) -> np.ndarray:
    """Returns a stored image as uint8 [H, W, C].

    Args:
      value: the stored image (array, or encoded bytes for folders).
      where: names the record in error messages.
    """
    if self.encoded:
      return decode_lib.decode_image(bytes(value), where)
    image = np.asarray(value)
    if image.ndim == 2:
      image = image[..., None]
    return image


def resolve_class(spec: Any, names: Sequence[str], dataset: str,
                  field: str) -> int:
  """Returns the original label of a class given by index or name.

  Args:
    spec: an int index, or a str: a class name, or, when no class has that
      name, the digits of an index.
    names: the dataset's class names, in label order.
    dataset: dataset string, for messages.
    field: where the class was given (a config field), for messages.

  Raises:
    DataError: an index out of range, an unknown name or another type.
  """
  if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
    if 0 <= spec < len(names):
      return int(spec)
    raise DataError(
        f'{field}: class index {spec} is out of range for {dataset!r}, which'
        f' has {len(names)} classes (0..{len(names) - 1}).'
    )
  if isinstance(spec, str):
    if spec in names:
      return names.index(spec)
    if spec.strip().isdigit() and int(spec) < len(names):
      return int(spec)
    shown = list(names[:20]) + (['...'] if len(names) > 20 else [])
    raise DataError(
        f'{field}: {dataset!r} has no class named {spec!r}. Its classes are'
        f' {shown}; name classes exactly or give their indices.'
    )
  raise DataError(
      f'{field}: classes are given as indices (int) or names (str), got'
      f' {spec!r} ({type(spec).__name__}).'
  )


def from_builder(
    name: str, builder: tfds.core.DatasetBuilder, resolved: str, *,
    encoded: bool = False, cache: bool = True, notes: Sequence[str] = (),
) -> Dataset:
  """Returns the Dataset a TFDS builder reads (its supervised image/label).

  Args:
    name: the dataset string.
    builder: the builder; its splits are known when it is prepared.
    resolved: where the data comes from (Dataset.resolved).
    encoded: images are stored encoded (bytes; decoded per record).
    cache: whether load_split may cache its splits (data on disk).
    notes: what opening skipped and why (Dataset.notes).

  Raises:
    DataError: not an image classification dataset.
  """
  info = builder.info
  keys = info.supervised_keys
  if isinstance(keys, tuple) and len(keys) == 2 and all(
      isinstance(k, str) for k in keys
  ):
    image_key, label_key = keys
  else:
    image_key, label_key = 'image', 'label'
  features = info.features
  if image_key not in features or label_key not in features:
    raise DataError(
        f'Dataset {name!r} has no image/label pair (features:'
        f' {list(features.keys())}); only image classification datasets can be'
        ' used.'
    )
  label_feature = features[label_key]
  if not isinstance(label_feature, tfds.features.ClassLabel):
    raise DataError(
        f'Dataset {name!r}: feature {label_key!r} is not a class label; only'
        ' image classification datasets can be used.'
    )
  class_names = tuple(label_feature.names)
  shape = tuple(features[image_key].shape) if not encoded else (None,) * 3
  if len(shape) == 2:
    shape = shape + (1,)
  if len(shape) != 3:
    raise DataError(
        f'Dataset {name!r}: images of shape {shape} are not [H, W, C] images.'
    )
  splits = tuple(info.splits.keys()) if builder.is_prepared() else None
  return Dataset(
      name=name,
      resolved=resolved,
      class_names=class_names,
      splits=splits,
      native_shape=shape,
      cache_key=os.fspath(builder.data_path) if cache else None,
      _as_data_source=builder.as_data_source,
      image_key=image_key,
      label_key=label_key,
      encoded=encoded,
      notes=tuple(notes),
  )


# Serialises the opening of streamed splits' data sources (LoadedSplit).
_open_lock = threading.Lock()


@dataclasses.dataclass(eq=False)
class LoadedSplit:
  """Labels of a whole split, and its preprocessed images when they fit.

  Attributes:
    dataset: the Dataset.
    split: split name.
    spec: the ImageSpec the images were brought to.
    labels: int64 [N], original labels, in record order.
    image_shape: (H, W, C) after preprocessing.
    images: uint8 [N, H, W, C] in record order, or None when the split is
      read per record (too large for memory).
  """

  dataset: Dataset
  split: str
  spec: preprocess.ImageSpec
  labels: np.ndarray
  image_shape: tuple[int, int, int]
  images: np.ndarray | None

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def _source(self) -> Sequence[Any]:
    # Reader threads ask for it at once on the first batch: it is opened
    # once, and no two data sources are opened at the same time (opening
    # one is not thread-safe everywhere: tfds.testing.mock_data patches
    # module attributes for the duration of each open).
    source = self.__dict__.get('_opened_source')
    if source is None:
      with _open_lock:
        source = self.__dict__.get('_opened_source')
        if source is None:
          source = self.dataset.source(self.split)
          self.__dict__['_opened_source'] = source
    return source

  def read_images(self, indices: np.ndarray) -> np.ndarray:
    """Returns preprocessed images at record indices, uint8 [n, H, W, C]."""
    if self.images is not None:
      return self.images[indices]
    source = self._source
    records = _read_records(source, [int(i) for i in indices])
    out = np.empty((len(indices),) + self.image_shape, np.uint8)
    for j, (i, record) in enumerate(zip(indices, records)):
      image = self.dataset.decode(
          record[self.dataset.image_key],
          _where(self.dataset, self.split, i, record),
      )
      out[j] = preprocess.preprocess_image(image, self.spec)
    return out


def _where(dataset: Dataset, split: str, index: int,
           record: Any) -> Callable[[], str]:
  def where() -> str:
    name = record.get('file_name') if dataset.encoded else None
    if name is not None:
      root = dataset.resolved.split(':', 1)[1]
      return os.path.join(root, bytes(name).decode())
    return f'{dataset.name}[{split}] record {index}'
  return where


def _read_records(source: Sequence[Any], indices: list[int]) -> list[Any]:
  getitems = getattr(source, '__getitems__', None)
  if getitems is not None:
    try:
      return list(getitems(indices))
    except TypeError:  # Some sources (mocks) only read one record at a time.
      pass
  return [source[i] for i in indices]


def _read_labels(dataset: Dataset, split: str,
                 source: Sequence[Any]) -> np.ndarray:
  """Every label of a split (int64 [N]), skipping image decoding if it can."""
  n = len(source)
  try:
    labels_source = dataset.source(split, skip_image_decoding=True)
    _read_records(labels_source, [0] if n else [])
  except Exception:  # Not all stores can skip decoding; decode then.
    labels_source = source
  labels = np.empty(n, np.int64)
  for start in range(0, n, _READ_CHUNK):
    records = _read_records(labels_source,
                            list(range(start, min(n, start + _READ_CHUNK))))
    labels[start : start + len(records)] = [
        r[dataset.label_key] for r in records]
  return labels


def read_labels(dataset: Dataset, split: str) -> np.ndarray:
  """Returns every label of a split, int64 [N] in record order.

  Images are not decoded where the store can skip them.

  Args:
    dataset: an opened Dataset (not a joined one: see kinds/joined.py).
    split: split name.
  """
  return _read_labels(dataset, split, dataset.source(split))


def _shape_error(dataset: Dataset, split: str, a, b) -> DataError:
  return DataError(
      f'Images of {dataset.name!r}[{split}] come in different shapes ({a} and'
      f' {b}) that cannot be batched together; set image_size (and channels)'
      ' in the config so that every image is brought to one shape.'
  )


def _load(dataset: Dataset, split: str, spec: preprocess.ImageSpec,
          max_bytes: int) -> LoadedSplit:
  source = dataset.source(split)
  n = len(source)
  native = dataset.native_shape
  if None not in native:
    out_shape = spec.output_shape(native)
  elif spec.image_size is not None and spec.channels is not None:
    out_shape = (spec.image_size, spec.image_size, spec.channels)
  else:
    out_shape = None
  label_key = dataset.label_key

  if out_shape is not None and n * int(np.prod(out_shape)) > max_bytes:
    # Per-record split: one labels-only pass now, images read per batch.
    labels = _read_labels(dataset, split, source)
    return LoadedSplit(dataset, split, spec, labels, out_shape, None)

  labels = np.empty(n, np.int64)
  images = None
  for start in range(0, n, _READ_CHUNK):
    indices = list(range(start, min(n, start + _READ_CHUNK)))
    records = _read_records(source, indices)
    labels[start : start + len(records)] = [r[label_key] for r in records]
    decoded = [
        dataset.decode(r[dataset.image_key], _where(dataset, split, i, r))
        for i, r in zip(indices, records)
    ]
    if len({d.shape for d in decoded}) == 1:
      chunk = preprocess.preprocess_images(np.stack(decoded), spec)
    else:
      done = [preprocess.preprocess_image(d, spec) for d in decoded]
      shapes = sorted({d.shape for d in done})
      if len(shapes) > 1:
        raise _shape_error(dataset, split, shapes[0], shapes[1])
      chunk = np.stack(done)
    if images is None:
      images = np.empty((n,) + chunk.shape[1:], np.uint8)
    elif chunk.shape[1:] != images.shape[1:]:
      raise _shape_error(dataset, split, images.shape[1:], chunk.shape[1:])
    images[start : start + len(chunk)] = chunk
  if images is None:
    raise DataError(
        f'Split {split!r} of {dataset.name!r} is empty; choose a split with'
        ' examples.'
    )
  return LoadedSplit(dataset, split, spec, labels, images.shape[1:], images)


_CACHE_SIZE = 8
_cache: collections.OrderedDict = collections.OrderedDict()
_cache_lock = threading.Lock()


def load_split(
    dataset: Dataset, split: str, *, spec: preprocess.ImageSpec,
    in_memory_max_bytes: int,
) -> LoadedSplit:
  """Reads a split: all labels, and all preprocessed images when they fit.

  Results are cached in-process (the last few splits, keyed by the data on
  disk and the preprocessing), so building several tasks over the same data
  reads it once.

  Args:
    dataset: an opened Dataset.
    split: split name.
    spec: the preprocessing.
    in_memory_max_bytes: splits whose preprocessed images take more bytes are
      read per record instead.

  Returns:
    The LoadedSplit.
  """
  key = None
  if dataset.cache_key is not None:
    key = (dataset.cache_key, split, spec, in_memory_max_bytes)
    with _cache_lock:
      if key in _cache:
        _cache.move_to_end(key)
        cached = _cache[key]
        return dataclasses.replace(cached, dataset=dataset)
  if dataset._load_split is not None:  # pylint: disable=protected-access
    loaded = dataset._load_split(  # pylint: disable=protected-access
        dataset, split, spec, in_memory_max_bytes)
  else:
    loaded = _load(dataset, split, spec, in_memory_max_bytes)
  if key is not None:
    with _cache_lock:
      _cache[key] = loaded
      while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
  return loaded


def clear_cache() -> None:
  """Drops the in-process cache of loaded splits."""
  with _cache_lock:
    _cache.clear()
