"""Target examples that are also training examples: the same records of one
dataset (a source that is, or joins, the target), copies under another name
(another IDX directory, images copied or hard-linked between a folder's split
folders or between two folders), data.allow_overlap and the summary."""

import json
import os
import shutil

import ml_collections
import numpy as np
import pytest

from conftest_data import (base_config, make_folder, make_idx_dir,  # pylint: disable=unused-import
                           tfds_dir, write_idx)
from l2tl_jax import data
from l2tl_jax.data import folder as folder_lib
from l2tl_jax.data import overlap
from l2tl_jax.data.errors import DataError


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory) -> str:
  """Random 28x28 images: 40 train, 20 test, labels i % 4."""
  directory, _ = make_idx_dir(str(tmp_path_factory.mktemp('overlap_idx')))
  return directory


def _idx_config(data_dir, directory, **overrides):
  """Source: every train image; target: 5 train, 2 val, rest test per class."""
  settings = dict(
      source=f'idx:{directory}', source_test_split=None,
      target=f'idx:{directory}', target_classes=None,
      target_train_per_class=5, target_val_split='test',
      target_val_per_class=2, target_test_split='test',
      target_test_per_class=None)
  settings.update(overrides)
  return base_config(data_dir, **settings)


def _pairs(task):
  return {name: pair['examples']
          for name, pair in task.summary()['overlap']['pairs'].items()}


def test_target_from_another_split_than_the_source_is_accepted(tfds_dir,
                                                               digits_dir):
  task = data.build_task(_idx_config(tfds_dir, digits_dir))
  # The target train examples are source examples too: recorded, not refused.
  # One dataset on both sides: told apart by record, images not compared.
  assert _pairs(task) == {
      'tgt_val_in_src_train': 0, 'tgt_test_in_src_train': 0,
      'tgt_val_in_tgt_train': 0, 'tgt_test_in_tgt_train': 0,
      'tgt_test_in_tgt_val': 0, 'tgt_train_in_src_train': 20}
  summary = json.loads(json.dumps(task.summary()))
  assert summary['overlap']['allowed'] is False
  pair = summary['overlap']['pairs']['tgt_train_in_src_train']
  assert pair == {'examples': 20, 'of': 20, 'same_records': 20,
                  'equal_content': 0, 'by': ['records'],
                  'refused': False}


def test_source_holding_the_target_test_examples_is_refused(tfds_dir,
                                                            digits_dir):
  # The whole target from the source's split: val and test are trained on.
  config = _idx_config(tfds_dir, digits_dir, target_val_split='train',
                       target_test_split='train')
  with pytest.raises(DataError, match=(
      r"Source 'idx:.*' and target 'idx:.*': 8 of the 8 tgt_val examples are"
      r' also in src_train \(same records: 8\); 12 of the 12 tgt_test'
      r' examples are also in src_train \(same records: 12\)\..* To fix: draw'
      r' the target from another split than the source .*, or set'
      r' data.allow_overlap=True')):
    data.build_task(config)
  # Disjoint classes of the one split are fine (fashion_tops' construction).
  config.source_classes = (0, 1)
  config.target_classes = (2, 3)
  assert not any(_pairs(data.build_task(config)).values())


def test_uci_digits_to_itself_is_refused(tfds_dir):
  config = base_config(
      tfds_dir, source='uci_digits', source_test_split=None,
      target='uci_digits', target_classes=(1, 2, 3, 4, 5),
      target_label_mod=5, target_train_split='train',
      target_train_per_class=10, target_val_split='train',
      target_val_per_class=50, target_test_split='train',
      target_test_per_class=None, image_size=8)
  with pytest.raises(DataError, match=(
      r'250 of the 250 tgt_val examples are also in src_train.*'
      r'of the .* tgt_test examples are also in src_train')):
    data.build_task(config)


def test_joined_source_holding_the_target_is_refused(tmp_path, tfds_dir,
                                                    digits_dir):
  other = make_folder(str(tmp_path / 'shapes'), {'round': 3, 'square': 3},
                      size=(28, 28), channels=1)
  config = _idx_config(
      tfds_dir, digits_dir, source=f'join:folder:{other}+idx:{digits_dir}[2]',
      target_val_split='train', target_val_per_class=2,
      target_test_split=None)
  # Class 2's train images are in the source: its 2 validation ones too.
  with pytest.raises(DataError, match=(
      r'2 of the 8 tgt_val examples are also in src_train \(same records:'
      r' 2\)')):
    data.build_task(config)
  # The other part's classes of the target's dataset: no shared record.
  config.source = f'join:folder:{other}+idx:{digits_dir}[0]'
  config.target_classes = (1, 2, 3)
  assert not any(_pairs(data.build_task(config)).values())


