"""Datasets joined from several: the dataset string 'join:PART+PART+...'.

Each PART is a dataset string of any other kind (a TFDS catalog name,
'uci_digits', 'mnist_5k', 'idx:/dir', 'folder:/dir', ...), optionally
followed by the classes it keeps in brackets, separated by commas:

    join:fashion_mnist[1,3,5,7,8,9]+mnist_5k
    join:fashion_mnist[Trouser,Ankle boot]+folder:/data/logos[0,2]

A class is a name, or, when the part has no class of that name, an index;
without brackets a part keeps every class. Spaces around names, commas and
'+' are ignored. A joined dataset string is used wherever a dataset string is
(config.source, config.target, open_dataset).

The joined dataset:
  - labels: contiguous, the first part's kept classes in the order listed,
    then the second part's, ...; class names are '<part>/<class>'
    ('fashion_mnist/Trouser', 'mnist_5k/7'). Class lists of the task
    (source_classes, ...) then refer to these joined labels and names;
  - records: the kept classes' records of the first part in record order,
    then the second part's, ...;
  - splits: a split exists where every part has it (mnist_5k has only
    'train', so a join with it has only 'train');
  - images: every part is read with the task's preprocessing (image_size,
    channels), so 28x28 gray parts padded to 32x32 agree; parts that end up
    in different shapes (image_size None) are refused.
Each part is read and cached as when used alone (a part that is also the
target is read once); the joined split is cached under the parts' data ids
and kept classes. Part strings cannot contain '+', '[' or ']', nor be joins.
"""

import collections.abc
import dataclasses
import functools
from typing import Any, Sequence

import numpy as np

from l2tl_jax.data import preprocess
from l2tl_jax.data import registry
from l2tl_jax.data import sources
from l2tl_jax.data.errors import DataError

PREFIX = 'join:'
_HOW = ("Write joined datasets as 'join:DATASET[CLASSES]+DATASET[CLASSES]+...',"
        " e.g. 'join:fashion_mnist[1,3,5,7,8,9]+mnist_5k' (classes by name or"
        ' index, comma-separated; no brackets keeps every class).')


@dataclasses.dataclass(frozen=True)
class PartSpec:
  """One part of a join string, as written.

  Attributes:
    name: the part's dataset string.
    classes: the class tokens in its brackets, or None (no brackets: all).
  """

  name: str
  classes: tuple[str, ...] | None


def _syntax_error(name: str, problem: str) -> DataError:
  return DataError(f'Cannot read dataset string {name!r}: {problem}. {_HOW}')


def _top_level_pieces(name: str, body: str) -> list[str]:
  """Splits at the '+' outside brackets, checking that brackets pair up."""
  pieces, depth, start = [], 0, 0
  for i, char in enumerate(body):
    if char == '[':
      if depth:
        raise _syntax_error(name, "a '[' inside brackets")
      depth = 1
    elif char == ']':
      if not depth:
        raise _syntax_error(name, "a ']' without its '['")
      depth = 0
    elif char == '+' and not depth:
      pieces.append(body[start:i])
      start = i + 1
  if depth:
    raise _syntax_error(name, "a '[' that is never closed")
  pieces.append(body[start:])
  return pieces


def parse(name: str) -> tuple[PartSpec, ...]:
  """Reads a join string into its parts.

  Args:
    name: 'join:PART+PART+...' (see the module docstring).

  Returns:
    The PartSpecs in order.

  Raises:
    DataError: a string that does not follow the syntax, names a part twice,
      or joins a join.
  """
  if not name.startswith(PREFIX):
    raise _syntax_error(name, f'it does not start with {PREFIX!r}')
  body = name[len(PREFIX):]
  if not body.strip():
    raise _syntax_error(name, 'no datasets after join:')
  parts = []
  for piece in _top_level_pieces(name, body):
    piece = piece.strip()
    if not piece:
      raise _syntax_error(
          name, "an empty part (a '+' at an end, or two in a row)")
    classes = None
    if '[' in piece:
      open_at = piece.index('[')
      if not piece.endswith(']'):
        raise _syntax_error(
            name, f"text after the closing ']' of part {piece!r}")
      tokens = [t.strip() for t in piece[open_at + 1 : -1].split(',')]
      if not any(tokens):
        raise _syntax_error(name, f'empty brackets in part {piece!r}')
      if not all(tokens):
        raise _syntax_error(name, f'an empty class in part {piece!r}')
      classes = tuple(tokens)
      piece = piece[:open_at].strip()
      if not piece:
        raise _syntax_error(name, 'brackets without a dataset before them')
    elif ']' in piece:
      raise _syntax_error(name, f"a ']' without its '[' in part {piece!r}")
    if piece.startswith(PREFIX):
      raise _syntax_error(name, f'part {piece!r} is itself a join')
    if piece in [p.name for p in parts]:
      raise _syntax_error(
          name, f'part {piece!r} appears twice; list all its classes in one'
          ' pair of brackets')
    parts.append(PartSpec(piece, classes))
  return tuple(parts)


