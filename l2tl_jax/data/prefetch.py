"""Batches placed on the devices ahead of use, by a background thread.

prefetch_to_device wraps a resumable host iterator (pipeline.TrainIterator,
pipeline.JointIterator): its batches arrive as jax.Arrays placed by
sharding.shard_batch, and get_state()/set_state() still resume exactly.
"""

import queue
import threading
from typing import Any, Mapping

from l2tl_jax.data import sharding
from l2tl_jax.data.errors import DataError


class DevicePrefetchIterator:
  """Places batches of a resumable iterator on devices ahead of use.

  A background thread pulls host batches, places them with shard_batch and
  keeps up to `size` of them ready. get_state() is the state right after the
  last batch handed out, so resuming from it continues with the first batch
  the consumer has not seen (batches still in the buffer are recomputed).
  """

  def __init__(self, iterator: Any, mesh_or_sharding: Any = None, *,
               size: int = 2):
    if size < 1:
      raise DataError(f'Prefetch size must be positive, got {size}.')
    self._inner = iterator
    self._placement = mesh_or_sharding
    self._size = size
    self._state = iterator.get_state()
    self._start()

  def _start(self) -> None:
    self._queue: queue.Queue = queue.Queue(maxsize=self._size)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._produce, daemon=True)
    self._thread.start()

  def _put(self, item) -> None:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.05)
        return
      except queue.Full:
        continue

  def _produce(self) -> None:
    try:
      while not self._stop.is_set():
        batch = next(self._inner)
        state = self._inner.get_state()
        self._put((sharding.shard_batch(batch, self._placement), state, None))
    except BaseException as e:  # Re-raised in the consumer's thread.
      self._put((None, None, e))

  def _shutdown(self) -> None:
    self._stop.set()
    self._thread.join()

  def __iter__(self) -> 'DevicePrefetchIterator':
    return self

  def __next__(self) -> Any:
    batch, state, error = self._queue.get()
    if error is not None:
      self._queue.put((None, None, error))  # Keep failing on later calls.
      raise error
    self._state = state
    return batch

  def get_state(self) -> dict[str, Any]:
    """State of the wrapped iterator after the last batch handed out."""
    return self._state

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores the wrapped iterator and refills the buffer from there."""
    self._shutdown()
    self._inner.set_state(state)
    self._state = self._inner.get_state()
    self._start()

  def close(self) -> None:
    self._shutdown()
    self._inner.close()


def prefetch_to_device(iterator: Any, mesh_or_sharding: Any = None, *,
                       size: int = 2) -> DevicePrefetchIterator:
  """Wraps a Train/JointIterator so batches arrive already on the devices.

  Args:
    iterator: an iterator with get_state()/set_state() (TrainIterator,
      JointIterator).
    mesh_or_sharding: as in shard_batch.
    size: batches placed ahead.

  Returns:
    A DevicePrefetchIterator yielding the iterator's batches as jax.Arrays,
    with the same get_state()/set_state().
  """
  return DevicePrefetchIterator(iterator, mesh_or_sharding, size=size)
