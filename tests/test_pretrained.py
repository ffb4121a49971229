"""Runs that start from a weights file: loading, batch-norm modes, bfloat16.

The fixture tests/fixtures/tv_basic.safetensors is a narrow torchvision
ResNet (basic blocks, width 4, a 10-way classifier): on the tiny config
(mnist_5k's 10 digits as the source) its classifier is the source head.
"""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from experiments.configs import tiny
from l2tl_jax import build
from l2tl_jax import loading
from l2tl_jax import losses
from l2tl_jax import methods
from l2tl_jax import models
from l2tl_jax import optim
from l2tl_jax import outer
from l2tl_jax import parallel
from l2tl_jax import spec as spec_lib
from l2tl_jax import steps
from l2tl_jax import train
from l2tl_jax import weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "tv_basic.safetensors")
KWARGS = {"stage_sizes": (2, 1, 1, 1), "block": "basic", "width": 4}


def _config(tmp_path, method="l2tl", **overrides):
  config = tiny.get_config()
  config.method = method
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.channels = 3
  config.model.encoder = "resnet_v1"
  config.model.encoder_kwargs = KWARGS
  config.model.init_from = FIXTURE
  config.model.preprocessing_from_weights = False  # Stay at 32 px.
  config.pretrain_cache_dir = str(tmp_path / "pretrain")
  config.write_plots = False
  config.update_from_flattened_dict({"train.steps": 4, "eval.every_steps": 2,
                                     "log_every_steps": 2,
                                     "checkpoint_every_steps": 4,
                                     **overrides})
  return config


@pytest.mark.slow
@pytest.mark.parametrize("method,estimator", [
    ("finetune", None), ("l2tl", "meta_gradient"), ("l2tl", "reinforce")])
def test_runs_start_from_the_file_and_skip_pretraining(tmp_path, method,
                                                       estimator):
  overrides = {"l2tl.estimator": estimator} if estimator else {}
  config = _config(tmp_path, method, **overrides)
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["status"] == "completed"
  assert "pretrain" not in results
  assert results["init_from"]["family"] == "resnet_v1"
  joint = methods.get(method).joint
  assert results["init_from"]["loaded_parts"] == (
      ["encoder", "src_head"] if joint else ["encoder"])
  assert not os.path.exists(tmp_path / "pretrain")  # Cache untouched.


def test_the_file_fills_encoder_and_source_head(tmp_path):
  loaded = weights.load(FIXTURE)
  spec = spec_lib.from_config(_config(tmp_path))
  model = build.make_model(spec.model, heads=("src_head", "tgt_head"),
                           shapes=build.Shapes((32, 32, 3), 10, 5))
  params, state = jax.eval_shape(
      lambda: models.init_variables(model, jax.random.key(0), (32, 32, 3)))
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), params)
  state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state)
  merged, merged_state = loading.merge_variables(
      params, state, loaded.params, loaded.model_state,
      parts=("encoder", "src_head"))
  chex.assert_trees_all_equal(merged["src_head"], loaded.params["src_head"])
  chex.assert_trees_all_equal(merged["encoder"], loaded.params["encoder"])
  chex.assert_trees_all_equal(merged_state["batch_stats"]["encoder"],
                              loaded.model_state["batch_stats"]["encoder"])
  np.testing.assert_array_equal(merged["tgt_head"]["Dense_0"]["kernel"], 0.0)


def test_encoder_kwargs_are_checked(tmp_path):
  config = train.resolve_config(_config(tmp_path))
  config.model.encoder_kwargs = {**KWARGS, "conv_features": 8}
  with pytest.raises(train.validation.ConfigError,
                     match="encoder_kwargs has conv_features, which "
                     "'resnet_v1' does not take"):
    spec_lib.from_config(config)


def test_weights_of_another_architecture_are_named(tmp_path):
  config = _config(tmp_path, "finetune", **{"model.encoder": "lenet"})
  config.model.encoder_kwargs = {}
  with pytest.raises(weights.WeightsError,
                     match=r"holds resnet_v1 weights but config.model is "
                     r"'lenet'"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "config.json")