@dataclasses.dataclass(frozen=True, eq=False)
class JoinedPart:
  """One part of an opened joined dataset.

  Attributes:
    dataset: the part's opened Dataset.
    kept: its original labels that are kept, in joined-label order.
    offset: the joined label of kept[0].
  """

  dataset: sources.Dataset
  kept: tuple[int, ...]
  offset: int

  @functools.cached_property
  def new_label(self) -> np.ndarray:
    """Original label -> joined label (-1: not kept), int64 [C_part]."""
    new = np.full(len(self.dataset.class_names), -1, np.int64)
    new[list(self.kept)] = self.offset + np.arange(len(self.kept))
    return new

  def summary(self) -> dict[str, Any]:
    """JSON-able: the part, where its data is, its classes and labels."""
    names = self.dataset.class_names
    return {
        'dataset': self.dataset.name,
        'resolved': self.dataset.resolved,
        'classes': [names[k] for k in self.kept],
        'original_labels': list(self.kept),
        'labels': list(range(self.offset, self.offset + len(self.kept))),
    }


def _kept(spec: PartSpec, dataset: sources.Dataset, name: str
          ) -> tuple[int, ...]:
  names = list(dataset.class_names)
  if spec.classes is None:
    return tuple(range(len(names)))
  field = f'Dataset string {name!r}'
  kept = []
  for token in spec.classes:
    if token not in names and token.isdigit():
      token = int(token)  # An index: out of range is reported as such.
    kept.append(sources.resolve_class(token, names, spec.name, field))
  if len(set(kept)) < len(kept):
    raise DataError(
        f'{field} keeps a class of {spec.name!r} twice ({list(spec.classes)});'
        ' list each class once.'
    )
  return tuple(kept)


def _common(values: Sequence[Any]) -> Any:
  return values[0] if len(set(values)) == 1 else None


def open_joined(name: str, *, data_dir: str, download: bool
                ) -> sources.Dataset:
  """Opens a joined dataset (see the module docstring).

  Args:
    name: 'join:PART+PART+...'.
    data_dir: TFDS data dir the parts are opened in.
    download: whether a missing catalog part may be prepared.

  Returns:
    The joined Dataset; `parts` holds its JoinedParts.

  Raises:
    DataError: bad syntax, a part that cannot be opened, an unknown class.
  """
  parts, offset = [], 0
  for spec in parse(name):
    try:
      dataset = registry.open_dataset(spec.name, data_dir=data_dir,
                                      download=download)
    except DataError as e:
      raise DataError(f'Part {spec.name!r} of {name!r}: {e}') from e
    kept = _kept(spec, dataset, name)
    parts.append(JoinedPart(dataset, kept, offset))
    offset += len(kept)
  parts = tuple(parts)
  known = [p.dataset.splits for p in parts if p.dataset.splits is not None]
  splits = None
  if known:
    splits = tuple(s for s in known[0] if all(s in k for k in known[1:]))
  keys = [p.dataset.cache_key for p in parts]
  cache_key = None
  if None not in keys:
    cache_key = PREFIX + '+'.join(
        f'{key}[{",".join(map(str, p.kept))}]' for key, p in zip(keys, parts))
  return sources.Dataset(
      name=name,
      resolved=PREFIX + '+'.join(
          f'{p.dataset.resolved}[{",".join(map(str, p.kept))}]'
          for p in parts),
      class_names=tuple(f'{p.dataset.name}/{p.dataset.class_names[k]}'
                        for p in parts for k in p.kept),
      splits=splits,
      native_shape=tuple(_common([p.dataset.native_shape[i] for p in parts])
                         for i in range(3)),
      cache_key=cache_key,
      _as_data_source=functools.partial(_JoinedSource, parts),
      notes=tuple(dict.fromkeys(n for p in parts for n in p.dataset.notes)),
      parts=parts,
      _load_split=_load_joined,
  )


@dataclasses.dataclass(eq=False)
class JoinedSplit(sources.LoadedSplit):
  """A split of a joined dataset: its parts' splits, kept records in order.

  Attributes (besides LoadedSplit's):
    part_splits: each part's LoadedSplit.
    part_of: int64 [N], the part of each joined record.
    record_of: int64 [N], its record index within that part's split.
  """

  part_splits: tuple[sources.LoadedSplit, ...] = ()
  part_of: np.ndarray | None = None
  record_of: np.ndarray | None = None

  def read_images(self, indices: np.ndarray) -> np.ndarray:
    """Returns preprocessed images at record indices, uint8 [n, H, W, C]."""
    if self.images is not None:
      return self.images[indices]
    indices = np.asarray(indices, np.int64)
    out = np.empty((len(indices),) + tuple(self.image_shape), np.uint8)
    part_of = self.part_of[indices]
    for p, part_split in enumerate(self.part_splits):
      where = np.flatnonzero(part_of == p)
      if len(where):
        out[where] = part_split.read_images(self.record_of[indices[where]])
    return out

  def part_counts(self, indices: np.ndarray) -> list[int]:
    """Number of the records at `indices` that come from each part."""
    return np.bincount(self.part_of[indices],
                       minlength=len(self.part_splits)).tolist()


