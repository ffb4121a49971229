"""TFDS catalog names (through tfds.testing.mock_data), the reference SVHN-5
task, offline fallbacks and the errors for unusable names."""

import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest_data import make_idx_dir, tfds_dir  # pylint: disable=unused-import
from l2tl_jax import data
from l2tl_jax.data import sources
from l2tl_jax.data.kinds import catalog
from l2tl_jax.data.errors import DataError


@pytest.fixture(scope='module')
def svhn5_task(tmp_path_factory):
  """The reference MNIST -> SVHN-5 task, with the default config, on mock data.

  20000 mock examples give each digit about 2000 examples per split, enough
  for 600 validation + 1200 test per class.
  """
  config = data.get_default_data_config()
  config.data_dir = str(tmp_path_factory.mktemp('mock_tfds'))
  with tfds.testing.mock_data(num_examples=20000):
    return data.build_task(config)


def test_svhn5_sizes_and_class_counts(svhn5_task):
  task = svhn5_task
  assert len(task.src_train) == 20000
  assert task.num_src_classes == 10 and task.num_tgt_classes == 5
  assert task.image_shape == (32, 32, 1)
  assert task.tgt_train.class_counts() == [60] * 5
  assert task.tgt_val.class_counts() == [600] * 5
  assert task.tgt_test.class_counts() == [1200] * 5
  assert (len(task.tgt_train), len(task.tgt_val), len(task.tgt_test)) == (
      300, 3000, 6000)
  assert task.tgt_train.dataset_split == 'train'
  assert task.tgt_val.dataset_split == task.tgt_test.dataset_split == 'test'


def test_svhn5_labels_are_digit_mod_5(svhn5_task):
  # Digit 5 -> class 0, digits 1..4 -> classes 1..4.
  assert svhn5_task.tgt_class_names == ['5', '1', '2', '3', '4']
  for split in (svhn5_task.tgt_train, svhn5_task.tgt_val, svhn5_task.tgt_test):
    original = split._loaded.labels[split.indices]
    assert set(original.tolist()) == {1, 2, 3, 4, 5}
    np.testing.assert_array_equal(split.labels, original % 5)


def test_svhn5_validation_then_next_examples_for_test_in_file_order(
    svhn5_task):
  val, test = svhn5_task.tgt_val, svhn5_task.tgt_test
  assert not set(val.indices.tolist()) & set(test.indices.tolist())
  labels = val._loaded.labels
  for digit in range(1, 6):
    records = np.flatnonzero(labels == digit)  # File order.
    np.testing.assert_array_equal(
        val.indices[val._loaded.labels[val.indices] == digit], records[:600])
    np.testing.assert_array_equal(
        test.indices[test._loaded.labels[test.indices] == digit],
        records[600:1800])


def test_svhn5_images_are_gray_scaled_and_summary_is_json(svhn5_task):
  batch = next(data.train_iterator(svhn5_task.tgt_train, batch_size=8, seed=0))
  assert batch['image'].shape == (8, 32, 32, 1)
  assert batch['image'].dtype == np.float32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  summary = json.loads(json.dumps(svhn5_task.summary()))
  assert summary['splits']['tgt_val']['per_class'] == [600] * 5
  assert summary['split_seed'] == 0 and summary['split_shuffle'] is False
  assert len(summary['fingerprint']) == 16


def test_mnist_source_is_zero_padded(svhn5_task):
  images = svhn5_task.src_train.get(np.arange(50))['image']
  assert images.shape == (50, 32, 32, 1)
  assert images[:, :2].max() == 0 and images[:, 30:].max() == 0
  assert images[:, 2:30, 2:30].max() > 0


