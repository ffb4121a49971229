"""Task construction: class lists by index or name, label remapping,
per-class draws, disjoint splits, seeds, summaries, and the bad-input errors."""

import json

import numpy as np
import pytest

from conftest_data import (base_config, make_folder,  # pylint: disable=unused-import
                           needs_fashion, tfds_dir)
from experiments.configs import corrupted
from experiments.configs import fashion_tops
from l2tl_jax import data
from l2tl_jax.data import tasks
from l2tl_jax.data.errors import DataError


@pytest.fixture(scope='module')
def animals(tmp_path_factory) -> str:
  """Folder dataset: classes ant, bee, cat, dog, eel with 12 images each."""
  root = str(tmp_path_factory.mktemp('animals'))
  make_folder(root, {'ant': 12, 'bee': 12, 'cat': 12, 'dog': 12, 'eel': 12},
              size=(8, 8), channels=1)
  return f'folder:{root}'


def _config(data_dir, dataset, **overrides):
  # Source and target are the one folder, so the source trains on the target's
  # validation and test images: allowed here, where the draws are the subject.
  settings = dict(
      source=dataset, source_test_split=None, target=dataset,
      target_classes=None, target_train_per_class=3,
      target_val_split='train', target_val_per_class=2,
      target_test_split='train', target_test_per_class=None,
      image_size=8, channels=1, allow_overlap=True)
  settings.update(overrides)
  return base_config(data_dir, **settings)


def _values(split):
  """The constant value of each image = 10 * class index + image number."""
  return split.get(np.arange(len(split)))['image'][:, 0, 0, 0].astype(int)