def _check_split(dataset: sources.Dataset, split: str) -> None:
  for part in dataset.parts:
    splits = part.dataset.splits
    if splits is not None and split not in splits:
      raise DataError(
          f'{dataset.name!r} has no split {split!r}: its part'
          f' {part.dataset.name!r} has only {list(splits)}. A joined split'
          ' exists where every part has it; choose one of'
          f' {list(dataset.splits or ())} (a source test split can be turned'
          ' off with source_test_split=None).'
      )


def _load_joined(dataset: sources.Dataset, split: str,
                 spec: preprocess.ImageSpec,
                 in_memory_max_bytes: int) -> JoinedSplit:
  """Reads a joined split from its parts' (cached) splits."""
  _check_split(dataset, split)
  loaded, records, labels = [], [], []
  for part in dataset.parts:
    part_split = sources.load_split(part.dataset, split, spec=spec,
                                    in_memory_max_bytes=in_memory_max_bytes)
    num = len(part.new_label)
    if len(part_split.labels) and (part_split.labels.min() < 0
                                   or part_split.labels.max() >= num):
      raise DataError(
          f'{part.dataset.name!r}[{split}] has labels outside 0..{num - 1};'
          ' the dataset is inconsistent with its class names.'
      )
    new = part.new_label[part_split.labels]  # [N_part]
    kept = np.flatnonzero(new >= 0)
    loaded.append(part_split)
    records.append(kept)
    labels.append(new[kept])
  shapes = {tuple(p.image_shape) for p in loaded}
  if len(shapes) > 1:
    found = ', '.join(f'{p.dataset.name!r} {tuple(s.image_shape)}'
                      for p, s in zip(dataset.parts, loaded))
    raise DataError(
        f'The parts of {dataset.name!r} come in different shapes ({found})'
        ' that cannot be batched together; set image_size (and channels) in'
        ' the config so that every part is brought to one shape.'
    )
  image_shape = shapes.pop()
  sizes = [len(r) for r in records]
  if not sum(sizes):
    raise DataError(
        f'Split {split!r} of {dataset.name!r} has no examples of the kept'
        ' classes; choose a split with examples.'
    )
  images = None
  n_bytes = sum(sizes) * int(np.prod(image_shape))
  if (all(p.images is not None for p in loaded)
      and n_bytes <= in_memory_max_bytes):
    images = np.concatenate([p.images[r] for p, r in zip(loaded, records)])
  return JoinedSplit(
      dataset=dataset, split=split, spec=spec,
      labels=np.concatenate(labels).astype(np.int64),
      image_shape=image_shape, images=images,
      part_splits=tuple(loaded),
      part_of=np.repeat(np.arange(len(loaded), dtype=np.int64), sizes),
      record_of=np.concatenate(records).astype(np.int64),
  )


class _JoinedSource(collections.abc.Sequence):
  """A joined split as a data source: records {'image', 'label'} by index.

  Images are the parts' decoded, unpreprocessed images (uint8 [H, W, C]), or
  their stored values when decoding is skipped; labels are joined labels.
  """

  def __init__(self, parts: Sequence[JoinedPart], *, split: str,
               decoders: Any = None):
    skip = decoders is not None
    self._parts = tuple(parts)
    self._split = split
    self._skip = skip
    self._sources = [p.dataset.source(split, skip_image_decoding=skip)
                     for p in self._parts]
    part_of, record_of = [], []
    for p, part in enumerate(self._parts):
      new = part.new_label[sources.read_labels(part.dataset, split)]
      kept = np.flatnonzero(new >= 0)
      part_of.append(np.full(len(kept), p, np.int64))
      record_of.append(kept)
    self._part_of = np.concatenate(part_of)
    self._record_of = np.concatenate(record_of)

  def __len__(self) -> int:
    return len(self._part_of)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not -len(self) <= index < len(self):
      raise IndexError(index)
    p, i = int(self._part_of[index]), int(self._record_of[index])
    part = self._parts[p]
    record = self._sources[p][i]
    ds = part.dataset
    image = record[ds.image_key]
    if not self._skip:
      def where() -> str:
        return f'{ds.name}[{self._split}] record {i}'
      image = ds.decode(image, where)
    return {'image': image,
            'label': int(part.new_label[int(record[ds.label_key])])}


def _open(name: str, argument: str, *, data_dir: str,
          download: bool) -> sources.Dataset:
  del argument  # parse reads the whole string.
  return open_joined(name, data_dir=data_dir, download=download)


def _data_dirs(name: str, argument: str) -> list[tuple[str, str]]:
  del argument
  return [d for part in parse(name) for d in registry.data_dirs(part.name)]


KIND = registry.register(registry.Kind(
    name='join', open=_open, prefix=PREFIX, data_dirs=_data_dirs))