@pytest.mark.slow
def test_bad_weight_files_exit_with_one_line(tmp_path):
  truncated = tmp_path / "cut.safetensors"
  truncated.write_bytes(open(FIXTURE, "rb").read()[:300])
  config_file = tmp_path / "resnet_tiny.py"
  config_file.write_text(
      "from experiments.configs import tiny\n"
      "def get_config():\n"
      "  config = tiny.get_config()\n"
      "  config.data.channels = 3\n"
      "  config.model.encoder = 'resnet_v1'\n"
      f"  config.model.encoder_kwargs = {KWARGS!r}\n"
      "  return config\n")
  base = [sys.executable, "-m", "experiments.main", f"--config={config_file}",
          f"--config.data.data_dir={tmp_path / 'tfds'}",
          f"--workdir={tmp_path / 'run'}"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  other = tmp_path / "other.safetensors"
  other.write_bytes(open(os.path.join(
      REPO, "tests", "fixtures", "tv_bottleneck.safetensors"), "rb").read())
  for path, text in ((truncated, "cut.safetensors"),
                     (other, "bottleneck")):
    run = subprocess.run(base + [f"--config.model.init_from={path}"],
                         capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert text in lines[0]
    assert not (tmp_path / "run" / "config.json").exists()


def _bn_step(bn_mode, dtype=jnp.float32, model_state=None):
  model = models.make_model("resnet_v1", num_src_classes=3, num_tgt_classes=2,
                            encoder_kwargs={**KWARGS, "dtype": dtype})
  params, state = models.init_variables(model, jax.random.key(0), (16, 16, 3))
  if model_state is not None:
    state = model_state
  problem = outer.JointProblem(model=model, tx=optim.momentum_sgd(0.1),
                               bn_mode=bn_mode)
  rs = np.random.RandomState(0)
  kept = outer.KeptSource(
      image=jnp.asarray(rs.rand(4, 16, 16, 3), jnp.float32),
      label=jnp.array([0, 1, 2, 0]), weight=jnp.ones(4), count=jnp.float32(4))
  tgt = {"image": jnp.asarray(rs.rand(4, 16, 16, 3) + 2.0, jnp.float32),
         "label": jnp.array([0, 1, 1, 0])}
  loss, (new_state, _, _, _) = outer.joint_loss(
      params, problem=problem, model_state=state, kept=kept, tgt=tgt,
      alpha=jnp.float32(1.0), decay_mask=losses.decay_mask(params, "all"))
  return loss, state, new_state, (model, params, tgt)


def test_batch_norm_modes():
  _, state, frozen, _ = _bn_step("frozen")
  chex.assert_trees_all_equal(frozen, state)  # Never updated.
  _, _, joint, _ = _bn_step("joint")
  _, _, target, (model, params, tgt) = _bn_step("target")
  # 'target': the running statistics move towards the target batch only,
  # exactly as a pass over the target images alone.
  _, alone = models.apply_encoder(model, params, state, tgt["image"],
                                  train=True)
  chex.assert_trees_all_close(target, alone, atol=1e-6)
  mean = lambda s: s["batch_stats"]["encoder"]["bn1"]["mean"]
  assert not np.allclose(mean(joint), mean(target), atol=1e-4)


def test_bfloat16_loss_is_close_to_float32():
  loss32, *_ = _bn_step("joint")
  loss16, *_ = _bn_step("joint", dtype=jnp.bfloat16)
  assert loss16.dtype == jnp.float32  # Losses stay float32.
  # bfloat16 keeps 8 bits of mantissa: 2^-8 relative per rounding.
  np.testing.assert_allclose(float(loss16), float(loss32), rtol=2e-2)


def test_bfloat16_meta_gradient_step_is_finite_and_close(tmp_path):
  results = {}
  for dtype in ("float32", "bfloat16"):
    spec = spec_lib.from_config(_config(tmp_path, **{"model.dtype": dtype}))
    method = spec.method
    shapes = build.Shapes((16, 16, 3), 3, 2)
    model = build.make_model(spec.model, heads=method.heads, shapes=shapes)
    params, state = models.init_variables(model, jax.random.key(0),
                                          shapes.image_shape)
    parts = build.target_stage(spec, model=model,
                               params=params, model_state=state,
                               rng=jax.random.key(1),
                               par=parallel.Parallelism())
    rs = np.random.RandomState(0)
    batch = {k: {"image": rs.rand(n, 16, 16, 3).astype(np.float32),
                 "label": rs.randint(0, c, n).astype(np.int32)}
             for k, n, c in (("src", 16, 3), ("tgt", 8, 2), ("val", 32, 2))}
    new_state, metrics = parts.train_step(parts.state, batch)
    chex.assert_tree_all_finite((new_state.policy_params, metrics))
    results[dtype] = metrics
  for key in ("train/tgt_loss", "val/loss"):
    np.testing.assert_allclose(float(results["bfloat16"][key]),
                               float(results["float32"][key]), rtol=3e-2)
  assert steps.L2TLOptions is not None


def test_preprocessing_follows_the_weights_family(tmp_path):
  config = _config(tmp_path)
  config.model.preprocessing_from_weights = True
  config.data.image_size = 32  # The default: filled in.
  data_of = lambda family: spec_lib.from_config(
      config, weights_family=family).config["data"]
  filled = data_of("resnet50")
  assert (filled["image_size"], filled["resize_size"],
          filled["normalization"], filled["eval_resize"]) == (
              224, 256, "imagenet", "resize_center_crop")
  assert spec_lib.from_config(
      config, weights_family="resnet50").data.spec.image_size == 224
  config.data.normalization = "bit"  # Set by the user: it wins.
  bit = data_of("bit_r50x1")
  assert (bit["normalization"], bit["eval_resize"]) == ("bit", "resize")
  # Our own encoders have no ImageNet preprocessing: nothing changes.
  assert data_of("lenet") == data_of(None)
  config.model.preprocessing_from_weights = False
  assert data_of("resnet50") == data_of(None)


@pytest.mark.slow
def test_pretrained_folder_config_fine_tunes_without_a_source(tmp_path):
  from experiments.configs import pretrained_folder
  rs = np.random.RandomState(0)
  for c in ("cat", "dog", "owl"):
    os.makedirs(tmp_path / "images" / c)
    for i in range(5):
      size = (rs.randint(20, 60), rs.randint(20, 60))
      Image.fromarray(rs.randint(0, 255, (*size, 3), np.uint8)).save(
          tmp_path / "images" / c / f"{i}.jpg")
  config = pretrained_folder.get_config(str(tmp_path / "images"))
  config.model.init_from = FIXTURE
  config.model.encoder = "resnet_v1"
  config.model.encoder_kwargs = KWARGS
  config.data.data_dir = str(tmp_path / "tfds")
  config.update_from_flattened_dict({
      "data.image_size": 40, "data.target_train_per_class": 2,
      "data.target_val_per_class": 1, "train.steps": 3,
      "train.batch_size": 2, "eval.every_steps": 0, "write_plots": False,
      "progress_bar": False})
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  task = results["task"]
  assert task["source"] is None and task["image_shape"] == [40, 40, 3]
  assert results["config"]["data"]["normalization"] == "imagenet"
  assert results["test_examples"] == 6
  config.method = "l2tl"
  with pytest.raises(train.data.DataError, match="set config.data.source"):
    train.train_and_evaluate(config, str(tmp_path / "run_l2tl"))
