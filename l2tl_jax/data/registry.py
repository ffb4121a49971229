"""Dataset kinds: which opener reads a dataset string.

A kind is named in a dataset string by its prefix ('folder:/data/x',
'join:a+b', 'idx:/dir') or by one of its exact names ('uci_digits', 'idx');
every other string is a TFDS catalog name, read by the fallback kind. Each
kind registers itself, in its own module under l2tl_jax.data.kinds:

    registry.register(registry.Kind(
        name='folder', prefix='folder:', examples=('folder:/dir',),
        open=_open, data_dirs=_data_dirs))

and `open_dataset(name)` finds the kind and calls its opener. This module
knows no kind: the kinds import it, never the other way round.
"""

import dataclasses
import os
from typing import Callable

import tensorflow_datasets as tfds

from l2tl_jax.data import sources
from l2tl_jax.data.errors import DataError

# (name, argument, *, data_dir, download) -> the opened Dataset; argument is
# what follows the prefix ('' for an exact name or the fallback's full name).
Opener = Callable[..., sources.Dataset]


@dataclasses.dataclass(frozen=True)
class Kind:
  """One kind of dataset string.

  Attributes:
    name: the kind's name ('folder', 'join', 'catalog', ...).
    open: (name, argument, *, data_dir, download) -> Dataset; `name` is the
      whole (stripped) dataset string, `argument` what follows the prefix.
    names: whole dataset strings of this kind ('uci_digits'); argument ''.
    prefix: dataset strings starting with it are of this kind ('folder:').
      A kind with neither names nor prefix is the fallback (the catalog).
    examples: how strings of the kind are written, listed in messages as the
      datasets that need no download.
    data_dirs: (name, argument) -> [(dataset string, local directory)], the
      directories on this machine the dataset reads (checks.check_workdir
      keeps runs out of them); None: none.
  """

  name: str
  open: Opener
  names: tuple[str, ...] = ()
  prefix: str | None = None
  examples: tuple[str, ...] = ()
  data_dirs: Callable[[str, str], list[tuple[str, str]]] | None = None

  @property
  def is_fallback(self) -> bool:
    return not self.names and self.prefix is None


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
  """Adds a kind; refuses a name, string or prefix another kind claims.

  Args:
    kind: the Kind.

  Returns:
    The kind (so a module can keep it as a constant).

  Raises:
    ValueError: the kind's name is taken, its names or prefix overlap
      another kind's, or a second fallback.
  """
  for other in _KINDS.values():
    clash = None
    if other.name == kind.name:
      clash = f'the name {kind.name!r}'
    elif kind.is_fallback and other.is_fallback:
      clash = 'the fallback (catalog names)'
    elif set(kind.names) & set(other.names):
      clash = f'the strings {sorted(set(kind.names) & set(other.names))}'
    elif _claims(other, kind) or _claims(kind, other):
      clash = 'a prefix'
    if clash:
      raise ValueError(
          f'Dataset kind {kind.name!r} claims {clash} of kind {other.name!r};'
          ' give it its own prefix.')
  _KINDS[kind.name] = kind
  return kind


def _claims(a: Kind, b: Kind) -> bool:
  """Whether a's prefix takes strings b claims (its names or prefix)."""
  if a.prefix is None:
    return False
  return (any(n.startswith(a.prefix) for n in b.names)
          or (b.prefix is not None and (b.prefix.startswith(a.prefix)
                                        or a.prefix.startswith(b.prefix))))


def kinds() -> tuple[Kind, ...]:
  """The registered kinds, in registration order."""
  return tuple(_KINDS.values())


def find(name: str) -> tuple[Kind, str]:
  """The kind of a (stripped) dataset string and the string's argument.

  Raises:
    DataError: no kind takes it (no fallback is registered).
  """
  for kind in _KINDS.values():
    if name in kind.names:
      return kind, ''
  for kind in _KINDS.values():
    if kind.prefix is not None and name.startswith(kind.prefix):
      return kind, name[len(kind.prefix):]
  for kind in _KINDS.values():
    if kind.is_fallback:
      return kind, name
  raise DataError(
      f'No dataset kind reads {name!r}; known: {[k.name for k in kinds()]}.')


def examples() -> tuple[str, ...]:
  """How the kinds' strings are written (catalog names aside), for messages."""
  return tuple(e for k in _KINDS.values() for e in k.examples)


def default_data_dir() -> str:
  """The TFDS default data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return os.fspath(tfds.core.constants.DATA_DIR)


def open_dataset(
    name: str, *, data_dir: str | None = None, download: bool = True
) -> sources.Dataset:
  """Opens a dataset by its string, through the kind that reads it.

  Datasets that need preparing are prepared into data_dir on first use.

  Args:
    name: the dataset string (see get_default_data_config).
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
        f' svhn_cropped, {", ".join(examples())}.'
    )
  name = name.strip()
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  kind, argument = find(name)
  return kind.open(name, argument, data_dir=data_dir, download=download)


def data_dirs(name: str) -> list[tuple[str, str]]:
  """The local directories a dataset string reads, without opening it.

  Returns:
    (dataset string, directory) each, e.g. [('folder:/x', '/x')]; a joined
    dataset lists its parts'; catalog datasets none.

  Raises:
    DataError: a string its kind cannot read (e.g. a bad join).
  """
  name = name.strip()
  kind, argument = find(name)
  return [] if kind.data_dirs is None else kind.data_dirs(name, argument)