def test_copies_of_the_data_under_another_name_are_refused(tmp_path, tfds_dir,
                                                           digits_dir):
  copy = str(tmp_path / 'copy')
  shutil.copytree(digits_dir, copy)
  config = _idx_config(tfds_dir, digits_dir, target=f'idx:{copy}',
                       target_val_split='train', target_test_split='train')
  with pytest.raises(DataError, match=(
      r'8 of the 8 tgt_val examples are also in src_train \(equal images: 8\)'
      r'; 12 of the 12 tgt_test examples are also in src_train \(equal'
      r' images: 12\)\..* To fix: remove the copied images, or set')):
    data.build_task(config)


def test_allow_overlap_runs_and_records_the_counts(tfds_dir, digits_dir):
  assert data.get_default_data_config().allow_overlap is False
  config = _idx_config(tfds_dir, digits_dir, target_val_split='train',
                       target_test_split='train', allow_overlap=True)
  task = data.build_task(config)
  summary = json.loads(json.dumps(task.summary()))
  assert summary['overlap']['allowed'] is True
  assert _pairs(task) == {
      'tgt_val_in_src_train': 8, 'tgt_test_in_src_train': 12,
      'tgt_val_in_tgt_train': 0, 'tgt_test_in_tgt_train': 0,
      'tgt_test_in_tgt_val': 0, 'tgt_train_in_src_train': 20}
  config = ml_collections.ConfigDict({**config.to_dict(),
                                      'allow_overlap': 'yes'})
  with pytest.raises(DataError, match="allow_overlap is True or False, got"
                                      " 'yes'"):
    data.build_task(config)


def _split_folder(root):
  """train/ 3 + 3, validation/ and test/ 2 + 2 images, all different."""
  make_folder(root, {'a': 3, 'b': 3}, size=(8, 8), channels=1,
              split_dirs=('train',))
  make_folder(root, {'a': 2, 'b': 2}, size=(8, 8), channels=1,
              split_dirs=('validation', 'test'))
  return root


def _folder_config(data_dir, target, **overrides):
  settings = dict(
      source='uci_digits', source_test_split=None, target=target,
      target_classes=None, target_train_split='train',
      target_train_per_class=None, target_val_split='validation',
      target_val_per_class=None, target_test_split='test',
      target_test_per_class=None, image_size=8, channels=1)
  settings.update(overrides)
  return base_config(data_dir, **settings)


@pytest.mark.parametrize('in_memory_max_bytes', [2**30, 0])
def test_folder_splits_sharing_images_are_refused(tmp_path, tfds_dir,
                                                  in_memory_max_bytes):
  root = _split_folder(str(tmp_path / 'shared'))
  config = _folder_config(tfds_dir, f'folder:{root}',
                          in_memory_max_bytes=in_memory_max_bytes)
  assert not any(_pairs(data.build_task(config)).values())
  # A copy of a train image in test/, a hard link to another in validation/.
  shutil.copy(os.path.join(root, 'train', 'a', 'img_000.png'),
              os.path.join(root, 'test', 'a', 'copy.png'))
  os.link(os.path.join(root, 'train', 'b', 'img_001.png'),
          os.path.join(root, 'validation', 'b', 'linked.png'))
  with pytest.raises(DataError, match=(
      r"Source 'uci_digits' and target 'folder:.*shared': 1 of the 5 tgt_val"
      r' examples are also in tgt_train \(equal images: 1\); 1 of the 5'
      r' tgt_test examples are also in tgt_train \(equal images: 1\)')):
    data.build_task(config)
  config.allow_overlap = True
  pairs = data.build_task(config).summary()['overlap']['pairs']
  assert pairs['tgt_test_in_tgt_train']['equal_content'] == 1
  assert 'files' in pairs['tgt_test_in_tgt_train']['by']


def test_source_folder_with_copies_of_target_images_is_refused(tmp_path,
                                                               tfds_dir):
  target = _split_folder(str(tmp_path / 'target'))
  source = make_folder(str(tmp_path / 'source'), {'x': 3, 'y': 3},
                       size=(8, 8), channels=1)
  config = _folder_config(tfds_dir, f'folder:{target}',
                          source=f'folder:{source}')
  assert not any(_pairs(data.build_task(config)).values())
  for name in ('img_000.png', 'img_001.png'):
    shutil.copy(os.path.join(target, 'test', 'b', name),
                os.path.join(source, 'y', f'copied_{name}'))
  with pytest.raises(DataError, match=(
      r'2 of the 4 tgt_test examples are also in src_train \(equal images:'
      r' 2\)')):
    data.build_task(config)
  # Read per record, the files still tell.
  config.in_memory_max_bytes = 0
  with pytest.raises(DataError, match='2 of the 4 tgt_test examples'):
    data.build_task(config)


