"""Fixtures and small file writers shared by the tests/test_data_*.py files.

Imported by those files (`from conftest_data import ...`); every dataset the
tests build goes to a temporary TFDS data dir, never ~/tensorflow_datasets.
"""

import gzip
import itertools
import os
import struct

import numpy as np
from PIL import Image
import pytest

from l2tl_jax import data

FASHION_DIR = '/usr/share/datasets/fashion-mnist'
needs_fashion = pytest.mark.skipif(
    not os.path.isdir(FASHION_DIR),
    reason=f'{FASHION_DIR} is missing (Debian package dataset-fashion-mnist).',
)


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory) -> str:
  """One TFDS data dir for the whole session, so built datasets are reused."""
  path = tmp_path_factory.getbasetemp() / 'tfds_data'
  path.mkdir(exist_ok=True)
  return str(path)


def write_idx(path: str, array: np.ndarray, *, gz: bool = False) -> None:
  """Writes a uint8 array as an IDX file (gzipped when gz)."""
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(
      f'>{array.ndim}i', *array.shape)
  opener = gzip.open if gz else open
  with opener(path, 'wb') as f:
    f.write(header + array.tobytes())


def make_idx_dir(root: str, *, num_train: int = 40, num_test: int = 20,
                 num_classes: int = 4, shape=(28, 28), gz: bool = True,
                 prefix: str = '', seed: int = 0) -> tuple[str, dict]:
  """Writes MNIST-format train/t10k files with labels i % num_classes.

  Returns:
    (directory, {split: (images uint8 [N, H, W], labels uint8 [N])}).
  """
  rng = np.random.default_rng(seed)
  os.makedirs(root, exist_ok=True)
  ext = '.gz' if gz else ''
  arrays = {}
  for split, n, name in (('train', num_train, 'train'),
                         ('test', num_test, 't10k')):
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = (np.arange(n) % num_classes).astype(np.uint8)
    write_idx(os.path.join(root, f'{prefix}{name}-images-idx3-ubyte{ext}'),
              images, gz=gz)
    write_idx(os.path.join(root, f'{prefix}{name}-labels-idx1-ubyte{ext}'),
              labels, gz=gz)
    arrays[split] = (images, labels)
  return root, arrays


def write_image(path: str, array: np.ndarray, fmt: str | None = None) -> None:
  """Writes uint8 [H, W] / [H, W, C] with PIL (format from the extension)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  array = np.asarray(array, np.uint8)
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  Image.fromarray(array).save(path, format=fmt)


_folder_tags = itertools.count(1)


def make_folder(root: str, classes: dict[str, int], *, size=(12, 10),
                channels: int = 3, split_dirs: tuple[str, ...] = ()) -> str:
  """Writes a folder dataset of PNGs: `classes` maps name -> images per split.

  Image k of the c-th class (sorted by name) has value 10 * c + k, so tests
  can tell images apart by value (read it at pixel [0, 0]). The two last
  pixels of the bottom row hold a tag of the (call, split) instead, so that
  no two folders or splits written here hold equal images: the task refuses
  copies shared by training and evaluation splits (data/overlap.py).
  """
  for split in split_dirs or ('',):
    tag = next(_folder_tags)
    for ci, (name, count) in enumerate(sorted(classes.items())):
      for k in range(count):
        value = 10 * ci + k
        shape = size if channels == 1 else (*size, channels)
        image = np.full(shape, value, np.uint8)
        image[-1, -1], image[-1, -2] = tag % 256, tag // 256 % 256
        path = os.path.join(root, split, name, f'img_{k:03d}.png')
        write_image(path, image)
  return root


def base_config(data_dir: str, **overrides):
  """A small data config (fashion -> five fashion classes), with overrides."""
  config = data.get_default_data_config()
  config.data_dir = data_dir
  config.source = 'idx'
  config.target = 'idx'
  config.target_classes = (0, 1, 2, 3, 4)
  config.target_label_mod = None
  config.target_train_per_class = 10
  config.target_val_split = 'test'
  config.target_val_per_class = 20
  config.target_test_split = 'test'
  config.target_test_per_class = 40
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


@pytest.fixture(scope='module', name='task')
def small_idx_task(tmp_path_factory, tfds_dir):  # pylint: disable=redefined-outer-name
  """Random 28x28 digits: 40 train, 20 test, 4 classes (label = i % 4)."""
  directory, _ = make_idx_dir(str(tmp_path_factory.mktemp('idx_small')))
  config = base_config(
      tfds_dir, source=f'idx:{directory}', target=f'idx:{directory}',
      target_classes=None, target_train_per_class=5,
      target_val_per_class=2, target_test_per_class=None)
  return data.build_task(config)
