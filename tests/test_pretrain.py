"""The source pre-training cache key and the source class prior.

Tasks come from two small image folders (no download): source classes ant,
bee, cat with 6, 3 and 3 images; target classes x, y, z with 6 images each.
"""

import hashlib
import json

import numpy as np
import pytest

from conftest_data import make_folder, tfds_dir  # pylint: disable=unused-import
from experiments.configs import tiny
from l2tl_jax import data
from l2tl_jax import pretrain
from l2tl_jax import spec as spec_lib


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  src = str(tmp_path_factory.mktemp("src_folder"))
  make_folder(src, {"ant": 6, "bee": 3, "cat": 3}, size=(8, 8), channels=1)
  tgt = str(tmp_path_factory.mktemp("tgt_folder"))
  make_folder(tgt, {"x": 6, "y": 6, "z": 6}, size=(8, 8), channels=1)
  return f"folder:{src}", f"folder:{tgt}"


@pytest.fixture(scope="module")
def make(tfds_dir, folders):
  """Returns make(**data_overrides) -> (tiny config, its task)."""
  src, tgt = folders

  def make_config_and_task(**data_overrides):
    config = tiny.get_config()
    d = config.data
    d.update(dict(
        data_dir=tfds_dir, source=src, source_classes=None,
        source_test_split=None, target=tgt, target_classes=None,
        target_label_mod=None, target_train_per_class=2,
        target_val_split="train", target_val_per_class=2,
        target_test_split="train", target_test_per_class=None,
        image_size=8, channels=1, split_shuffle=False))
    d.update(data_overrides)
    return config, data.build_task(d)

  return make_config_and_task


@pytest.fixture(scope="module")
def base(make):
  return make()


def _key(config, task):
  return pretrain.cache_key(spec_lib.from_config(config), task)


def _key_with(config, task, **overrides):
  config = config.copy_and_resolve_references()
  if "model.encoder" in overrides:  # Another encoder takes other kwargs.
    config.model.encoder_kwargs = {}
  config.update_from_flattened_dict(overrides)
  return _key(config, task)


def test_key_is_the_hash_of_the_settings_caches_were_written_with(base):
  # Entries written before the RunSpec (keyed on the config blocks) are found.
  config, task = base
  blob = {"src_train": task.src_train.summary(),
          "src_class_names": list(task.src_class_names),
          "image_shape": list(task.image_shape),
          "model": {"encoder": config.model.encoder,
                    "encoder_kwargs": config.model.encoder_kwargs.to_dict()},
          "pretrain": config.pretrain.to_dict()}
  expected = hashlib.sha256(json.dumps(
      blob, sort_keys=True, default=str).encode()).hexdigest()[:16]
  assert _key(config, task) == expected


def test_key_is_stable(base, make):
  config, task = base
  key = _key(config, task)
  assert len(key) == 16 and set(key) <= set("0123456789abcdef")
  # Same settings, separately built config and task: same key.
  assert _key(*make()) == key


@pytest.mark.parametrize(
    "overrides",
    [
        {"model.encoder": "mlp"},
        {"model.encoder_kwargs.hidden": 64},
        {"model.encoder_kwargs.features": 8},
        {"pretrain.steps": 31},
        {"pretrain.lr": 0.02},
        {"pretrain.batch_size": 16},
        {"pretrain.seed": 1},
        {"pretrain.lr_boundaries": (10,)},
        {"pretrain.weight_decay": 0.0},
    ],
    ids=lambda o: next(iter(o)),
)
def test_model_and_pretraining_settings_change_the_key(base, overrides):
  config, task = base
  assert _key_with(config, task, **overrides) != _key(
      config, task)


@pytest.mark.parametrize(
    "overrides",
    [
        {"method": "scratch"},
        {"method": "finetune"},
        {"seed": 7},
        {"train.steps": 1000},
        {"train.lr": 0.5},
        {"train.batch_size": 4},
        {"train.lr_boundaries": (5,)},
        {"l2tl.mode": "reference"},
        {"l2tl.num_levels": 10},
        {"l2tl.src_oversample": 4},
        {"eval.batch_size": 7},
        {"eval.every_steps": 3},
        {"log_every_steps": 1},
        {"checkpoint_every_steps": 1},
        {"data.augment": True},  # Target train batches only.
    ],
    ids=lambda o: next(iter(o)),
)
def test_target_stage_settings_keep_the_key(base, overrides):
  config, task = base
  assert _key_with(config, task, **overrides) == _key(
      config, task)


@pytest.mark.parametrize(
    "data_overrides",
    [
        {"target_classes": ("x", "y")},
        {"target_train_per_class": 3},
        {"target_val_per_class": 1},
        {"target_test_split": None},
        {"target_label_mod": 2},
    ],
    ids=lambda o: next(iter(o)),
)
def test_target_data_fields_keep_the_key(base, make, data_overrides):
  config, task = base
  other_config, other_task = make(**data_overrides)
  assert other_task.fingerprint() != task.fingerprint()  # Other target splits.
  assert _key(other_config, other_task) == _key(
      config, task)


@pytest.mark.parametrize(
    "data_overrides",
    [
        {"source_classes": ("ant", "bee")},  # Other classes.
        {"source_classes": ("bee", "ant", "cat")},  # Same classes, new order.
        {"source_train_per_class": 3},  # Other examples.
        {"image_size": 12},  # Other preprocessing.
    ],
    ids=lambda o: f"{next(iter(o))}={next(iter(o.values()))}",
)
def test_source_task_changes_the_key(base, make, data_overrides):
  config, task = base
  other_config, other_task = make(**data_overrides)
  assert _key(other_config, other_task) != _key(
      config, task)


def test_source_class_prior(base, make):
  # ant 6, bee 3, cat 3 of 12.
  _, task = base
  np.testing.assert_allclose(pretrain.source_class_prior(task),
                             [0.5, 0.25, 0.25])
  # Labels follow source_classes: cat -> 0 (3 images), ant -> 1 (6).
  _, task = make(source_classes=("cat", "ant"))
  np.testing.assert_allclose(pretrain.source_class_prior(task), [1 / 3, 2 / 3])
  # Two per class: uniform.
  _, task = make(source_train_per_class=2)
  np.testing.assert_allclose(pretrain.source_class_prior(task), [1 / 3] * 3)
