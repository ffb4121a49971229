"""Joined datasets ('join:A[...]+B'): the syntax and its errors, labels and
names by hand, one image shape for every part, splits every part has,
caching, per-record reads, task summaries, and the mixed_domain config."""

import json
import os
import re

import numpy as np
import pytest

from conftest_data import (base_config, make_idx_dir,  # pylint: disable=unused-import
                           needs_fashion, tfds_dir, write_image)
from experiments.configs import fashion_tops
from experiments.configs import mixed_domain
from l2tl_jax import data
from l2tl_jax.data.kinds import joined
from l2tl_jax.data import sources
from l2tl_jax.data.errors import DataError

GRAY8 = data.ImageSpec(8, 1)


def _folder(root, classes, *, base, size=(8, 8), channels=1,
            split_dirs=('',)):
  """Class folders of constant images: image k of class c (sorted) has value
  base + 10 * c + k, so tests can tell parts, classes and images apart."""
  for split in split_dirs:
    for c, (name, count) in enumerate(sorted(classes.items())):
      for k in range(count):
        shape = size if channels == 1 else (*size, channels)
        write_image(os.path.join(root, split, name, f'img_{k:03d}.png'),
                    np.full(shape, base + 10 * c + k, np.uint8))
  return f'folder:{root}'


@pytest.fixture(scope='module')
def clothes(tmp_path_factory):
  """hat (4 images), shoe (5), sock (3): 8x8 gray, values 0.., 10.., 20.."""
  root = str(tmp_path_factory.mktemp('clothes'))
  return _folder(root, {'hat': 4, 'shoe': 5, 'sock': 3}, base=0)


@pytest.fixture(scope='module')
def tools(tmp_path_factory):
  """axe (2 images), saw (3): 12x10 RGB, values 100.., 110.."""
  root = str(tmp_path_factory.mktemp('tools'))
  return _folder(root, {'axe': 2, 'saw': 3}, base=100, size=(12, 10),
                 channels=3)


def _values(images):
  return images[:, 0, 0, 0].astype(int)


def test_parse_by_hand():
  parts = joined.parse('join:fashion_mnist[1, Ankle boot] + mnist_5k'
                       '+folder:/data/x[0]')
  assert parts == (
      joined.PartSpec('fashion_mnist', ('1', 'Ankle boot')),
      joined.PartSpec('mnist_5k', None),
      joined.PartSpec('folder:/data/x', ('0',)),
  )
  assert joined.parse('join:mnist_5k') == (joined.PartSpec('mnist_5k', None),)


@pytest.mark.parametrize('name, problem', [
    ('join:', 'no datasets after join:'),
    ('join:a+', "an empty part"),
    ('join:a++b', 'an empty part'),
    ('join:a[1,2', "a '\\[' that is never closed"),
    ('join:a]1', "a '\\]' without its '\\['"),
    ('join:a[[1]]', "a '\\[' inside brackets"),
    ('join:a[]', 'empty brackets'),
    ('join:a[1,]', 'an empty class'),
    ('join:a[1]b', "text after the closing '\\]'"),
    ('join:[1]', 'brackets without a dataset'),
    ('join:a[1]+a[2]', "part 'a' appears twice"),
    ('join:join:a+b', "part 'join:a' is itself a join"),
])
def test_bad_syntax_names_the_string_and_the_fix(tfds_dir, name, problem):
  with pytest.raises(DataError, match=(
      f'Cannot read dataset string {re.escape(repr(name))}: {problem}'
      '.*Write joined datasets'
      r" as 'join:DATASET\[CLASSES\]")):
    data.open_dataset(name, data_dir=tfds_dir)


def test_bad_classes_and_parts(tfds_dir, clothes, tools):
  with pytest.raises(DataError, match=(
      rf"Dataset string 'join:{clothes}\[hat,cap\]\+{tools}':"
      r".* has no class named 'cap'. Its classes are \['hat', 'shoe', 'sock'")):
    data.open_dataset(f'join:{clothes}[hat,cap]+{tools}', data_dir=tfds_dir)
  with pytest.raises(DataError, match='class index 3 is out of range'):
    data.open_dataset(f'join:{clothes}[3]+{tools}', data_dir=tfds_dir)
  with pytest.raises(DataError, match=r'keeps a class .* twice.*once'):
    data.open_dataset(f'join:{clothes}[hat,0]+{tools}', data_dir=tfds_dir)
  with pytest.raises(DataError, match=(
      r"Part 'mnits' of 'join:mnits\+.*': Unknown dataset 'mnits'")):
    data.open_dataset(f'join:mnits+{tools}', data_dir=tfds_dir)


