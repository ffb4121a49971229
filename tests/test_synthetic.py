"""l2tl_jax.synthetic and the joint batch-size rule (`L2TLOptions`)."""

import chex
import numpy as np
import pytest

from experiments import bench_device
from experiments.configs import imagenet_pets
from experiments.configs import paper
from l2tl_jax import steps
from l2tl_jax import synthetic


def test_joint_batch_sizes_by_hand():
  # Reference: 1 step, source 2 x 8 -> 8 kept, validation as given.
  assert steps.L2TLOptions().joint_batch_sizes(8, 32) == {
      "src": 16, "tgt": 8, "val": 32}
  # N = 3 inner steps of B = 4 with M = 5: source 3 * 5 * 4 = 60, target
  # 3 * 4 = 12; the validation batch is one per outer step, not per model
  # step.
  options = steps.L2TLOptions(inner_steps=3, src_oversample=5)
  assert options.joint_batch_sizes(4, 7) == {"src": 60, "tgt": 12, "val": 7}
  with pytest.raises(ValueError, match="must be >= 1"):
    options.joint_batch_sizes(0, 7)
  with pytest.raises(ValueError, match="must be >= 1"):
    options.joint_batch_sizes(4, 0)


def test_the_rule_makes_batches_the_step_accepts():
  options = steps.L2TLOptions(inner_steps=2, src_oversample=3)
  batch = synthetic.joint_batch(
      np.random.default_rng(0), options.joint_batch_sizes(4, 6),
      image_shape=(2, 2, 1), num_src_classes=3, num_tgt_classes=2)
  steps.check_l2tl_batch(batch, options)  # Raises on a mismatch.


def test_examples_shapes_dtypes_and_ranges():
  batch = synthetic.examples(np.random.default_rng(0), 500,
                             image_shape=(4, 3, 2), classes=7)
  chex.assert_shape(batch["image"], (500, 4, 3, 2))
  chex.assert_shape(batch["label"], (500,))
  chex.assert_type(batch["image"], np.float32)
  chex.assert_type(batch["label"], np.int32)
  chex.assert_tree_all_finite(batch)
  assert batch["image"].min() >= 0.0 and batch["image"].max() < 1.0
  assert batch["label"].min() >= 0 and batch["label"].max() < 7
  # 500 draws of 7 classes: every class appears.
  assert set(batch["label"].tolist()) == set(range(7))


def test_joint_batch_labels_follow_each_stream():
  sizes = {"src": 48, "tgt": 24, "val": 10}
  batch = synthetic.joint_batch(np.random.default_rng(1), sizes,
                                image_shape=(3, 3, 1), num_src_classes=10,
                                num_tgt_classes=2)
  assert list(batch) == ["src", "tgt", "val"]
  for name, n in sizes.items():
    chex.assert_shape(batch[name]["image"], (n, 3, 3, 1))
    chex.assert_shape(batch[name]["label"], (n,))
  assert batch["src"]["label"].max() > 1  # Source classes: up to 10.
  assert batch["tgt"]["label"].max() <= 1 and batch["val"]["label"].max() <= 1


def test_batches_are_determined_by_the_seed():
  make = lambda seed: synthetic.batches(
      np.random.default_rng(seed), {"a": 5, "b": 3}, image_shape=(2, 2),
      classes={"a": 4, "b": 9})
  chex.assert_trees_all_equal(make(3), make(3))
  other = make(4)
  assert not np.array_equal(make(3)["a"]["image"], other["a"]["image"])


def test_bad_requests_are_refused():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="No class count for batch"):
    synthetic.batches(rng, {"src": 2, "val": 2}, image_shape=(1,),
                      classes={"src": 3})
  with pytest.raises(ValueError, match="n and classes must be >= 1"):
    synthetic.examples(rng, 0, image_shape=(1,), classes=3)
  with pytest.raises(ValueError, match="n and classes must be >= 1"):
    synthetic.examples(rng, 2, image_shape=(1,), classes=0)


@pytest.mark.parametrize("batch", [8, 64])
def test_bench_device_reads_the_batches_of_the_imagenet_runs(batch):
  config = imagenet_pets.get_config()
  # At another target batch: paper.set_target_stage ties the validation
  # batch to it.
  paper.set_target_stage(config, num_train=imagenet_pets.NUM_TRAIN,
                         batch_size=batch)
  for kind, options in bench_device.ESTIMATORS.items():
    want = steps.L2TLOptions(**options).joint_batch_sizes(
        config.train.batch_size, config.l2tl.val_batch_size)
    assert bench_device.joint_batch_sizes(kind, batch) == want
    assert want == {"src": 2 * batch, "tgt": batch, "val": batch}
