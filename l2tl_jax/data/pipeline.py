"""Batches for training and evaluation, as grain datasets over example indices.

Training streams are endless: grain indexes batches, each batch's positions
come from a per-epoch permutation seeded by (seed, split name, epoch), and one
vectorised map gathers, augments and scales the whole batch. Augmentation
draws from a generator seeded by (seed, split name, kind, batch index), so
the crops of every example position are fixed by the seed. The position in
the stream is one integer, so `get_state()`/`set_state()` resume exactly.
In a run of several processes each one reads only its own rows of every
global batch (`process_index`, `process_count`): the permutation is the same
everywhere, and augmentation draws for the whole global batch, so the rows
of all processes together are the single-process batch.
Splits held in memory are gathered in the calling thread (threads only add
GIL contention at these sizes); splits read per record decode in a pool of
grain threads. Placing batches on the devices ahead of use is prefetch.py's.
"""

import functools
import sys
import threading
import zlib
from typing import Any, Iterator, Mapping

import grain
import numpy as np

from l2tl_jax.data import augment as augment_lib
from l2tl_jax.data import preprocess
from l2tl_jax.data.errors import DataError
from l2tl_jax.data.splits import Split

_PER_RECORD_THREADS = 8


def _stream_id(split: Split) -> int:
  return zlib.crc32(split.name.encode())