def test_labels_names_and_records_by_hand(tfds_dir, clothes, tools):
  name = f'join:{clothes}[sock, 0]+{tools}'
  ds = data.open_dataset(name, data_dir=tfds_dir)
  assert ds.class_names == (f'{clothes}/sock', f'{clothes}/hat',
                            f'{tools}/axe', f'{tools}/saw')
  assert ds.splits == ('train',)
  assert ds.native_shape == (None, None, None)  # Folders: any size.
  assert [p.summary()['classes'] for p in ds.parts] == [['sock', 'hat'],
                                                        ['axe', 'saw']]
  assert ds.parts[0].summary()['original_labels'] == [2, 0]
  assert ds.parts[1].summary()['labels'] == [2, 3]
  loaded = sources.load_split(ds, 'train', spec=GRAY8,
                              in_memory_max_bytes=2**30)
  # Part 1's kept records in record order (hat 0..3, sock 0..2; shoe left
  # out), then part 2's (axe 0..1, saw 0..2), relabelled.
  np.testing.assert_array_equal(
      _values(loaded.images), [0, 1, 2, 3, 20, 21, 22, 100, 101, 110, 111, 112])
  np.testing.assert_array_equal(loaded.labels,
                                [1, 1, 1, 1, 0, 0, 0, 2, 2, 3, 3, 3])
  assert loaded.images.shape == (12, 8, 8, 1)  # RGB 12x10 -> gray 8x8.
  np.testing.assert_array_equal(loaded.part_counts(np.arange(12)), [7, 5])


def test_join_without_brackets_keeps_every_class(tfds_dir, clothes, tools):
  ds = data.open_dataset(f'join:{tools}+{clothes}', data_dir=tfds_dir)
  assert [n.rsplit('/', 1)[1] for n in ds.class_names] == [
      'axe', 'saw', 'hat', 'shoe', 'sock']
  loaded = sources.load_split(ds, 'train', spec=GRAY8,
                              in_memory_max_bytes=2**30)
  np.testing.assert_array_equal(
      loaded.labels, [0] * 2 + [1] * 3 + [2] * 4 + [3] * 5 + [4] * 3)


def test_parts_end_up_in_one_shape_or_are_refused(tfds_dir, tools):
  name = f'join:uci_digits[0,1]+{tools}'
  ds = data.open_dataset(name, data_dir=tfds_dir)
  with pytest.raises(DataError, match=(
      r"The parts of .* come in different shapes \('uci_digits' \(8, 8, 1\),"
      r" 'folder:.*' \(12, 10, 3\)\).*set image_size \(and channels\)")):
    sources.load_split(ds, 'train', spec=data.ImageSpec(None, None),
                       in_memory_max_bytes=2**30)
  loaded = sources.load_split(ds, 'train', spec=GRAY8,
                              in_memory_max_bytes=2**30)
  assert loaded.image_shape == (8, 8, 1)
  assert loaded.part_counts(np.arange(len(loaded))) == [
      int(np.isin(loaded.part_splits[0].labels, [0, 1]).sum()), 5]


def test_28x28_gray_parts_are_padded_alike(tmp_path, tfds_dir):
  directory, arrays = make_idx_dir(str(tmp_path / 'idx28'), num_train=12,
                                   num_test=4, num_classes=4)
  ds = data.open_dataset(f'join:mnist_5k[7,1]+idx:{directory}[3]',
                         data_dir=tfds_dir)
  assert ds.native_shape == (28, 28, 1) and ds.splits == ('train',)
  loaded = sources.load_split(ds, 'train', spec=data.ImageSpec(32, 1),
                              in_memory_max_bytes=2**30)
  assert loaded.images.shape[1:] == (32, 32, 1)
  digits = loaded.part_splits[0]
  n_digits = int(np.isin(digits.labels, [7, 1]).sum())
  np.testing.assert_array_equal(loaded.labels[:n_digits],
                                np.where(digits.labels[
                                    np.isin(digits.labels, [7, 1])] == 7, 0, 1))
  # Both parts zero-padded by 2 on every side, pixels untouched.
  images = loaded.images[..., 0]
  assert images[:, :2].max() == 0 and images[:, 30:].max() == 0
  assert images[:, :, :2].max() == 0 and images[:, :, 30:].max() == 0
  raw = arrays['train'][0][arrays['train'][1] == 3]  # [3, 28, 28]
  np.testing.assert_array_equal(images[n_digits:, 2:30, 2:30], raw)
  np.testing.assert_array_equal(loaded.labels[n_digits:], [2, 2, 2])