def test_classes_by_name_or_index_keep_the_given_order(tfds_dir, animals):
  by_name = data.build_task(_config(tfds_dir, animals,
                                    target_classes=('dog', 'ant')))
  by_index = data.build_task(_config(tfds_dir, animals, target_classes=(3, 0)))
  assert by_name.tgt_class_names == ['dog', 'ant']
  assert by_name.tgt_train.fingerprint() == by_index.tgt_train.fingerprint()
  values = _values(by_name.tgt_train)
  labels = by_name.tgt_train.labels
  np.testing.assert_array_equal(labels[values // 10 == 3], 0)  # dog -> 0
  np.testing.assert_array_equal(labels[values // 10 == 0], 1)  # ant -> 1
  assert set((values // 10).tolist()) == {0, 3}


def test_label_mod_maps_original_labels_and_joins_names(tfds_dir, animals):
  task = data.build_task(_config(tfds_dir, animals, target_label_mod=2))
  assert task.tgt_class_names == ['ant|cat|eel', 'bee|dog']
  values = _values(task.tgt_train)
  np.testing.assert_array_equal(task.tgt_train.labels, (values // 10) % 2)
  assert task.tgt_train.class_counts() == [3, 3]  # Per task class.


def test_source_label_groups_merge_source_classes(tfds_dir, animals):
  # animals: ant, bee, cat, dog, eel (0..4); 12 images each.
  task = data.build_task(_config(
      tfds_dir, animals, source_label_groups=(("dog", "ant"), (2,))))
  assert task.src_class_names == ['dog|ant', 'cat']
  # Image j of class c has the value 10 c + j (j < 12): ant 0..11, cat
  # 20..31, dog 30..41; bee and eel are left out.
  values = _values(task.src_train)
  assert sorted(values.tolist()) == sorted(
      [*range(0, 12), *range(20, 32), *range(30, 42)])
  labels = task.src_train.labels
  np.testing.assert_array_equal(labels[values < 12], 0)  # ant -> dog|ant
  np.testing.assert_array_equal(labels[(values >= 20) & (values < 30)], 1)
  np.testing.assert_array_equal(labels[values >= 32], 0)  # dog
  assert task.src_train.class_counts() == [24, 12]
  assert data.source_class_names(_config(
      tfds_dir, animals, source_label_groups=(("dog", "ant"), (2,)))) == [
          'dog|ant', 'cat']


def test_corrupted_classes_name_the_merged_classes(tfds_dir, animals):
  config = _config(tfds_dir, animals, source_label_groups=(("dog", "ant"),
                                                           ("cat",)),
                   source_corrupt_classes=("dog|ant",),
                   source_corrupt_fraction=0.5)
  task = data.build_task(config)
  record = task.src_corruption
  assert record['classes'] == ['dog|ant'] and record['labels'] == [0]
  # Half of the 24 merged examples (halves rounded up) move to 'cat'.
  assert record['per_class'] == [{'class': 'dog|ant', 'examples': 24,
                                  'changed': 12}]
  assert record['changed_to'] == [0, 12]
  config.source_corrupt_classes = (1,)  # By index, of the merged classes.
  assert data.build_task(config).src_corruption['classes'] == ['cat']


@pytest.mark.parametrize('groups, source_classes, message', [
    ((('ant', 'bee'), ('bee',)), None, 'in two groups'),
    ((('ant', 'ant'), ('bee',)), None, 'in two groups or twice'),
    ((('ant',), ()), None, 'empty group'),
    ((('ant', 'bee'),), None, 'single class'),
    ((('ant',), ('bee',)), ('ant', 'bee'), 'source_classes=None'),
])
def test_bad_source_label_groups_are_named(tfds_dir, animals, groups,
                                           source_classes, message):
  with pytest.raises(data.DataError, match=message):
    data.build_task(_config(tfds_dir, animals, source_label_groups=groups,
                            source_classes=source_classes))


def test_per_class_draws_are_disjoint_and_cover_the_rest(tfds_dir, animals):
  task = data.build_task(_config(tfds_dir, animals))
  train, val, test = task.tgt_train, task.tgt_val, task.tgt_test
  assert train.class_counts() == [3] * 5
  assert val.class_counts() == [2] * 5
  assert test.class_counts() == [7] * 5  # All remaining of 12.
  sets = [set(s.indices.tolist()) for s in (train, val, test)]
  assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
  assert len(sets[0] | sets[1] | sets[2]) == 60
  # File order: train holds each class's images 0..2, val 3..4.
  np.testing.assert_array_equal(np.sort(_values(train) % 10),
                                np.repeat([0, 1, 2], 5))
  np.testing.assert_array_equal(np.sort(_values(val) % 10),
                                np.repeat([3, 4], 5))


def test_seeded_shuffle_is_deterministic_and_seed_dependent(tfds_dir, animals):
  def fingerprints(seed, shuffle):
    task = data.build_task(_config(tfds_dir, animals, split_seed=seed,
                                   split_shuffle=shuffle))
    return [s.fingerprint() for s in (task.tgt_train, task.tgt_val,
                                      task.tgt_test)]

  assert fingerprints(0, True) == fingerprints(0, True)
  assert fingerprints(0, True) != fingerprints(1, True)
  assert fingerprints(0, True) != fingerprints(0, False)
  assert fingerprints(0, False) == fingerprints(1, False)  # Seed unused.


def test_summary_is_json_and_records_the_draws(tfds_dir, animals):
  task = data.build_task(_config(tfds_dir, animals, split_seed=7))
  summary = json.loads(json.dumps(task.summary()))
  assert summary['split_seed'] == 7
  assert summary['source'] == animals and summary['target'] == animals
  assert summary['resolved'][animals].startswith('folder:')
  assert summary['splits']['tgt_val'] == {
      'dataset': animals, 'dataset_split': 'train', 'size': 10,
      'per_class': [2] * 5, 'fingerprint': task.tgt_val.fingerprint(),
      'in_memory': True,
  }
  assert set(summary['splits']) == {'src_train', 'tgt_train', 'tgt_val',
                                    'tgt_test'}
  assert task.src_test is None


def test_per_record_splits_match_in_memory_ones(tfds_dir, animals):
  in_memory = data.build_task(_config(tfds_dir, animals))
  per_record = data.build_task(_config(tfds_dir, animals,
                                       in_memory_max_bytes=0))
  assert in_memory.tgt_train.in_memory and not per_record.tgt_train.in_memory
  for name in ('tgt_train', 'tgt_test'):
    a = getattr(in_memory, name)
    b = getattr(per_record, name)
    np.testing.assert_array_equal(a.get(np.arange(len(a)))['image'],
                                  b.get(np.arange(len(b)))['image'])
  it_a = data.train_iterator(in_memory.tgt_train, batch_size=4, seed=3)
  it_b = data.train_iterator(per_record.tgt_train, batch_size=4, seed=3)
  for _ in range(6):
    batch_a, batch_b = next(it_a), next(it_b)
    np.testing.assert_array_equal(batch_a['image'], batch_b['image'])
    np.testing.assert_array_equal(batch_a['label'], batch_b['label'])


@pytest.mark.slow  # Builds and reads the 70000 real Fashion-MNIST images.
@needs_fashion
def test_fashion_source_and_target(tfds_dir):
  config = base_config(tfds_dir, target_classes=('Sandal', 'Sneaker',
                                                 'Ankle boot'))
  task = data.build_task(config)
  assert len(task.src_train) == 60000 and len(task.src_test) == 10000
  assert task.src_class_names[0] == 'T-shirt/top'
  assert task.tgt_class_names == ['Sandal', 'Sneaker', 'Ankle boot']
  assert task.tgt_train.class_counts() == [10] * 3
  assert task.tgt_val.class_counts() == [20] * 3
  assert task.tgt_test.class_counts() == [40] * 3
  assert task.image_shape == (32, 32, 1)
  assert not (set(task.tgt_val.indices.tolist())
              & set(task.tgt_test.indices.tolist()))


def test_class_list_errors(tfds_dir, animals):
  with pytest.raises(DataError, match=r"no class named 'cow'.*'ant'"):
    data.build_task(_config(tfds_dir, animals, target_classes=('ant', 'cow')))
  with pytest.raises(DataError, match='out of range.*5 classes'):
    data.build_task(_config(tfds_dir, animals, target_classes=(0, 5)))
  with pytest.raises(DataError, match='source_classes names a class twice'):
    data.build_task(_config(tfds_dir, animals, source_classes=('ant', 0)))
  with pytest.raises(DataError, match='no kept class .* maps to label 1'):
    data.build_task(_config(tfds_dir, animals, target_classes=(0, 2),
                            target_label_mod=2))


def test_too_many_examples_per_class(tfds_dir, animals):
  with pytest.raises(DataError, match=(
      r"target_train_per_class=13, but class 'ant' .* has 12 examples")):
    data.build_task(_config(tfds_dir, animals, target_train_per_class=13))
  with pytest.raises(DataError, match=(
      r'target_val_per_class=10.*3 already taken by \[\'tgt_train\'\], so only'
      r' 9 are left')):
    data.build_task(_config(tfds_dir, animals, target_val_per_class=10))
  with pytest.raises(DataError, match='positive number of examples'):
    data.build_task(_config(tfds_dir, animals, target_train_per_class=0))


def test_missing_split_is_named(tfds_dir, animals):
  with pytest.raises(DataError, match=r"no split 'test'; it has \['train'\]"):
    data.build_task(_config(tfds_dir, animals, target_test_split='test'))


def test_shapes_that_cannot_be_reconciled(tmp_path, tfds_dir):
  mixed = tmp_path / 'mixed'
  make_folder(str(mixed / 'small_only'), {'a': 2}, size=(6, 6), channels=1)
  make_folder(str(mixed / 'big_only'), {'b': 2}, size=(9, 9), channels=1)
  for name in ('small_only', 'big_only'):
    for cls in (mixed / name).iterdir():
      cls.rename(mixed / cls.name)
    (mixed / name).rmdir()
  with pytest.raises(DataError, match='different shapes.*set image_size'):
    data.build_task(_config(tfds_dir, f'folder:{mixed}', image_size=None,
                            target_val_split=None, target_test_split=None,
                            target_train_per_class=1))
  # Resizing reconciles them.
  task = data.build_task(_config(tfds_dir, f'folder:{mixed}', image_size=8,
                                 target_val_split=None, target_test_split=None,
                                 target_train_per_class=1))
  assert task.image_shape == (8, 8, 1)
  # Native 8x8 digits against native 28x28 MNIST: one encoder, two shapes.
  with pytest.raises(DataError, match='different shapes'):
    data.build_task(_config(tfds_dir, 'uci_digits', target='mnist_5k',
                            image_size=None, target_train_per_class=1,
                            target_val_per_class=1, target_test_per_class=1))


def test_label_map_by_hand():
  names = ['zero', 'one', 'two', 'three']
  m = tasks.label_map(names, None, None, dataset='d', field='f')
  np.testing.assert_array_equal(m.new_label, [0, 1, 2, 3])
  m = tasks.label_map(names, ('three', 1), None, dataset='d', field='f')
  np.testing.assert_array_equal(m.new_label, [-1, 1, -1, 0])
  assert m.class_names == ('three', 'one')
  m = tasks.label_map(names, ('1', '2', '3'), 3, dataset='d', field='f')
  np.testing.assert_array_equal(m.new_label, [-1, 1, 2, 0])
  assert m.class_names == ('three', 'one', 'two')


def test_corrupt_labels_by_hand():
  labels = np.array([0] * 10 + [1] * 4 + [2] * 6)
  noisy = tasks.corrupt_labels(labels, classes=[0], num_classes=3,
                               fraction=0.5, rng=np.random.default_rng(0))
  assert noisy.dtype == np.int32 and labels[0] == 0  # A copy.
  changed = noisy != labels
  assert changed[:10].sum() == 5 and not changed[10:].any()
  assert set(noisy[changed].tolist()) <= {1, 2}  # Never its own class.
  # round(0.25 * 6) = round(1.5) = 2 (halves up); round(0.25 * 4) = 1.
  noisy = tasks.corrupt_labels(labels, classes=[2, 1], num_classes=3,
                               fraction=0.25, rng=np.random.default_rng(0))
  assert (noisy != labels)[14:].sum() == 2 and (noisy != labels)[10:14].sum() == 1
  assert (noisy[:10] == 0).all()
  everything = tasks.corrupt_labels(labels, classes=[0, 1, 2], num_classes=3,
                                    fraction=1.0, rng=np.random.default_rng(0))
  assert (everything != labels).all()
  assert (tasks.corrupt_labels(labels, classes=[0], num_classes=3, fraction=0.0,
                               rng=np.random.default_rng(0)) == labels).all()


def test_corrupt_labels_is_seeded_and_uniform_over_other_classes():
  labels = np.repeat(np.arange(4), 3000)
  def run(seed):
    return tasks.corrupt_labels(labels, classes=[1], num_classes=4,
                                fraction=0.8, rng=np.random.default_rng(seed))
  np.testing.assert_array_equal(run(3), run(3))
  assert (run(3) != run(4)).any()
  noisy = run(3)
  new = noisy[noisy != labels]
  assert len(new) == 2400
  counts = np.bincount(new, minlength=4)
  assert counts[1] == 0
  # Uniform over classes 0, 2, 3: 800 each, within 4 binomial std (~23).
  assert np.abs(counts[[0, 2, 3]] - 800).max() < 92


def _corrupt_config(data_dir, animals, **overrides):
  """Source: 8 train + 4 test images of each animal, from the one split."""
  settings = dict(source_train_per_class=8, source_test_split='train',
                  source_test_per_class=None,
                  source_corrupt_classes=('bee', 3),
                  source_corrupt_fraction=0.5, source_corrupt_seed=0)
  settings.update(overrides)
  return _config(data_dir, animals, **settings)


def test_source_corruption_counts_and_summary(tfds_dir, animals):
  clean = data.build_task(_config(tfds_dir, animals, source_train_per_class=8,
                                  source_test_split='train',
                                  source_test_per_class=None))
  task = data.build_task(_corrupt_config(tfds_dir, animals))
  src = task.src_train
  truth = _values(src) // 10  # The class each image really is.
  np.testing.assert_array_equal(src.clean_labels, truth)
  np.testing.assert_array_equal(src.indices, clean.src_train.indices)
  np.testing.assert_array_equal(clean.src_train.labels, truth)
  changed = src.labels != truth
  # round(0.5 * 8) = 4 of bee's and of dog's 8 labels; the rest untouched.
  assert changed[truth == 1].sum() == 4 and changed[truth == 3].sum() == 4
  assert changed.sum() == 8
  assert (src.labels[truth == 1][changed[truth == 1]] != 1).all()
  # Source test examples stay clean.
  assert task.src_test.fingerprint() == clean.src_test.fingerprint()
  assert task.src_test.clean_labels is None
  assert src.fingerprint() != clean.src_train.fingerprint()
  assert task.tgt_train.fingerprint() == clean.tgt_train.fingerprint()
  summary = json.loads(json.dumps(task.summary()))
  record = summary['source_corruption']
  assert record['classes'] == ['bee', 'dog'] and record['labels'] == [1, 3]
  assert record['fraction'] == 0.5 and record['seed'] == 0
  assert record['per_class'] == [
      {'class': 'bee', 'examples': 8, 'changed': 4},
      {'class': 'dog', 'examples': 8, 'changed': 4}]
  assert record['changed'] == 8
  assert record['changed_to'] == np.bincount(src.labels[changed],
                                             minlength=5).tolist()
  assert summary['splits']['src_train']['corrupted_labels'] == 8
  assert summary['splits']['src_train']['per_class'] == src.class_counts()
  assert 'corrupted_labels' not in summary['splits']['src_test']
  assert 'source_corruption' not in clean.summary()
  assert 'corrupted_labels' not in clean.src_train.summary()
  # Batches carry the corrupted labels.
  batch = data.eval_batches(src, batch_size=64).__iter__().__next__()
  np.testing.assert_array_equal(batch['label'][:len(src)], src.labels)


def test_source_corruption_is_deterministic_and_seeded(tfds_dir, animals):
  def labels(**overrides):
    return data.build_task(
        _corrupt_config(tfds_dir, animals, **overrides)).src_train.labels
  np.testing.assert_array_equal(labels(), labels())
  assert (labels() != labels(source_corrupt_seed=1)).any()
  # None corrupts every source class.
  every = data.build_task(_corrupt_config(
      tfds_dir, animals, source_corrupt_classes=None,
      source_corrupt_fraction=1.0))
  assert (every.src_train.labels != every.src_train.clean_labels).all()
  assert every.summary()['source_corruption']['changed'] == 40
  # 'within': the noisy labels stay among the corrupted classes.
  within = data.build_task(_corrupt_config(
      tfds_dir, animals, source_corrupt_to='within',
      source_corrupt_fraction=1.0))
  record = within.summary()['source_corruption']
  assert record['to'] == 'within'
  chosen = np.isin(within.src_train.clean_labels, record['labels'])
  assert set(within.src_train.labels[chosen].tolist()) <= set(
      record['labels'])
  # Classes named but fraction 0: nothing changes, nothing is recorded.
  none = data.build_task(_corrupt_config(tfds_dir, animals,
                                         source_corrupt_fraction=0.0))
  assert none.src_corruption is None and none.src_train.clean_labels is None


def test_source_corruption_errors(tfds_dir, animals):
  with pytest.raises(DataError, match=r'a number in \[0, 1\]; got 1.5'):
    data.build_task(_corrupt_config(tfds_dir, animals,
                                    source_corrupt_fraction=1.5))
  with pytest.raises(DataError, match=(
      r"source_corrupt_classes: class 'bee' .* not a source class of the task"
      r".*\['ant', 'cat'\]")):
    data.build_task(_corrupt_config(tfds_dir, animals,
                                    source_classes=('ant', 'cat')))
  with pytest.raises(DataError, match="source_corrupt_classes: .*no class"
                                      " named 'cow'"):
    data.build_task(_corrupt_config(tfds_dir, animals,
                                    source_corrupt_classes=('cow',)))
  with pytest.raises(DataError, match='source_corrupt_classes names a class'
                                      ' twice'):
    data.build_task(_corrupt_config(tfds_dir, animals,
                                    source_corrupt_classes=('bee', 1)))
  with pytest.raises(DataError, match='the task has no source'):
    data.build_task(_corrupt_config(tfds_dir, animals, source=None))
  with pytest.raises(DataError, match="Unknown source_corrupt_to 'elsewhere'"):
    data.build_task(_corrupt_config(tfds_dir, animals,
                                    source_corrupt_to='elsewhere'))


def test_within_class_noise_on_one_class_is_refused(tfds_dir, animals):
  # Labels drawn among one class are that class's: no label would change.
  with pytest.raises(DataError, match=(
      r"source_corrupt_to='within' .* names one class \('bee'\), so no label"
      r' would change. Name two or more source classes')):
    data.build_task(_corrupt_config(
        tfds_dir, animals, source_corrupt_classes=('bee',),
        source_corrupt_to='within', source_corrupt_fraction=1.0))
  # 'other' on one class changes labels.
  task = data.build_task(_corrupt_config(
      tfds_dir, animals, source_corrupt_classes=('bee',),
      source_corrupt_fraction=1.0))
  assert task.summary()['source_corruption']['changed'] == 8


def test_corrupted_config_names_non_tops_classes():
  config = corrupted.get_config()
  d = config.data
  assert set(d.source_corrupt_classes) == {
      fashion_tops.FASHION_CLASSES[c] for c in fashion_tops.NOT_TOPS}
  assert (d.source_corrupt_fraction, d.source_corrupt_to) == (1.0, 'within')
  assert d.source_test_split is None
  # The target comes from the test split, the source from train.
  assert {d.target_train_split, d.target_val_split, d.target_test_split} == {
      'test'} and d.source_split == 'train'
  assert config.source_class_relevance == (1, 0, 1, 0, 1, 0, 1, 0, 0, 0)


@pytest.mark.slow  # Reads the 70000 real Fashion-MNIST images.
@needs_fashion
def test_corrupted_config_builds(tfds_dir):
  config = corrupted.get_config()
  config.data.data_dir = tfds_dir
  task = data.build_task(config.data)
  assert task.src_class_names == list(fashion_tops.FASHION_CLASSES)
  record = task.summary()['source_corruption']
  assert record['to'] == 'within' and record['fraction'] == 1.0
  noisy = np.isin(task.src_train.clean_labels, fashion_tops.NOT_TOPS)
  # Tops keep their labels; the noisy labels stay among the non-tops.
  np.testing.assert_array_equal(task.src_train.labels[~noisy],
                                task.src_train.clean_labels[~noisy])
  assert set(task.src_train.labels[noisy].tolist()) == set(
      fashion_tops.NOT_TOPS)
  np.testing.assert_array_equal(np.bincount(task.src_train.clean_labels),
                                [500] * 10)
  assert task.src_test is None
  assert (len(task.tgt_train), len(task.tgt_val), len(task.tgt_test)) == (
      80, 800, 3120)


def test_corrupt_labels_within_stay_in_the_classes_and_carry_no_signal():
  labels = np.repeat(np.arange(5), 3000)
  noisy = tasks.corrupt_labels(labels, classes=[1, 3], num_classes=5,
                               fraction=1.0, rng=np.random.default_rng(0),
                               within=True)
  chosen = np.isin(labels, [1, 3])
  np.testing.assert_array_equal(noisy[~chosen], labels[~chosen])
  assert set(noisy[chosen].tolist()) == {1, 3}  # Never another class.
  # Uniform over both, own class included: P(label == clean) = 1/2, and
  # each clean class spreads half and half (3000 each, binomial sd ~27).
  for c in (1, 3):
    kept = np.mean(noisy[labels == c] == c)
    assert abs(kept - 0.5) < 0.05, kept