class _EpochBatches(grain.MapDataset):
  """Element i: int64 [B] positions of batch i of an endless shuffled stream.

  With drop_remainder each epoch yields len // B batches and leaves out the
  last len % B positions of that epoch's permutation; without it the stream
  runs on across epochs, so every example appears once per epoch.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int,
               stream: int, drop_remainder: bool):
    super().__init__()
    self._n = num_examples
    self._b = batch_size
    self._seed = seed
    self._stream = stream
    self._drop = drop_remainder
    self._perms: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return sys.maxsize

  def __str__(self) -> str:
    return (f'_EpochBatches(n={self._n}, batch_size={self._b},'
            f' drop_remainder={self._drop})')

  def _perm(self, epoch: int) -> np.ndarray:
    with self._lock:
      perm = self._perms.get(epoch)
      if perm is None:
        perm = np.random.default_rng(
            [self._seed, self._stream, epoch]).permutation(self._n)
        if len(self._perms) >= 4:
          del self._perms[min(self._perms)]
        self._perms[epoch] = perm
      return perm

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    if self._drop:
      per_epoch = self._n // self._b
      epoch, j = divmod(index, per_epoch)
      return self._perm(epoch)[j * self._b : (j + 1) * self._b]
    flat = index * self._b + np.arange(self._b)  # [B]
    epochs, offsets = np.divmod(flat, self._n)
    if epochs[0] == epochs[-1]:
      return self._perm(int(epochs[0]))[offsets]
    out = np.empty(self._b, np.int64)
    for e in np.unique(epochs):
      sel = epochs == e
      out[sel] = self._perm(int(e))[offsets[sel]]
    return out


# Iterator-state entries recorded only when they differ from these values.
_OPTIONAL_META = {'normalization': 'unit', 'train_crop': 'pad_flip',
                  'crop_size': None}
# Third entry of the augmentation seeds, one per kind of augmentation.
_PAD_FLIP_DRAWS, _RRC_DRAWS = 1, 2


def _fixed_crop(images: np.ndarray, split: Split) -> np.ndarray:
  """The centre crop_size window of stored images larger than batches."""
  if split.crop_size is None:
    return images
  return preprocess.center_crop(images, split.crop_size)


def _process_rows(batch_size: int, process_index: int,
                  process_count: int) -> slice | None:
  """The rows of a global batch that one process reads; None: all of them."""
  if not 0 <= process_index < process_count:
    raise DataError(f'process_index={process_index} is not in [0,'
                    f' process_count={process_count}).')
  if process_count == 1:
    return None
  if batch_size % process_count:
    raise DataError(
        f'A global batch of {batch_size} rows cannot be split evenly over'
        f' {process_count} processes; use a batch size divisible by'
        f' {process_count}.')
  per = batch_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


def _random_resized_crop_rows(images: np.ndarray, rng: np.random.Generator,
                              *, size: int, total: int,
                              rows: slice) -> np.ndarray:
  """Rows `rows` of augment.random_resized_crop_batch over a batch of
  `total` rows whose rows `rows` are `images`: the same draws (windows, then
  flips, for all `total` rows), applied to these rows only."""
  _, h, w, _ = images.shape
  windows = augment_lib.random_resized_crop_params(rng, total, h, w)[rows]
  flip = (rng.random(size=total) < 0.5)[rows]
  return augment_lib.crop_resize_flip(images, windows, flip, size)


def _train_batch(index: int, positions: np.ndarray, *, split: Split,
                 seed: int, augment: bool, rows: slice | None = None
                 ) -> dict[str, np.ndarray]:
  """Batch `index` at `positions`; only rows `rows` of it when not None."""
  total = len(positions)
  batch = split.get(positions if rows is None else positions[rows])
  images = batch['image']
  if augment and split.train_crop == 'random_resized_crop':
    rng = np.random.default_rng([seed, _stream_id(split), _RRC_DRAWS, index])
    if rows is None:
      images = augment_lib.random_resized_crop_batch(
          images, rng, size=split.image_shape[0])
    else:
      images = _random_resized_crop_rows(
          images, rng, size=split.image_shape[0], total=total, rows=rows)
  else:
    images = _fixed_crop(images, split)
    if augment:
      rng = np.random.default_rng(
          [seed, _stream_id(split), _PAD_FLIP_DRAWS, index])
      if rows is None:
        images = augment_lib.augment_batch(images, rng,
                                           crop_padding=split.crop_padding)
      else:
        # The whole batch's draws; the other rows' (cheap) crops of zeros
        # are dropped.
        full = np.zeros((total, *images.shape[1:]), images.dtype)
        full[rows] = images
        images = augment_lib.augment_batch(
            full, rng, crop_padding=split.crop_padding)[rows]
  return {'image': preprocess.normalize(images, split.normalization),
          'label': batch['label']}


def _read_options(split: Split, num_threads: int | None) -> grain.ReadOptions:
  if num_threads is None:
    # Splits stored larger than their batches hold photographs: their crops
    # and resizes (PIL, which releases the GIL) gain from threads.
    light = split.in_memory and split.crop_size is None
    num_threads = 0 if light else _PER_RECORD_THREADS
  return grain.ReadOptions(num_threads=num_threads,
                           prefetch_buffer_size=2 * num_threads)


class TrainIterator:
  """Endless shuffled batches of one split, resumable.

  Yields {'image': float32 [B, H, W, C] scaled per split.normalization
  ([0, 1] by default), 'label': int32 [B]}; with process_count P > 1, this
  process's B / P rows of each batch.
  `get_state()` returns a JSON-able dict; `set_state()` on an iterator built
  with the same split and settings continues with exactly the next batch
  (the state is the global position: any process count resumes it).
  """

  def __init__(self, split: Split, *, batch_size: int, seed: int,
               augment: bool = False, drop_remainder: bool = True,
               num_threads: int | None = None, process_index: int = 0,
               process_count: int = 1):
    if batch_size < 1:
      raise DataError(f'batch_size must be positive, got {batch_size}.')
    rows = _process_rows(batch_size, process_index, process_count)
    n = len(split)
    if n == 0:
      raise DataError(f'Split {split.name!r} is empty; nothing to train on.')
    if drop_remainder and n < batch_size:
      raise DataError(
          f'Split {split.name!r} has {n} examples, fewer than batch_size='
          f'{batch_size}, so drop_remainder=True yields no batch. Lower'
          ' batch_size or pass drop_remainder=False.'
      )
    self._meta = {
        'split': split.name,
        'fingerprint': split.fingerprint(),
        'batch_size': int(batch_size),
        'seed': int(seed),
        'augment': bool(augment),
        'drop_remainder': bool(drop_remainder),
    }
    # Recorded only when not the defaults, so earlier states stay valid.
    if split.normalization != 'unit':
      self._meta['normalization'] = split.normalization
    if split.train_crop != 'pad_flip':
      self._meta['train_crop'] = split.train_crop
    if split.crop_size is not None:
      self._meta['crop_size'] = int(split.crop_size)
    positions = _EpochBatches(n, batch_size, seed, _stream_id(split),
                              drop_remainder)
    ds = positions.map_with_index(functools.partial(
        _train_batch, split=split, seed=seed, augment=augment, rows=rows))
    self._iter = iter(ds.to_iter_dataset(_read_options(split, num_threads)))

  def __iter__(self) -> 'TrainIterator':
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._iter)

  def get_state(self) -> dict[str, Any]:
    """The stream position and the settings it belongs to (JSON-able)."""
    return {'position': dict(self._iter.get_state()), **self._meta}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Moves to a position saved by get_state of an identical iterator."""
    for key in [*self._meta, *(k for k in _OPTIONAL_META
                               if k not in self._meta)]:
      default = _OPTIONAL_META.get(key)
      value = self._meta.get(key, default)
      if state.get(key, default) != value:
        raise DataError(
            f'Iterator state was saved with {key}={state.get(key)!r}, but this'
            f' iterator has {key}={value!r}; rebuild the iterator (and task)'
            ' with the settings of the saved run to resume it.'
        )
    self._iter.set_state(dict(state['position']))

  def close(self) -> None:
    self._iter.close()


