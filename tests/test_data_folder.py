"""Image folders that would give meaningless results or run code from data:
one class, a class missing from a split, symlinked class folders, split
folders next to class folders, unreadable names, and files that are not in an
allowed image format."""

import logging
import os

import numpy as np
from PIL import EpsImagePlugin
from PIL import Image
import pytest

from conftest_data import (make_folder, tfds_dir,  # pylint: disable=unused-import
                           write_image)
from l2tl_jax import data
from l2tl_jax.data import decode
from l2tl_jax.data import folder as folder_lib
from l2tl_jax.data.errors import DataError

_EPS = (b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n'
        b'0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n')


def _open(root, data_dir):
  return data.open_dataset(f'folder:{root}', data_dir=data_dir)


def _task_config(data_dir, dataset, **overrides):
  """Source and target the folder itself; tiny gray images."""
  config = data.get_default_data_config()
  settings = dict(
      data_dir=data_dir, source=dataset, source_classes=None,
      source_test_split=None, source_train_per_class=None, target=dataset,
      target_classes=None, target_label_mod=None,
      target_train_split='train', target_train_per_class=None,
      target_val_split='validation', target_val_per_class=None,
      target_test_split='test', target_test_per_class=None,
      image_size=8, channels=1)
  settings.update(overrides)
  for key, value in settings.items():
    setattr(config, key, value)
  return config


def test_single_class_is_refused(tmp_path, tfds_dir):
  root = make_folder(str(tmp_path / 'one'), {'cat': 3}, size=(8, 8))
  with pytest.raises(DataError, match=(
      r"one has a single class, 'cat': a classifier needs at least two")):
    _open(root, tfds_dir)
  split_root = make_folder(str(tmp_path / 'one_split'), {'cat': 2},
                           size=(8, 8), split_dirs=('train', 'test'))
  with pytest.raises(DataError, match=r"single class, 'cat'.*each split"):
    _open(split_root, tfds_dir)
  # Keeping one class of a larger dataset is as meaningless.
  two = make_folder(str(tmp_path / 'two'), {'cat': 4, 'dog': 4}, size=(8, 8))
  with pytest.raises(DataError, match=(
      r"target_classes leaves .* with a single class \['dog'\]")):
    data.build_task(_task_config(
        tfds_dir, f'folder:{two}', target_classes=('dog',),
        target_val_split=None, target_test_split=None))


def test_class_missing_from_a_used_split_is_named(tmp_path, tfds_dir):
  root = tmp_path / 'gap'
  make_folder(str(root), {'a': 2, 'b': 2}, size=(8, 8), split_dirs=('train',))
  make_folder(str(root), {'a': 2, 'b': 2, 'c': 2}, size=(8, 8),
              split_dirs=('validation', 'test'))
  dataset = f'folder:{root}'
  with pytest.raises(DataError, match=(
      r"Class 'c' of 'folder:.*gap' has no examples in split 'train' \(drawn"
      r" for tgt_train\), but has some in tgt_val \(2\)")):
    data.build_task(_task_config(tfds_dir, dataset))
  # The classes every split has are fine.
  task = data.build_task(_task_config(tfds_dir, dataset,
                                      target_classes=('a', 'b')))
  assert task.tgt_train.class_counts() == [2, 2]
  assert task.tgt_test.class_counts() == [2, 2]


def test_class_used_up_by_earlier_draws_is_named(tmp_path, tfds_dir):
  root = make_folder(str(tmp_path / 'short'), {'a': 4, 'b': 4, 'c': 3},
                     size=(8, 8))
  with pytest.raises(DataError, match=(
      r"Class 'c' .* no examples in split 'train' \(drawn for tgt_test\) \(its"
      r" 3 examples there went to \['tgt_train', 'tgt_val'\]\)")):
    data.build_task(_task_config(
        tfds_dir, f'folder:{root}', target_train_per_class=2,
        target_val_split='train', target_val_per_class=1,
        target_test_split='train'))


