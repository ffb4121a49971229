"""Checks of a run's settings against its data, before anything is written.

    data.check_workdir(workdir, config.data)  # The run's files, the data apart.
    data.check_class_relevance(config.source_class_relevance,
                               data.source_class_names(config.data))

Both raise DataError naming what is wrong and the fix.
"""

import os
from typing import Any, Sequence

import ml_collections

from l2tl_jax.data import registry
from l2tl_jax.data.errors import DataError

_FIELDS = ('source', 'target')


def _is_within(path: str, folder: str) -> bool:
  """Whether `path` is `folder` or lies below it (both real paths)."""
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _real(path: str) -> str:
  return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def data_dirs(data_config: ml_collections.ConfigDict
              ) -> list[tuple[str, str, str]]:
  """The local directories the configured datasets are read from.

  Image folders ('folder:DIR') and IDX directories ('idx:DIR', 'idx'), also
  as parts of joined datasets: whatever each kind reports
  (registry.data_dirs); catalog datasets live in the TFDS data dir, which
  only this project writes.

  Args:
    data_config: the `config.data` ConfigDict, or its DataSpec.

  Returns:
    (real path, config field ('source' or 'target'), dataset string) each.

  Raises:
    DataError: a joined dataset string that cannot be read.
  """
  out = []
  for field in _FIELDS:
    name = (data_config.get(field) if hasattr(data_config, 'get')
            else getattr(data_config, field))
    if not isinstance(name, str):
      continue
    for part, directory in registry.data_dirs(name):
      out.append((_real(directory), field, part))
  return out


def check_workdir(workdir: str, data_config: ml_collections.ConfigDict
                  ) -> None:
  """Refuses a workdir inside a data directory, or holding one.

  A workdir inside an image folder puts the run's files (plots are PNGs)
  among the dataset's: every later run on the folder reads them as images of
  a class. A data directory inside the workdir goes with it when the workdir
  is removed or started afresh. Paths are compared after resolving symlinks.

  Args:
    workdir: the run's directory (need not exist yet).
    data_config: the `config.data` ConfigDict, or its DataSpec.

  Raises:
    DataError: naming the workdir, the data directory and the config field.
  """
  work = _real(workdir)
  for path, field, name in data_dirs(data_config):
    if _is_within(work, path):
      raise DataError(
          f'The workdir {workdir} lies inside {path}, which'
          f' config.data.{field} reads as data ({name!r}): the run\'s'
          ' checkpoints, logs and plots (PNG images) would become part of the'
          ' dataset, read as images of a class by every later run on it.'
          f' Choose a workdir outside {path}.'
      )
    if _is_within(path, work):
      raise DataError(
          f'config.data.{field} reads data from {path} ({name!r}), inside the'
          f' workdir {workdir}: the run\'s files would mix with the data, and'
          ' removing the workdir (or starting it afresh) would remove the'
          ' data. Choose a workdir that does not hold the data, or move the'
          ' data out of it.'
      )


def check_class_relevance(relevance: Sequence[Any] | None,
                          src_classes: int | Sequence[str]) -> None:
  """Refuses a config.source_class_relevance that does not fit the source.

  Args:
    relevance: config.source_class_relevance, one 0 or 1 per source class in
      label order; None: no known answer, nothing to check.
    src_classes: the number of source classes, or their names in label order
      (source_class_names, TransferTask.src_class_names).

  Raises:
    DataError: not a sequence, a length other than the number of source
      classes (both named), or an entry other than 0 or 1.
  """
  if relevance is None:
    return
  names = None if isinstance(src_classes, int) else list(src_classes)
  num = src_classes if names is None else len(names)
  if isinstance(relevance, (str, bytes)) or not hasattr(relevance, '__len__'):
    raise DataError(
        'config.source_class_relevance is a tuple with a 0 or 1 per source'
        f' class, got {relevance!r}.')
  values = tuple(relevance)
  if len(values) != num:
    shown = ''
    if names is not None:
      shown = f' ({", ".join(names[:20])}{", ..." if num > 20 else ""})'
    raise DataError(
        f'config.source_class_relevance has {len(values)} entries, but the'
        f' source has {num} classes{shown}: give one 0 or 1 per source class,'
        ' in their label order (source_classes, or a join\'s parts, decide'
        ' it).'
    )
  bad = [v for v in values if v not in (0, 1)]
  if bad:
    raise DataError(
        'config.source_class_relevance holds a 0 (irrelevant) or 1'
        f' (relevant) per source class; got {bad[0]!r} in {values}.')