def test_a_split_exists_where_every_part_has_it(tmp_path, tfds_dir, tools):
  split_root = str(tmp_path / 'split')
  both = _folder(split_root, {'cup': 2, 'mug': 2}, base=50,
                 split_dirs=('train', 'test'))
  ds = data.open_dataset(f'join:{both}+{tools}', data_dir=tfds_dir)
  assert data.open_dataset(both, data_dir=tfds_dir).splits == ('test', 'train')
  assert ds.splits == ('train',)
  with pytest.raises(DataError, match=(
      r"has no split 'test': its part 'folder:.*tools.*' has only \['train'\]"
      r".*where every part has it; choose one of \['train'\]")):
    sources.load_split(ds, 'test', spec=GRAY8, in_memory_max_bytes=2**30)
  config = base_config(tfds_dir, source=f'join:{both}+{tools}',
                       source_test_split='test', target=tools,
                       target_classes=None, target_train_per_class=1,
                       target_val_split=None, target_test_split=None,
                       image_size=8, channels=1)
  with pytest.raises(DataError, match="no split 'test'.*source_test_split"):
    data.build_task(config)
  config.source_test_split = None
  assert len(data.build_task(config).src_train) == 4 + 5


def test_cached_like_other_datasets_and_parts_read_once(tfds_dir, clothes,
                                                        tools):
  data.clear_cache()
  name = f'join:{clothes}[hat,sock]+{tools}'
  ds = data.open_dataset(name, data_dir=tfds_dir)
  first = sources.load_split(ds, 'train', spec=GRAY8, in_memory_max_bytes=2**30)
  again = sources.load_split(data.open_dataset(name, data_dir=tfds_dir),
                             'train', spec=GRAY8, in_memory_max_bytes=2**30)
  assert again.images is first.images  # From the cache.
  part = sources.load_split(ds.parts[0].dataset, 'train', spec=GRAY8,
                            in_memory_max_bytes=2**30)
  assert part.images is first.part_splits[0].images  # The part's own entry.
  other = data.open_dataset(f'join:{clothes}[hat]+{tools}', data_dir=tfds_dir)
  assert ds.cache_key.startswith('join:') and '[0,2]+' in ds.cache_key
  assert other.cache_key != ds.cache_key  # Kept classes are part of the key.
  assert ds.resolved == (f'join:{clothes}[0,2]+{tools}[0,1]')


def test_per_record_reads_match_in_memory(tfds_dir, clothes, tools):
  ds = data.open_dataset(f'join:{clothes}[sock,hat]+{tools}[1]',
                         data_dir=tfds_dir)
  in_memory = sources.load_split(ds, 'train', spec=GRAY8,
                                 in_memory_max_bytes=2**30)
  per_record = sources.load_split(ds, 'train', spec=GRAY8,
                                  in_memory_max_bytes=0)
  assert per_record.images is None
  np.testing.assert_array_equal(per_record.labels, in_memory.labels)
  order = np.array([9, 0, 4, 7, 2])
  np.testing.assert_array_equal(per_record.read_images(order),
                                in_memory.images[order])


def test_data_source_of_a_joined_split(tfds_dir, clothes, tools):
  ds = data.open_dataset(f'join:{clothes}[sock]+{tools}', data_dir=tfds_dir)
  source = ds.source('train')
  assert len(source) == 3 + 5
  assert [source[i]['label'] for i in range(8)] == [0, 0, 0, 1, 1, 2, 2, 2]
  assert source[0]['image'].shape == (8, 8, 1)  # Decoded, not preprocessed.
  assert source[3]['image'].shape == (12, 10, 3)
  assert int(source[-1]['image'][0, 0, 0]) == 112
  with pytest.raises(DataError, match="no split 'test'"):
    ds.source('test')