def test_symlinked_class_folders(tmp_path, tfds_dir):
  root = tmp_path / 'linked'
  make_folder(str(root), {'a': 2, 'b': 2}, size=(8, 8))
  outside = make_folder(str(tmp_path / 'elsewhere'), {'d': 3}, size=(8, 8))
  # Outside the dataset: followed, a class of its own.
  os.symlink(os.path.join(outside, 'd'), root / 'd')
  ds = _open(root, tfds_dir)
  assert ds.class_names == ('a', 'b', 'd')
  assert len(ds.source('train')) == 7
  # Inside the dataset: the same images as another class.
  os.symlink(root / 'a', root / 'a_again')
  with pytest.raises(DataError, match=(
      r'a_again is a symlink to .*linked/a, inside the dataset')):
    _open(root, tfds_dir)
  os.remove(root / 'a_again')
  # A folder around the dataset: a loop.
  os.symlink(tmp_path, root / 'up')
  with pytest.raises(DataError, match=r'up is a symlink to .*\(a loop\)'):
    _open(root, tfds_dir)
  os.remove(root / 'up')
  # Two links to one outside folder: its images twice.
  os.symlink(os.path.join(outside, 'd'), root / 'e')
  with pytest.raises(DataError, match=(
      r'linked/e and .*linked/d are, through a symlink, the same images'
      r' \(both .*elsewhere/d\)')):
    _open(root, tfds_dir)


def test_split_folders_next_to_class_folders_are_refused(tmp_path, tfds_dir):
  root = tmp_path / 'stray'
  make_folder(str(root), {'a': 2, 'b': 2}, size=(8, 8),
              split_dirs=('train', 'validation', 'test'))
  make_folder(str(root), {'extra': 2}, size=(8, 8))
  with pytest.raises(DataError, match=(
      r'stray mixes split folders \(test/, train/, validation/\) with other'
      r' folders: .*stray/extra\.')):
    _open(root, tfds_dir)
  # A flat dataset may still have a class named like a split.
  flat = make_folder(str(tmp_path / 'vehicles'), {'bus': 2, 'train': 2},
                     size=(8, 8))
  assert _open(flat, tfds_dir).class_names == ('bus', 'train')


def test_broken_symlinks_and_non_utf8_names_are_skipped_and_noted(
    tmp_path, tfds_dir, caplog):
  root = tmp_path / 'odd'
  make_folder(str(root), {'a': 2, 'b': 2}, size=(8, 8))
  os.symlink(tmp_path / 'gone.png', root / 'a' / 'broken.png')
  write_image(os.path.join(os.fsencode(root / 'b'), b'caf\xe9.png').decode(
      'utf-8', 'surrogateescape'), np.zeros((8, 8), np.uint8))
  with caplog.at_level(logging.WARNING):
    ds = _open(root, tfds_dir)
  assert len(ds.source('train')) == 4
  assert len(ds.notes) == 2
  assert ds.notes[0].startswith('Skipped 1 broken symlink(s) under ')
  assert ds.notes[0].endswith('odd/a/broken.png); fix or remove them.')
  assert 'Skipped 1 image file(s) under ' in ds.notes[1]
  assert ds.notes[1].endswith(
      r'odd/b/caf\xe9.png); rename them to use them.')
  assert [r.getMessage() for r in caplog.records
          if r.filename == 'folder.py'] == list(ds.notes)
  task = data.build_task(_task_config(
      tfds_dir, f'folder:{root}', target_train_per_class=1,
      target_val_split=None, target_test_split=None))
  assert task.summary()['notes'] == list(ds.notes)
  # Mending the link brings its image in (and rebuilds the cached copy).
  write_image(str(tmp_path / 'gone.png'), np.ones((8, 8), np.uint8))
  mended = _open(root, tfds_dir)
  assert len(mended.source('train')) == 5
  assert mended.cache_key != ds.cache_key
  assert len(mended.notes) == 1


