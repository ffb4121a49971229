"""Examples that two splits of a task share: the same records, or copies.

The model trains on src_train and tgt_train; tgt_val chooses (the L2TL
reward, the parameters kept) and tgt_test measures. A tgt_val or tgt_test
example that is also a training example, or a tgt_test example that is also
a tgt_val one, makes those accuracies meaningless; source and target taken
from one dataset ('uci_digits' -> 'uci_digits', a join holding the target, an
image folder whose train/ and test/ hold copies) do that silently.

Two examples are the same when
  - they are the same record: the same data (`Dataset.resolved`; for a
    joined dataset, that of the part the record comes from), split and record
    index. Draws from one dataset split never share records
    (tasks.draw_splits), so a task that takes target and source from
    different splits or classes of one dataset has none; or
  - they are copies: image files of equal bytes (image folders: copies and
    hard links, across splits and folders; only files of a size the other
    side has are read, whole only where their first 4 KiB agree), or,
    between examples of different data (two datasets, or two parts of a
    join), where records cannot tell, equal images as loaded (splits held in
    memory, compared where both have one image shape; a BLAKE2b digest per
    image). Two splits of one dataset (a catalog's train and test) are told
    apart by record alone: their own duplicates, if any, are the dataset's.
Splits read per record (too large for memory) are compared by record, and by
file where they come from image folders.
"""

import collections
import hashlib
from typing import Any, Mapping, Sequence

import numpy as np

from l2tl_jax.data.errors import DataError

# (split, the earlier split it is compared with, whether sharing is refused).
# Target train examples that are also source examples only repeat training
# data: recorded, not refused.
PAIRS = (
    ('tgt_val', 'src_train', True),
    ('tgt_test', 'src_train', True),
    ('tgt_val', 'tgt_train', True),
    ('tgt_test', 'tgt_train', True),
    ('tgt_test', 'tgt_val', True),
    ('tgt_train', 'src_train', False),
)
_RECORD_BITS = 40  # Record indices below 2**40; the origin above.


class _Files:
  """The examples of one split that are read from image files."""

  def __init__(self, entries: Sequence[tuple[np.ndarray, np.ndarray, Any]]):
    # entries: (positions, records, folder.SplitFiles) per dataset split.
    self.positions = np.concatenate([p for p, _, _ in entries])
    self.records = np.concatenate([r for _, r, _ in entries])
    self.sizes = np.concatenate([f.sizes[r] for _, r, f in entries])
    self._entry = np.concatenate([np.full(len(p), i, np.int64)
                                  for i, (p, _, _) in enumerate(entries)])
    self._files = [f for _, _, f in entries]

  def path(self, k: int) -> str:
    return self._files[self._entry[k]].path(int(self.records[k]))


class _Keys:
  """What identifies each example of one split (positions 0..N-1)."""

  def __init__(self, split: Any, origins: dict[tuple[str, str], int],
               data: dict[str, int]):
    n = len(split)
    self.size = n
    self.records = np.empty(n, np.int64)  # Origin id << 40 | record index.
    self.data = np.empty(n, np.int64)  # Id of the data (dataset or part).
    files = []
    for loaded, positions, records in split.records():
      resolved = loaded.dataset.resolved
      origin = origins.setdefault((resolved, loaded.split), len(origins))
      self.records[positions] = (origin << _RECORD_BITS) | records
      self.data[positions] = data.setdefault(resolved, len(data))
      if loaded.dataset.files is not None:
        files.append((positions, records, loaded.dataset.files(loaded.split)))
    self.files = _Files(files) if files else None
    self.data_ids = frozenset(self.data.tolist())
    self._stored = split.stored_images
    self.image_shape = (None if self._stored is None
                        else tuple(self._stored.shape[1:]))
    self._digests = None

  @property
  def images(self) -> list[bytes]:
    """Per position: a digest of the image as loaded (held in memory)."""
    if self._digests is None:
      flat = self._stored.reshape(self.size, -1)
      self._digests = [
          hashlib.blake2b(np.ascontiguousarray(row), digest_size=16).digest()
          for row in flat]
    return self._digests


