"""Checks before a run writes anything: a workdir inside a data folder (or a
data folder inside the workdir), and a known answer
(config.source_class_relevance) that does not fit the source classes."""

import os

import pytest

from conftest_data import (base_config, make_folder, needs_fashion,  # pylint: disable=unused-import
                           tfds_dir)
from experiments.configs import corrupted
from experiments.configs import crossed_noise
from experiments.configs import label_mismatch
from experiments.configs import mixed_domain
from l2tl_jax import data
from l2tl_jax.data import checks
from l2tl_jax.data.errors import DataError


def _folder_config(data_dir, target, source='uci_digits'):
  return base_config(data_dir, source=source, target=target,
                     target_classes=None)


def test_workdir_inside_an_image_folder_is_refused(tmp_path):
  images = tmp_path / 'images'
  config = _folder_config(None, f'folder:{images}')
  for workdir in (images, images / 'run', images / 'cat' / 'run1'):
    with pytest.raises(DataError, match=(
        rf'The workdir {workdir} lies inside {images}, which'
        r" config.data.target reads as data \('folder:.*images'\): the run's"
        r' checkpoints, logs and plots \(PNG images\) would become part of'
        rf' the dataset.*Choose a workdir outside {images}\.')):
      data.check_workdir(str(workdir), config)
  # Beside it, or a folder whose name only starts alike: fine.
  data.check_workdir(str(tmp_path / 'runs' / 'a'), config)
  data.check_workdir(str(tmp_path / 'images_runs'), config)


def test_data_folder_inside_the_workdir_is_refused(tmp_path):
  config = _folder_config(None, 'uci_digits',
                          source=f'folder:{tmp_path / "w" / "data"}')
  with pytest.raises(DataError, match=(
      r'config.data.source reads data from .*/w/data .*inside the workdir'
      r' .*/w: .*Choose a workdir that does not hold the data')):
    data.check_workdir(str(tmp_path / 'w'), config)


def test_workdir_check_sees_joins_idx_dirs_and_symlinks(tmp_path):
  images = tmp_path / 'images'
  images.mkdir()
  link = tmp_path / 'link'
  os.symlink(images, link)
  config = _folder_config(
      None, 'uci_digits',
      source=f'join:mnist_5k[0,1]+folder:{link}[cat]+idx:{tmp_path / "idx"}')
  assert [(field, name) for _, field, name in checks.data_dirs(config)] == [
      ('source', f'folder:{link}'), ('source', f'idx:{tmp_path / "idx"}')]
  # Through the symlink, the workdir is inside the folder.
  with pytest.raises(DataError, match=r'lies inside .*images, which'
                                      r' config.data.source reads'):
    data.check_workdir(str(images / 'run'), config)
  with pytest.raises(DataError, match=r'lies inside .*idx'):
    data.check_workdir(str(tmp_path / 'idx' / 'run'), config)
  # Catalog and built-in datasets live in the TFDS data dir: nothing to check.
  data.check_workdir(str(tmp_path / 'run'), base_config(
      str(tmp_path / 'run' / 'tfds'), source='mnist', target='uci_digits'))


def test_relevance_of_the_wrong_length_names_both_lengths():
  names = ['ant', 'bee', 'cat']
  data.check_class_relevance(None, names)
  data.check_class_relevance((1, 0, 1), names)
  data.check_class_relevance([1.0, 0.0, 0.0], 3)
  with pytest.raises(DataError, match=(
      r'config.source_class_relevance has 2 entries, but the source has 3'
      r' classes \(ant, bee, cat\): give one 0 or 1 per source class')):
    data.check_class_relevance((1, 0), names)
  with pytest.raises(DataError, match=r'has 4 entries, but the source has 3'
                                      r' classes:'):
    data.check_class_relevance((1, 0, 0, 1), 3)
  with pytest.raises(DataError, match=r'a 0 .* or 1 .* got 2 in \(1, 2, 0\)'):
    data.check_class_relevance((1, 2, 0), names)
  with pytest.raises(DataError, match=r"is a tuple .*, got '101'"):
    data.check_class_relevance('101', names)


def test_source_class_names_without_building_the_task(tmp_path, tfds_dir):
  animals = make_folder(str(tmp_path / 'animals'), {'ant': 2, 'bee': 2,
                                                    'cat': 2})
  config = base_config(tfds_dir, source=f'folder:{animals}',
                       source_classes=('cat', 'ant'))
  assert data.source_class_names(config) == ['cat', 'ant']
  config.source = f'join:folder:{animals}[bee]+uci_digits[0,1]'
  config.source_classes = None
  names = data.source_class_names(config)
  assert names == [f'folder:{animals}/bee', 'uci_digits/0', 'uci_digits/1']
  with pytest.raises(DataError, match='has 2 entries, but the source has 3'):
    data.check_class_relevance((1, 0), names)
  config.source = None
  assert not data.source_class_names(config)


@pytest.mark.slow  # Opens Fashion-MNIST (prepared once per session).
@needs_fashion
@pytest.mark.parametrize('module', [corrupted, crossed_noise, label_mismatch,
                                    mixed_domain])
def test_known_answer_configs_fit_their_sources(module, tfds_dir):
  config = module.get_config()
  config.data.data_dir = tfds_dir
  data.check_class_relevance(config.source_class_relevance,
                             data.source_class_names(config.data))