def test_flowers_by_class_name_with_variable_sizes_resized(tmp_path):
  config = data.get_default_data_config()
  config.data_dir = str(tmp_path)
  config.source = 'mnist'
  config.source_test_split = None
  config.target = 'oxford_flowers102'
  config.target_classes = ('pink primrose', 'canterbury bells')
  config.target_label_mod = None
  config.target_train_per_class = 2
  config.target_val_split = 'validation'
  config.target_val_per_class = 1
  config.target_test_split = None
  config.image_size = 24
  config.channels = 3
  with tfds.testing.mock_data(num_examples=300):
    task = data.build_task(config)
  assert task.tgt_class_names == ['pink primrose', 'canterbury bells']
  assert task.image_shape == (24, 24, 3)
  original = task.tgt_train._loaded.labels[task.tgt_train.indices]
  assert set(original.tolist()) == {0, 2}  # Their indices in the catalog.
  np.testing.assert_array_equal(task.tgt_train.labels, original // 2)
  # Mock flowers are random sizes (5..50 px per side), all brought to 24x24;
  # mnist 28 -> 24 is resized, gray -> RGB.
  assert task.tgt_train.get(np.arange(4))['image'].shape == (4, 24, 24, 3)
  src = task.src_train.get(np.arange(3))['image']
  np.testing.assert_array_equal(src[..., 0], src[..., 1])


def test_unknown_dataset_name(tfds_dir):
  with pytest.raises(DataError, match=r"Unknown dataset 'mnits'.*mnist"):
    data.open_dataset('mnits', data_dir=tfds_dir)
  with pytest.raises(DataError, match='non-empty string'):
    data.open_dataset('', data_dir=tfds_dir)


def test_catalog_dataset_not_prepared_and_offline(tmp_path, monkeypatch):
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(DataError, match=r'not prepared.*download=False'):
    data.open_dataset('svhn_cropped', data_dir=data_dir, download=False)
  monkeypatch.setattr(catalog, '_tensorflow_available', lambda: False)
  with pytest.raises(DataError, match=r'needs TensorFlow.*not installed'):
    data.open_dataset('svhn_cropped', data_dir=data_dir)
  monkeypatch.setattr(catalog, '_tensorflow_available', lambda: True)
  monkeypatch.setattr(catalog, '_network_reachable', lambda: False)
  with pytest.raises(DataError, match='no\\s+network'):
    data.open_dataset('cifar10', data_dir=data_dir)
  assert not os.path.exists(data_dir) or not os.listdir(data_dir)


def test_mnist_falls_back_to_local_idx_files(tmp_path, monkeypatch):
  directory, arrays = make_idx_dir(str(tmp_path / 'mnist_idx'),
                                   num_classes=10, num_train=30)
  monkeypatch.setitem(catalog.IDX_FALLBACK_DIRS, 'mnist', (directory,))
  ds = data.open_dataset('mnist', data_dir=str(tmp_path / 'tfds'))
  assert ds.resolved == f'idx:{directory}'
  loaded = sources.load_split(ds, 'train', spec=data.ImageSpec(None, None),
                              in_memory_max_bytes=2**30)
  np.testing.assert_array_equal(loaded.labels, arrays['train'][1])


def _served_idx(tmp_path, monkeypatch, *, corrupt=None):
  """mnist's IDX files served from file:// URLs as TFDS records them."""
  served, arrays = make_idx_dir(str(tmp_path / 'served'), num_classes=10,
                                num_train=30)
  rows = []
  for name in sorted(os.listdir(served)):
    path = os.path.join(served, name)
    with open(path, 'rb') as f:
      body = f.read()
    sha = hashlib.sha256(body).hexdigest()
    if name == corrupt:
      sha = '0' * 64
    rows.append((f'file://{path}', len(body), sha))
  monkeypatch.setattr(catalog, 'idx_urls', lambda base: rows)
  monkeypatch.setitem(catalog.IDX_FALLBACK_DIRS, 'mnist', ())
  monkeypatch.setattr(catalog, '_tensorflow_available', lambda: False)
  return arrays


def test_mnist_without_tensorflow_fetches_its_idx_files(tmp_path, monkeypatch):
  arrays = _served_idx(tmp_path, monkeypatch)
  data_dir = str(tmp_path / 'tfds')
  ds = data.open_dataset('mnist', data_dir=data_dir)
  where = os.path.join(data_dir, 'downloads', 'idx', 'mnist')
  assert ds.resolved == f'idx:{where}'
  assert sorted(os.listdir(where)) == sorted(
      os.listdir(str(tmp_path / 'served')))  # No partial files left.
  loaded = sources.load_split(ds, 'train', spec=data.ImageSpec(None, None),
                              in_memory_max_bytes=1 << 30)
  np.testing.assert_array_equal(loaded.labels, arrays['train'][1])
  # The TFDS records of the real files: four URLs with size and SHA-256.
  real = catalog.idx_urls('fashion_mnist')
  assert len(real) == 4 and all(len(sha) == 64 and size > 0
                                for _, size, sha in real)


def test_a_fetched_file_with_other_bytes_is_refused_and_not_kept(
    tmp_path, monkeypatch):
  _served_idx(tmp_path, monkeypatch, corrupt='train-labels-idx1-ubyte.gz')
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(DataError, match='not the .* bytes .* TFDS records'):
    data.open_dataset('mnist', data_dir=data_dir)
  where = os.path.join(data_dir, 'downloads', 'idx', 'mnist')
  assert 'train-labels-idx1-ubyte.gz' not in os.listdir(where)
  assert not [n for n in os.listdir(where) if n.startswith('.part-')]


def test_streamed_splits_open_their_source_once_and_one_at_a_time():
  """Grain's reader threads ask for a streamed split's data source at once on
  the first batch: each split opens it once, and no two opens overlap (an
  open under tfds.testing.mock_data patches module attributes)."""
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  lock = threading.Lock()
  opens, active, most_active = [], [0], [0]
  records = [{"image": np.full((2, 2, 1), i, np.uint8), "label": i % 2}
             for i in range(4)]

  def as_data_source(split, decoders):
    del decoders
    with lock:
      opens.append(split)
      active[0] += 1
      most_active[0] = max(most_active[0], active[0])
    time.sleep(0.05)  # Long enough for every thread to arrive.
    with lock:
      active[0] -= 1
    return records

  dataset = sources.Dataset(
      name="fake", resolved="fake", class_names=("a", "b"),
      splits=("train", "test"), native_shape=(2, 2, 1), cache_key=None,
      _as_data_source=as_data_source)
  spec = sources.preprocess.ImageSpec(image_size=2, channels=1)
  splits = [sources.LoadedSplit(dataset, name, spec, np.array([0, 1, 0, 1]),
                                (2, 2, 1), None)
            for name in ("train", "test")]
  out = []
  threads = [threading.Thread(
      target=lambda s=s: out.append(s.read_images(np.array([3, 1]))))
             for s in splits for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert sorted(opens) == ["test", "train"]
  assert most_active[0] == 1
  assert len(out) == 16
  for images in out:
    np.testing.assert_array_equal(images[:, 0, 0, 0], [3, 1])
