"""The paper-scale configs (imagenet_pets, finegrained) on TFDS mock data.

tfds.testing.mock_data serves random examples with each catalog dataset's
real features (37 pet breeds, 1000 ImageNet classes, ...), read through the
same array_record data-source path as prepared data: nothing downloads.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
import tensorflow_datasets as tfds

from experiments.configs import finegrained
from experiments.configs import imagenet_pets
from experiments.configs import paper
from l2tl_jax import build
from l2tl_jax import data
from l2tl_jax import methods
from l2tl_jax import models
from l2tl_jax import train
from l2tl_jax import weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "tv_bottleneck.safetensors")
MOCK_MAIN = os.path.join(REPO, "tests", "mock_tfds_main.py")
SMALL = {"stage_sizes": (2, 1, 1, 1), "block": "bottleneck", "width": 4}


def test_bit_steps_by_hand():
  # 500 steps at batch 512 under 20k images: 256000 examples.
  assert paper.bit_steps(2940, 64) == 4000
  assert paper.bit_steps(19_999, 512) == 500
  assert paper.bit_steps(20_000, 512) == 10_000
  assert paper.bit_steps(70_700, 64) == 80_000
  assert paper.bit_steps(500_000, 256) == 40_000
  with pytest.raises(ValueError, match="must be >= 1"):
    paper.bit_steps(0, 64)


def test_configs_resolve_and_validate():
  pets = train.resolve_config(imagenet_pets.get_config())
  assert (pets.data.source, pets.data.target) == ("imagenet2012",
                                                  "oxford_iiit_pet")
  assert pets.train.steps == 4000
  assert pets.train.lr_boundaries == (2400, 3200, 3600)
  assert pets.model.encoder == "resnet50" and pets.model.dtype == "bfloat16"
  assert imagenet_pets.get_config("10").data.target_train_per_class == 10
  for name, target in finegrained.TARGETS.items():
    config = train.resolve_config(finegrained.get_config(name))
    assert config.data.target == name
    assert config.data.target_test_split != "train"  # Never tuned on test.
    assert config.train.steps == paper.bit_steps(target.num_train, 64)
  with pytest.raises(ValueError, match="one of caltech_birds2011"):
    finegrained.get_config("cifar10")


def test_pets_carves_validation_from_train_and_trains_on_the_rest(tmp_path):
  config = imagenet_pets.get_config()
  config.data.data_dir = str(tmp_path)
  config.data.image_size = 16
  config.data.in_memory_max_bytes = 0  # Read per record, as at full size.
  with tfds.testing.mock_data(num_examples=1500):
    task = data.build_task(config.data)
  with tfds.testing.mock_data(num_examples=3000):  # >= 30 per breed.
    k10 = imagenet_pets.get_config("10")
    k10.data.data_dir = str(tmp_path)
    k10.data.image_size = 16
    low = data.build_task(k10.data)
  assert task.num_tgt_classes == 37 and task.num_src_classes == 1000
  assert task.tgt_val.class_counts() == [20] * 37
  assert task.tgt_val.dataset_split == task.tgt_train.dataset_split == "train"
  assert task.tgt_test.dataset_split == "test"
  # Train holds every train-split example the validation draw left.
  assert not set(task.tgt_val.indices) & set(task.tgt_train.indices)
  assert len(task.tgt_train) + len(task.tgt_val) == 1500  # Mock: all kept.
  assert not task.src_train.in_memory  # Streamed, never loaded whole.
  assert low.tgt_train.class_counts() == [10] * 37
  assert low.tgt_val.class_counts() == [20] * 37


def _small(config, tmp_path, **overrides):
  """`config` shrunk to run on the CPU: a narrow ResNet, 32 px, 1 step."""
  config.data.data_dir = str(tmp_path / "tfds")
  config.pretrain_cache_dir = str(tmp_path / "pretrain")
  config.update_from_flattened_dict({
      "model.encoder": "resnet_v1", "model.encoder_kwargs": SMALL,
      "model.init_from": FIXTURE, "model.dont_load": ("src_head/.*",),
      "model.dtype": "float32", "model.preprocessing_from_weights": False,
      "data.image_size": 32, "data.normalization": "imagenet",
      "data.train_crop": "random_resized_crop",
      "data.eval_resize": "resize_center_crop", "data.in_memory_max_bytes": 0,
      "train.steps": 1, "train.batch_size": 2, "l2tl.val_batch_size": 2,
      "eval.batch_size": 8, "eval.every_steps": 0, "log_every_steps": 1,
      "checkpoint_every_steps": 1, "write_plots": False,
      "progress_bar": False, **overrides})
  return config


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet_pets", *finegrained.TARGETS])
def test_one_real_step_of_each_paper_config(name, tmp_path):
  if name == "imagenet_pets":
    config = imagenet_pets.get_config("2")
  else:
    config = finegrained.get_config(name)
  # Five target classes keep the mock splits filled (random labels).
  config = _small(config, tmp_path, **{"data.target_classes": (0, 1, 2, 3, 4)})
  if config.data.target_val_split == "train":
    config.data.target_val_per_class = 2
  with tfds.testing.mock_data(num_examples=2000):  # ~10+ per class.
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["steps"] == 1
  assert 0.0 <= results["test_accuracy"] <= 1.0
  assert results["task"]["target"] == name.replace("imagenet_pets",
                                                   "oxford_iiit_pet")
  assert len(results["src_class_names"]) == 1000


def _random_resnet50(path):
  """A torchvision-layout ResNet-50 state dict of random weights."""
  model = models.make_model("resnet50", num_src_classes=1000,
                            num_tgt_classes=2)
  params, state = models.init_variables(model, jax.random.key(0),
                                        (32, 32, 3))
  flat = {}
  for collection, tree in (("params", params), ("batch_stats",
                                                state["batch_stats"])):
    for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      where = "/".join(k.key for k in keys)
      if where.startswith("tgt_head"):
        continue
      value = np.asarray(leaf, np.float32)
      key = weights._tv_to_key(collection, where)  # pylint: disable=protected-access
      if value.ndim == 4:  # HWIO -> OIHW.
        value = np.transpose(value, (3, 2, 0, 1))
      elif key == "fc.weight":
        value = value.T
      flat[key] = np.ascontiguousarray(value)
  safetensors.numpy.save_file(flat, path)


@pytest.mark.slow
def test_imagenet_pets_resnet50_at_224_streams_trains_and_resumes_exactly(
    tmp_path):
  """The whole path: streamed sources, 224 px crops, ResNet-50 from weights,
  the L2TL step, checkpoints, and a run resumed by experiments.main equal to
  the straight one."""
  init = str(tmp_path / "resnet50.safetensors")
  _random_resnet50(init)
  config = imagenet_pets.get_config("2")
  overrides = {
      "data.data_dir": str(tmp_path / "tfds"),
      "model.init_from": init, "model.dtype": "float32",
      # Streamed as the real ImageNet (over the 2 GiB in-memory limit) is.
      "data.in_memory_max_bytes": 0,
      "data.target_classes": "(0,1)", "data.target_val_per_class": 2,
      "l2tl.mode": "reference",  # One first-order step: cheaper to compile.
      "train.steps": 2, "train.batch_size": 2, "l2tl.val_batch_size": 2,
      "eval.batch_size": 4, "eval.every_steps": 0, "log_every_steps": 1,
      "checkpoint_every_steps": 1, "write_plots": False,
      "progress_bar": False}
  config.update_from_flattened_dict(
      {**overrides, "data.target_classes": (0, 1)})
  workdir = str(tmp_path / "run")
  with tfds.testing.mock_data(num_examples=300):
    straight = train.train_and_evaluate(config, workdir)
    assert straight["config"]["data"]["image_size"] == 224
    assert straight["task"]["splits"]["src_train"]["in_memory"] is False
    step2 = _train_metrics(workdir, 2)
  # As if stopped after step 1: the last checkpoint and the results gone.
  os.remove(os.path.join(workdir, "results.json"))
  shutil.rmtree(os.path.join(workdir, "checkpoints", "2"))
  # The same command through the launcher resumes it.
  flags = [f"--config.{k}={v}" for k, v in overrides.items()]
  proc = subprocess.run(
      [sys.executable, MOCK_MAIN, "300",
       f"--config={REPO}/experiments/configs/imagenet_pets.py:2",
       f"--workdir={workdir}", *flags], capture_output=True, text=True,
      cwd=REPO, timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
  assert "done: " in proc.stdout
  with open(os.path.join(workdir, "results.json")) as f:
    resumed = json.load(f)
  assert resumed["steps"] == 2
  assert resumed["test_accuracy"] == straight["test_accuracy"]
  # Step 2 was trained again from the step-1 checkpoint, to the last bit.
  assert _train_metrics(workdir, 2) == step2


def _train_metrics(workdir, step):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  (row,) = [r for r in rows if r.get("step") == step and "train/tgt_loss" in r]
  row.pop("steps_per_s", None)  # Timing, not state.
  return row
