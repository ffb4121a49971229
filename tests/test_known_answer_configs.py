"""The known-answer benchmarks label_mismatch and crossed_noise: what they
hold, their relevance labels, and the noisy labels as their docstrings say."""

import numpy as np
import pytest

from conftest_data import needs_fashion, tfds_dir  # pylint: disable=unused-import
from experiments import study
from experiments.configs import crossed_noise
from experiments.configs import crossed_noise_small
from experiments.configs import fashion_tops
from experiments.configs import label_mismatch
from experiments.configs import label_mismatch_small
from experiments.configs import mismatch_noise
from experiments.configs import mismatch_noise_small
from experiments.configs import mixed_domain
from l2tl_jax import data
from l2tl_jax.data.kinds import joined


def test_label_mismatch_config():
  config = label_mismatch.get_config()
  d = config.data
  parts = joined.parse(d.source)
  assert parts == (joined.PartSpec('mnist_5k', ('0', '1', '2', '3', '4')),
                   joined.PartSpec('fashion_mnist', None))
  # No target class is a source class.
  assert d.target == 'mnist_5k' and d.target_classes == (5, 6, 7, 8, 9)
  assert not set(d.target_classes) & {int(c) for c in parts[0].classes}
  # 5 digits relevant, 10 clothing classes not; 5 known-answer rows + datl.
  assert config.source_class_relevance == (1,) * 5 + (0,) * 10
  variants = study.study_variants(config)
  assert variants['oracle_up'].overrides['l2tl.fixed_class_weights'] == (
      (3.0,) * 5 + (0.0,) * 10)
  study.check_variants(['finetune', 'joint_uniform', 'oracle', 'oracle_up',
                        'anti_oracle', 'datl'], 5, variants)


def test_crossed_noise_config_is_mixed_domain_with_noisy_tops():
  config = crossed_noise.get_config()
  base = mixed_domain.get_config()
  d = config.data
  assert d.source == base.data.source and d.target == base.data.target
  assert (d.source_corrupt_classes, d.source_corrupt_fraction,
          d.source_corrupt_to, d.source_corrupt_seed) == (
              (0, 1, 2, 3), 0.5, 'other', 0)
  assert config.source_class_relevance == base.source_class_relevance
  # Only the noise differs from mixed_domain.
  for key in ('source_corrupt_classes', 'source_corrupt_fraction',
              'source_corrupt_to'):
    d[key] = base.data[key]
  assert config.to_dict() == base.to_dict()
  up = study.study_variants(crossed_noise.get_config())['oracle_up']
  assert up.overrides['l2tl.fixed_class_weights'] == (3.5,) * 4 + (0.0,) * 10


@pytest.mark.slow  # Reads the 70000 real Fashion-MNIST images.
@needs_fashion
def test_label_mismatch_config_builds(tfds_dir):
  config = label_mismatch.get_config()
  config.data.data_dir = tfds_dir
  task = data.build_task(config.data)
  assert task.src_class_names[:5] == [f'mnist_5k/{c}' for c in range(5)]
  assert task.src_class_names[5:] == [
      f'fashion_mnist/{c}' for c in fashion_tops.FASHION_CLASSES]
  assert task.tgt_class_names == ['5', '6', '7', '8', '9']
  assert np.bincount(task.src_train.labels).tolist() == [500] * 15
  assert task.src_test is None
  assert (len(task.tgt_train), len(task.tgt_val), len(task.tgt_test)) == (
      100, 1000, 1400)


@pytest.mark.slow  # Reads the 70000 real Fashion-MNIST images.
@needs_fashion
def test_crossed_noise_labels(tfds_dir):
  config = crossed_noise.get_config()
  config.data.data_dir = tfds_dir
  task = data.build_task(config.data)
  clean, noisy = task.src_train.clean_labels, task.src_train.labels
  assert np.bincount(clean).tolist() == [500] * 14
  changed = clean != noisy
  # Half of each top's labels changed, no digit's.
  assert np.bincount(clean[changed], minlength=14).tolist() == (
      [250] * 4 + [0] * 10)
  # Each top keeps 250 own images and receives 53-68 of the other tops';
  # each digit class holds its 500 digits and 70-93 tops images.
  moved = np.bincount(noisy[changed], minlength=14)
  assert moved.tolist() == [53, 68, 53, 58,
                            71, 70, 70, 74, 87, 93, 78, 77, 71, 77]
  assert np.all(noisy[changed] != clean[changed])
  record = task.summary()['source_corruption']
  assert record['changed'] == 1000 and record['to'] == 'other'


@pytest.mark.parametrize('small, parent', [
    (label_mismatch_small, label_mismatch),
    (mismatch_noise_small, mismatch_noise),
    (crossed_noise_small, crossed_noise)])
def test_small_benchmarks_differ_from_their_parent_in_the_target_only(
    small, parent):
  config, base = small.get_config(), parent.get_config()
  assert (config.data.target_train_per_class,
          base.data.target_train_per_class) == (10, 20)
  # The rest, the source (so its pre-training cache) included, is the
  # parent's.
  config.data.target_train_per_class = 20
  assert config.to_dict() == base.to_dict()