def test_every_format_read_here_is_an_image_and_other_files_are_noted(
    tmp_path, tfds_dir, caplog):
  root = tmp_path / 'by_extension'
  make_folder(str(root), {'a': 1, 'b': 1}, size=(8, 8))
  written = {'x.bmp': ('BMP', 30), 'x.gif': ('GIF', 40),
             'x.tif': ('TIFF', 50), 'x.TIFF': ('TIFF', 60),
             'x.webp': ('WEBP', 70), 'x.jpe': ('JPEG', 128)}
  for name, (fmt, value) in written.items():
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(
        root / 'a' / name, format=fmt,
        **({'lossless': True} if fmt == 'WEBP' else {}))
  (root / 'a' / 'notes.txt').write_text('not an image')
  (root / 'b' / 'labels.csv').write_text('x.bmp,a\n')
  (root / 'b' / 'README').write_text('')
  (root / 'b' / 'more.txt').write_text('')
  with caplog.at_level(logging.WARNING):
    ds = _open(root, tfds_dir)
  source = ds.source('train')
  assert len(source) == 2 + len(written)
  images = [ds.decode(source[i]['image'], str) for i in range(len(source))]
  # Gray files stay gray, as gray PNGs do; the make_folder ones are RGB.
  assert sorted(int(image[0, 0, 0]) for image in images) == [
      0, 10, 30, 40, 50, 60, 70, 128]
  assert {image.shape for image in images} == {(8, 8, 1), (8, 8, 3)}
  (note,) = ds.notes
  assert note.startswith('Skipped 4 file(s) under ')
  assert ('whose extension is not an image format read here ((none): 1,'
          ' .csv: 1, .txt: 2; e.g. ') in note
  assert [r.getMessage() for r in caplog.records
          if r.filename == 'folder.py'] == [note]
  for ext in ('.bmp', '.gif', '.tif', '.tiff', '.webp', '.jpg', '.png'):
    assert ext in folder_lib.IMAGE_EXTENSIONS


def test_only_allowed_formats_are_decoded_and_eps_never_runs(
    tmp_path, tfds_dir, monkeypatch):
  root = tmp_path / 'eps'
  make_folder(str(root), {'a': 2, 'b': 2}, size=(8, 8))
  (root / 'a' / 'x.png').write_bytes(_EPS)
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  marker = tmp_path / 'gs_ran'
  (bin_dir / 'gs').write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 1\n')
  (bin_dir / 'gs').chmod(0o755)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  # Pillow caches where gs is; forget it, so the fake one would be found.
  monkeypatch.setattr(EpsImagePlugin, 'gs_binary', None, raising=False)
  with pytest.raises(DataError, match=(
      r'Image .*eps/a/x\.png is of type EPS, which is not read here \(only'
      r' PNG, JPEG, BMP, GIF, WEBP, TIFF')):
    _open(root, tfds_dir)
  assert not marker.exists()
  assert decode.detect_format(_EPS) == 'EPS'


def test_allowed_formats_decode_whatever_their_extension(tmp_path, tfds_dir):
  root = tmp_path / 'formats'
  make_folder(str(root), {'a': 1, 'b': 1}, size=(8, 8))
  write_image(str(root / 'a' / 'really_bmp.png'),
              np.full((8, 8, 3), 40, np.uint8), fmt='BMP')
  write_image(str(root / 'b' / 'really_gif.jpg'),
              np.full((8, 8), 50, np.uint8), fmt='GIF')
  write_image(str(root / 'b' / 'really_tiff.jpeg'),
              np.full((8, 8), 60, np.uint8), fmt='TIFF')
  ds = _open(root, tfds_dir)
  source = ds.source('train')
  values = sorted(int(ds.decode(source[i]['image'], str)[0, 0, 0])
                  for i in range(len(source)))
  assert values == [0, 10, 40, 50, 60]