def train_iterator(split: Split, *, batch_size: int, seed: int,
                   augment: bool = False, drop_remainder: bool = True,
                   num_threads: int | None = None, process_index: int = 0,
                   process_count: int = 1) -> TrainIterator:
  """Returns an endless, shuffled, resumable batch iterator over a split.

  Args:
    split: the Split.
    batch_size: examples per batch.
    seed: seeds the per-epoch permutations (mixed with the split's name, so
      different splits given one seed are shuffled independently) and the
      augmentation.
    augment: random crop (after `split.crop_padding` zero padding) and
      horizontal flip; for a split with train_crop 'random_resized_crop', an
      Inception-style random resized crop to the split's image_shape and a
      flip (without augment, splits stored larger give centre crops).
    drop_remainder: see _EpochBatches: True keeps every batch within one
      epoch; False runs batches across epoch boundaries.
    num_threads: grain reader threads; None: 0 for in-memory splits, 8 for
      per-record splits and splits stored larger than their batches
      (random_resized_crop).
    process_index: this process, in a run of `process_count` processes.
    process_count: processes sharing each batch: process p reads (and
      decodes) only rows [p * B / P, (p + 1) * B / P) of every global batch
      of batch_size B (which P must divide).

  Returns:
    A TrainIterator yielding {'image': float32 [B / P, H, W, C],
    'label': int32 [B / P]}.
  """
  return TrainIterator(split, batch_size=batch_size, seed=seed,
                       augment=augment, drop_remainder=drop_remainder,
                       num_threads=num_threads, process_index=process_index,
                       process_count=process_count)


class JointIterator:
  """Several iterators advanced together: yields {name: batch}."""

  def __init__(self, iterators: Mapping[str, TrainIterator]):
    if not iterators:
      raise DataError('joint_iterator needs at least one iterator.')
    self._iterators = dict(iterators)

  def __iter__(self) -> 'JointIterator':
    return self

  def __next__(self) -> dict[str, dict[str, np.ndarray]]:
    return {name: next(it) for name, it in self._iterators.items()}

  def get_state(self) -> dict[str, Any]:
    """{name: state of that iterator} (JSON-able)."""
    return {name: it.get_state() for name, it in self._iterators.items()}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores every iterator; the names must match."""
    if set(state) != set(self._iterators):
      raise DataError(
          f'Joint iterator state has streams {sorted(state)}, this iterator'
          f' has {sorted(self._iterators)}; resume with the same streams.'
      )
    for name, it in self._iterators.items():
      it.set_state(state[name])

  def close(self) -> None:
    for it in self._iterators.values():
      it.close()


def joint_iterator(iterators: Mapping[str, TrainIterator]) -> JointIterator:
  """Zips named iterators: next() -> {'src': batch, 'tgt': batch, ...}.

  get_state()/set_state() combine the states of all the iterators.
  """
  return JointIterator(iterators)


def _eval_batch(start: int, *, split: Split, batch_size: int,
                rows: slice | None = None) -> dict[str, np.ndarray]:
  """The batch of batch_size rows at `start`; only rows `rows` of it when
  not None."""
  n = len(split)
  if rows is not None:
    start, batch_size = start + rows.start, rows.stop - rows.start
    if start >= n:  # This process's share of the last batch: all padding.
      first = _eval_batch(0, split=split, batch_size=1)
      return {k: np.zeros((batch_size, *v.shape[1:]), v.dtype)
              for k, v in first.items()}
  stop = min(n, start + batch_size)
  batch = split.get(np.arange(start, stop))
  real = stop - start
  images = preprocess.normalize(_fixed_crop(batch['image'], split),
                                split.normalization)
  labels = batch['label']
  mask = np.ones(batch_size, np.float32)
  if real < batch_size:
    pad = batch_size - real
    images = np.concatenate(
        [images, np.zeros((pad,) + images.shape[1:], np.float32)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    mask[real:] = 0.0
  return {'image': images, 'label': labels, 'mask': mask}


def num_eval_batches(split: Split, *, batch_size: int) -> int:
  """Number of batches eval_batches yields."""
  return -(-len(split) // batch_size)


def eval_batches(split: Split, *, batch_size: int,
                 num_threads: int | None = None, process_index: int = 0,
                 process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One ordered pass over a split, in fixed-size batches.

  Every batch has batch_size rows and a 'mask' (1.0 real, 0.0 padding); only
  the last batch is padded (zeros, label 0), so
  sum(mask * correct) / sum(mask) is the exact accuracy.

  Args:
    split: the Split.
    batch_size: rows per batch.
    num_threads: as in train_iterator.
    process_index: as in train_iterator.
    process_count: as in train_iterator: each process gets its B / P rows of
      every batch (rows past the end are padding), so the processes' masked
      sums add up to the single-process ones.

  Yields:
    {'image': float32 [B, H, W, C] (scaled per split.normalization; centre
    crops of splits stored larger), 'label': int32 [B], 'mask': float32 [B]}
    (B / P rows with process_count P).
  """
  if batch_size < 1:
    raise DataError(f'batch_size must be positive, got {batch_size}.')
  rows = _process_rows(batch_size, process_index, process_count)
  n = len(split)
  starts = grain.MapDataset.source(list(range(0, n, batch_size)))
  ds = starts.map(functools.partial(_eval_batch, split=split,
                                    batch_size=batch_size, rows=rows))
  it = iter(ds.to_iter_dataset(_read_options(split, num_threads)))
  try:
    yield from it
  finally:
    it.close()