def test_task_from_a_joined_source_records_parts_and_counts(tfds_dir, clothes,
                                                            tools):
  source = f'join:{clothes}[hat,sock]+{tools}'
  config = base_config(
      tfds_dir, source=source, source_classes=(f'{tools}/saw', 0),
      source_test_split=None, target=clothes, target_classes=None,
      target_train_per_class=1, target_val_split='train',
      target_val_per_class=1, target_test_split=None, image_size=8,
      channels=1, split_shuffle=True)
  # The source keeps every hat, the target's validation hat among them.
  with pytest.raises(DataError, match=(
      r'1 of the 3 tgt_val examples are also in src_train \(same records: 1,'
      r' equal images: 1\)')):
    data.build_task(config)
  config.allow_overlap = True
  task = data.build_task(config)
  assert task.summary()['overlap']['pairs']['tgt_val_in_src_train'][
      'examples'] == 1
  # source_classes refers to the joined labels and names.
  assert task.src_class_names == [f'{tools}/saw', f'{clothes}/hat']
  values = _values(task.src_train.get(np.arange(len(task.src_train)))['image'])
  np.testing.assert_array_equal(np.sort(values), [0, 1, 2, 3, 110, 111, 112])
  np.testing.assert_array_equal(task.src_train.labels, (values < 100) * 1)
  summary = json.loads(json.dumps(task.summary()))
  assert summary['splits']['src_train']['per_part'] == [4, 3]
  assert summary['splits']['src_train']['per_class'] == [3, 4]
  assert 'per_part' not in summary['splits']['tgt_train']
  assert summary['joined'] == {source: [
      {'dataset': clothes, 'resolved': f'folder:{clothes[7:]}',
       'classes': ['hat', 'sock'], 'original_labels': [0, 2],
       'labels': [0, 1]},
      {'dataset': tools, 'resolved': f'folder:{tools[7:]}',
       'classes': ['axe', 'saw'], 'original_labels': [0, 1],
       'labels': [2, 3]}]}
  assert summary['resolved'][source].startswith('join:folder:')
  assert task.data_ids[source].startswith('join:')
  again = data.build_task(config)
  assert again.fingerprint() == task.fingerprint()
  # Batches go through the ordinary pipeline.
  batch = next(data.train_iterator(task.src_train, batch_size=4, seed=0))
  assert batch['image'].shape == (4, 8, 8, 1)


def test_tasks_without_joins_have_no_join_records(tfds_dir, clothes):
  config = base_config(tfds_dir, source=clothes, source_test_split=None,
                       target=clothes, target_classes=None,
                       target_train_per_class=1, target_val_split=None,
                       target_test_split=None, image_size=8, channels=1)
  task = data.build_task(config)
  assert 'joined' not in task.summary() and task.joins == {}
  assert 'per_part' not in task.src_train.summary()


def test_mixed_domain_config_names_the_join():
  config = mixed_domain.get_config()
  d = config.data
  parts = joined.parse(d.source)
  assert parts == (joined.PartSpec('fashion_mnist', ('0', '2', '4', '6')),
                   joined.PartSpec('mnist_5k', None))
  assert [fashion_tops.FASHION_CLASSES[int(c)] for c in parts[0].classes] == [
      'T-shirt/top', 'Pullover', 'Coat', 'Shirt']
  assert d.source_test_split is None and d.source_train_per_class == 500
  assert d.target_classes == fashion_tops.TOPS
  # The target comes from the test split, the source from train.
  assert {d.target_train_split, d.target_val_split, d.target_test_split} == {
      'test'} and d.source_split == 'train'
  assert config.source_class_relevance == (1,) * 4 + (0,) * 10


@pytest.mark.slow  # Reads the 70000 real Fashion-MNIST images.
@needs_fashion
def test_mixed_domain_config_builds(tfds_dir):
  config = mixed_domain.get_config()
  config.data.data_dir = tfds_dir
  task = data.build_task(config.data)
  assert task.num_src_classes == 14
  assert task.src_class_names[:2] == ['fashion_mnist/T-shirt/top',
                                      'fashion_mnist/Pullover']
  assert task.src_class_names[4:] == [f'mnist_5k/{d}' for d in range(10)]
  assert len(task.src_train) == 2000 + 5000 and task.src_test is None
  summary = task.summary()
  assert summary['splits']['src_train']['per_part'] == [2000, 5000]
  assert summary['splits']['src_train']['per_class'] == [500] * 14
  assert task.tgt_class_names == ['T-shirt/top', 'Pullover', 'Coat', 'Shirt']
  assert (len(task.tgt_train), len(task.tgt_val), len(task.tgt_test)) == (
      80, 800, 3120)
  assert task.tgt_train.dataset_split == 'test'
  assert task.image_shape == (32, 32, 1)
  # Clothes and digits, both 28x28 gray, are padded alike to 32x32.
  images = task.src_train.get(np.array([0, 6999]))['image']
  assert images.shape == (2, 32, 32, 1)
  assert images[:, :2].max() == 0 and images[:, 30:].max() == 0