class _FileDigests:
  """Digests of files, each read once: of their first bytes, then whole."""

  HEAD = 4096  # Bytes read of every candidate; whole files only if equal.

  def __init__(self):
    self._head: dict[str, bytes | None] = {}
    self._whole: dict[str, bytes | None] = {}

  def _read(self, path: str, limit: int | None) -> bytes | None:
    h = hashlib.blake2b(digest_size=16)
    try:
      with open(path, 'rb') as f:
        if limit is not None:
          h.update(f.read(limit))
        else:
          while chunk := f.read(1 << 20):
            h.update(chunk)
    except OSError:  # Gone since the folder was read: compared by record.
      return None
    return h.digest()

  def head(self, path: str) -> bytes | None:
    if path not in self._head:
      self._head[path] = self._read(path, self.HEAD)
    return self._head[path]

  def whole(self, path: str, size: int) -> bytes | None:
    if size <= self.HEAD:  # The head is the whole file.
      return self.head(path)
    if path not in self._whole:
      self._whole[path] = self._read(path, None)
    return self._whole[path]

  def equal(self, a: _Files, b: _Files) -> np.ndarray:
    """Positions of a's examples whose file equals one of b's files.

    Only files of a size the other side has are read: their first HEAD
    bytes, and all of them where those are equal too.
    """
    none = np.zeros(0, np.int64)
    cand_a = np.flatnonzero(np.isin(a.sizes, b.sizes))
    if not len(cand_a):
      return none
    cand_b = np.flatnonzero(np.isin(b.sizes, a.sizes[cand_a]))
    heads_b = {(int(b.sizes[k]), self.head(b.path(k))) for k in cand_b}
    cand_a = [k for k in cand_a
              if (int(a.sizes[k]), self.head(a.path(k))) in heads_b]
    if not cand_a:
      return none
    heads_a = {(int(a.sizes[k]), self.head(a.path(k))) for k in cand_a}
    whole_b = {self.whole(b.path(k), int(b.sizes[k])) for k in cand_b
               if (int(b.sizes[k]), self.head(b.path(k))) in heads_a}
    whole_b.discard(None)
    return a.positions[[k for k in cand_a
                        if self.whole(a.path(k), int(a.sizes[k])) in whole_b]]


def find(splits: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """Counts the examples each split of `PAIRS` shares with its earlier one.

  Args:
    splits: role -> tasks.Split (TransferTask.splits()); absent roles are
      skipped.

  Returns:
    '<split>_in_<earlier>' -> {'examples': examples of <split> that are also
    in <earlier> (the same record or equal content), 'of': its size,
    'same_records', 'equal_content' (each way alone), 'by': what was
    compared ('records', 'files', 'images'), 'refused': whether sharing
    is refused}, in the order of PAIRS.
  """
  origins: dict[tuple[str, str], int] = {}
  data: dict[str, int] = {}
  keys: dict[str, _Keys] = {}
  files = _FileDigests()

  def keys_of(role: str) -> _Keys:
    if role not in keys:
      keys[role] = _Keys(splits[role], origins, data)
    return keys[role]

  out = {}
  for role, earlier, refused in PAIRS:
    if splits.get(role) is None or splits.get(earlier) is None:
      continue
    a, b = keys_of(role), keys_of(earlier)
    same_record = np.isin(a.records, b.records)
    equal = np.zeros(a.size, bool)
    by = ['records']
    if a.files is not None and b.files is not None:
      by.append('files')
      equal[files.equal(a.files, b.files)] = True
    if (a.image_shape is not None and a.image_shape == b.image_shape
        and len(a.data_ids | b.data_ids) > 1):  # Some data on one side only.
      by.append('images')
      owners = collections.defaultdict(set)  # Digest -> data ids in b.
      for digest, owner in zip(b.images, b.data.tolist()):
        owners[digest].add(owner)
      no_owner = set()
      equal |= np.fromiter(
          (bool(owners.get(d, no_owner) - {o})
           for d, o in zip(a.images, a.data.tolist())), bool, a.size)
    out[f'{role}_in_{earlier}'] = {
        'examples': int(np.count_nonzero(same_record | equal)),
        'of': a.size,
        'same_records': int(np.count_nonzero(same_record)),
        'equal_content': int(np.count_nonzero(equal)),
        'by': by,
        'refused': refused,
    }
  return out


def check(found: Mapping[str, Mapping[str, Any]], *, allow: bool,
          source: str | None, target: str) -> None:
  """Refuses shared examples of the refused PAIRS unless `allow`.

  Args:
    found: find's result.
    allow: config.data.allow_overlap.
    source: config.data.source, for the message.
    target: config.data.target, for the message.

  Raises:
    DataError: naming, per split, how many of its examples are shared.
  """
  if allow:
    return
  shared = [(name, c) for name, c in found.items()
            if c['refused'] and c['examples']]
  if not shared:
    return
  lines, fixes = [], []
  for name, c in shared:
    role, earlier = name.split('_in_')
    how = []
    if c['same_records']:
      how.append(f'same records: {c["same_records"]}')
    if c['equal_content']:
      how.append(f'equal images: {c["equal_content"]}')
    lines.append(f'{c["examples"]} of the {c["of"]} {role} examples are also'
                 f' in {earlier} ({", ".join(how)})')
  if any(name.endswith('_in_src_train') and c['same_records']
         for name, c in shared):
    fixes.append(
        "draw the target from another split than the source (e.g."
        " source_split='train' and the target's splits 'test') or from"
        ' classes the source leaves out (source_classes, or the classes a'
        ' join keeps)')
  if any(c['equal_content'] for _, c in shared):
    fixes.append('remove the copied images')
  fixes.append('set data.allow_overlap=True to run anyway (the counts go to'
               " the task summary's 'overlap')")
  who = (f'Target {target!r}' if source is None else
         f'Source {source!r} and target {target!r}')
  raise DataError(
      f'{who}: ' + '; '.join(lines) + '. Validation or test examples that are'
      ' also trained on (or test examples also used for validation) make'
      ' those accuracies meaningless. To fix: ' + ', or '.join(fixes) + '.'
  )