def test_equal_images_within_one_catalog_dataset_are_its_own(tfds_dir,
                                                             tmp_path):
  # Two splits of one dataset are told apart by record: an image that the
  # dataset holds in train and in test is not refused (nor counted).
  directory, arrays = make_idx_dir(str(tmp_path / 'dup'), gz=False)
  images, labels = arrays['train']
  test_images, test_labels = arrays['test']
  test_images[:4] = images[:4]
  test_labels[:4] = labels[:4]
  write_idx(os.path.join(directory, 't10k-images-idx3-ubyte'), test_images)
  write_idx(os.path.join(directory, 't10k-labels-idx1-ubyte'), test_labels)
  task = data.build_task(_idx_config(tfds_dir, directory))
  assert _pairs(task) == {
      'tgt_val_in_src_train': 0, 'tgt_test_in_src_train': 0,
      'tgt_val_in_tgt_train': 0, 'tgt_test_in_tgt_train': 0,
      'tgt_test_in_tgt_val': 0, 'tgt_train_in_src_train': 20}


def test_find_by_hand_on_split_stand_ins():
  class Loaded:  # A LoadedSplit's identity.
    def __init__(self, resolved, split, files=None):
      self.dataset = type('D', (), {'resolved': resolved, 'files': files})()
      self.split = split

  class Stand:  # What find reads of a tasks.Split.
    def __init__(self, loaded, records, images):
      self._loaded, self._records = loaded, np.asarray(records)
      self.stored_images = images

    def __len__(self):
      return len(self._records)

    def records(self):
      return [(self._loaded, np.arange(len(self)), self._records)]

  pixels = np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2, 1)
  train = Stand(Loaded('a', 'train'), [0, 1, 2, 3, 4], pixels)
  # Records 3, 4 of the same data; and two records of other data whose images
  # equal train's 0 and 1.
  val = Stand(Loaded('a', 'train'), [3, 4], pixels[[3, 4]])
  test = Stand(Loaded('b', 'train'), [0, 1, 2], pixels[[0, 1, 0]])
  found = overlap.find({'src_train': train, 'tgt_train': None,
                        'tgt_val': val, 'tgt_test': test})
  assert list(found) == ['tgt_val_in_src_train', 'tgt_test_in_src_train',
                         'tgt_test_in_tgt_val']
  assert found['tgt_val_in_src_train']['same_records'] == 2
  assert found['tgt_val_in_src_train']['equal_content'] == 0  # Same data.
  assert found['tgt_test_in_src_train']['examples'] == 3
  assert found['tgt_test_in_src_train']['equal_content'] == 3
  assert found['tgt_test_in_tgt_val']['examples'] == 0


def test_files_are_equal_only_when_every_byte_is(tmp_path):
  rng = np.random.default_rng(0)
  body = rng.integers(0, 256, 10000, dtype=np.uint8).tobytes()
  tail_changed = body[:-1] + bytes([body[-1] ^ 1])  # Same size and head.
  contents = {'a/same.bin': body, 'a/tail.bin': body, 'a/small.bin': b'xy',
              'b/copy.bin': body, 'b/other.bin': tail_changed,
              'b/small.bin': b'xy', 'b/longer.bin': body + b'!'}
  for name, content in contents.items():
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_bytes(content)
  (tmp_path / 'a' / 'tail.bin').write_bytes(tail_changed)

  def files(names):
    split = folder_lib.SplitFiles(
        str(tmp_path), tuple((n, 0) for n in names),
        np.array([len((tmp_path / n).read_bytes()) for n in names]))
    positions = np.arange(len(names)) + 10
    entry = (positions, np.arange(len(names)), split)
    return overlap._Files([entry])  # pylint: disable=protected-access

  a = files(['a/same.bin', 'a/tail.bin', 'a/small.bin'])
  b = files(['b/copy.bin', 'b/small.bin', 'b/longer.bin'])
  digests = overlap._FileDigests()  # pylint: disable=protected-access
  # same.bin is copy.bin; tail.bin differs in its last byte only.
  np.testing.assert_array_equal(digests.equal(a, b), [10, 12])
  c = files(['b/other.bin'])
  np.testing.assert_array_equal(digests.equal(a, c), [11])
