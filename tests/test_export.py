"""l2tl_jax/export.py and experiments/export.py.

The torchvision layout is checked against a real torchvision state dict (the
committed fixture, written by torchvision itself) and by round trips through
this project's own loader (`weights.load`, what config.model.init_from
reads); the load into torchvision itself runs where torch is importable.
"""

import dataclasses
import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
import safetensors
from safetensors import numpy as st_numpy

from experiments import export as export_cli
from l2tl_jax import export
from l2tl_jax import models
from l2tl_jax import saved_run
from l2tl_jax import weights
from test_predict import fake_config
from test_predict import fake_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")


def _logits_fn(model):
  """Compiled (variables, images) -> target logits [B, C] (op by op, a
  ResNet takes seconds)."""

  @jax.jit
  def logits(variables, images):
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    features, _ = models.apply_encoder(model, params, model_state, images,
                                       train=False)
    return models.apply_head(model, params, features, "tgt")

  return lambda variables, images: np.asarray(logits(variables, images))


def _random_resnet(encoder, encoder_kwargs, num_classes, image_shape, seed):
  """(params, model_state) of a ResNet with random BN scales and statistics
  (freshly initialised ones are ones and zeros, which hide layout errors)."""
  model = models.make_model(encoder, num_tgt_classes=num_classes,
                            encoder_kwargs=encoder_kwargs)
  params, model_state = models.init_variables(model, jax.random.key(seed),
                                              image_shape)
  rng = np.random.default_rng(seed)

  def jitter(path, x):
    name = path[-1].key
    if name in ("scale", "var"):
      return (0.5 + rng.random(x.shape)).astype(np.float32)
    if name in ("bias", "mean"):
      return (0.2 * rng.standard_normal(x.shape)).astype(np.float32)
    return np.asarray(x)

  return (jax.tree_util.tree_map_with_path(jitter, params),
          jax.tree_util.tree_map_with_path(jitter, model_state))


def _resnet_run(tmp_path, encoder="resnet_v1", num_classes=3, size=32,
                **encoder_kwargs):
  """A fake run of a torchvision-layout ResNet (RGB, ImageNet scaling)."""
  config = fake_config(encoder=encoder)
  config.model.encoder_kwargs = encoder_kwargs
  config.data.channels = 3
  config.data.normalization = "imagenet"
  config.data.image_size = size
  workdir = str(tmp_path / "run")
  names = tuple(f"class_{i}" for i in range(num_classes))
  # One checkpoint step, also the selected one: a single (slow) ResNet init.
  variables = _random_resnet(encoder, encoder_kwargs, num_classes,
                             (size, size, 3), seed=0)
  fake_run(workdir, config=config, class_names=names,
           image_shape=(size, size, 3), steps=(10,), best_step=10,
           variables=lambda seed: variables)
  return saved_run.load_run(workdir)


@pytest.fixture(name="run_dir")
def _run_dir(tmp_path):
  workdir = str(tmp_path / "run")
  fake_run(workdir)
  return workdir


def test_torchvision_state_dict_is_torchvisions_own():
  # The fixture is a torchvision model's state_dict(): read into our layout
  # and written back, every key, shape and float value comes back.
  path = os.path.join(FIXTURES, "tv_basic.safetensors")
  original = st_numpy.load_file(path)
  loaded = weights.load(path)
  params = {"encoder": loaded.params["encoder"],
            "tgt_head": loaded.params["src_head"]}
  written = export.torchvision_state_dict(params, loaded.model_state)
  assert sorted(written) == sorted(original)
  for key, value in original.items():
    assert written[key].shape == value.shape, key
    assert written[key].dtype == value.dtype, key
    if key.endswith("num_batches_tracked"):
      assert written[key] == 0  # The count is not kept by this project.
    else:
      np.testing.assert_array_equal(written[key], value, err_msg=key)


def test_resnet_round_trip_through_the_projects_loader(tmp_path):
  run = _resnet_run(tmp_path, stage_sizes=(2, 1, 1, 1), block="bottleneck",
                    width=4)
  paths = export.export_run(run, str(tmp_path / "export"))
  loaded = weights.load(paths["model"])
  assert loaded.family == "resnet_v1"
  assert loaded.encoder_kwargs == {"stage_sizes": (2, 1, 1, 1),
                                   "block": "bottleneck", "width": 4}
  assert loaded.source_head_classes == 3
  assert sorted(loaded.info["ignored"])[0] == "bn1.num_batches_tracked"
  back = {"params": {"encoder": loaded.params["encoder"],
                     "tgt_head": loaded.params["src_head"]},
          **loaded.model_state}
  chex.assert_trees_all_equal(back, run.variables)
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(
      np.float32)
  logits = _logits_fn(run.model)
  np.testing.assert_array_equal(logits(back, images),
                                logits(run.variables, images))
  orbax = export.export_run(run, str(tmp_path / "o"), fmt="orbax")
  loaded = weights.load(orbax["model"])
  chex.assert_trees_all_equal({"params": loaded.params, **loaded.model_state},
                              run.variables)
  with safetensors.safe_open(paths["model"], "np") as f:
    metadata = f.metadata()
  assert metadata["format"] == "pt" and metadata["layout"] == "torchvision"
  assert metadata["encoder"] == "resnet_v1" and metadata["num_classes"] == "3"
  assert json.loads(metadata["encoder_kwargs"]) == {
      "block": "bottleneck", "stage_sizes": [2, 1, 1, 1], "width": 4}
  with open(paths["labels"]) as f:
    assert json.load(f) == ["class_0", "class_1", "class_2"]
  with open(paths["preprocessing"]) as f:
    prep = json.load(f)
  assert prep["input_shape"] == [32, 32, 3]
  assert prep["input_layout"] == "NCHW"
  assert prep["normalization"] == "imagenet"
  np.testing.assert_allclose(prep["mean"], [0.485, 0.456, 0.406])
  np.testing.assert_allclose(prep["std"], [0.229, 0.224, 0.225])


def test_lenet_round_trips_orbax_and_flat(tmp_path):
  workdir = str(tmp_path / "run")
  fake_run(workdir)
  run = saved_run.load_run(workdir, params="val_selected")
  images = np.random.default_rng(0).random((3, 32, 32, 1), np.float32)
  logits = _logits_fn(run.model)
  expected = logits(run.variables, images)
  orbax = export.export_run(run, str(tmp_path / "o"), fmt="orbax")
  loaded = weights.load(orbax["model"])  # What init_from reads.
  assert loaded.info["format"] == "orbax"
  back = {"params": loaded.params, **loaded.model_state}
  chex.assert_trees_all_equal(back, run.variables)
  np.testing.assert_array_equal(logits(back, images), expected)
  flat = export.export_run(run, str(tmp_path / "f"))
  tensors = st_numpy.load_file(flat["model"])
  assert sorted(tensors) == [
      "params/encoder/conv1/bias", "params/encoder/conv1/kernel",
      "params/encoder/conv2/bias", "params/encoder/conv2/kernel",
      "params/encoder/fc1/bias", "params/encoder/fc1/kernel",
      "params/encoder/fc2/bias", "params/encoder/fc2/kernel",
      "params/tgt_head/Dense_0/bias", "params/tgt_head/Dense_0/kernel"]
  assert tensors["params/encoder/conv1/kernel"].shape == (5, 5, 1, 8)  # HWIO
  params, model_state, metadata = export.read_flat(flat["model"])
  assert model_state == {}
  assert metadata["layout"] == "l2tl_jax" and metadata["step"] == "20"
  assert metadata["params"] == "val_selected"
  np.testing.assert_array_equal(logits({"params": params}, images),
                                expected)
  # init_from reads the flat file too: its target head is the classifier.
  loaded = weights.load(flat["model"])
  assert loaded.source_head_classes == params["tgt_head"]["Dense_0"][
      "bias"].shape[0]
  chex.assert_trees_all_equal(loaded.params["encoder"], params["encoder"])
  chex.assert_trees_all_equal(loaded.params["src_head"], params["tgt_head"])
  with open(flat["preprocessing"]) as f:
    prep = json.load(f)
  assert prep["input_layout"] == "NHWC" and prep["mean"] == [0.0]
  assert prep["std"] == [1.0] and prep["resize_method"] == "auto"
  with pytest.raises(weights.WeightsError, match="not a file of the"):
    export.read_flat(os.path.join(FIXTURES, "tv_basic.safetensors"))


def test_bit_normalisation_is_mean_and_std_one_half(run_dir):
  run = saved_run.load_run(run_dir)
  prep = export.preprocessing(dataclasses.replace(run, normalization="bit"))
  assert prep["mean"] == [0.5] and prep["std"] == [0.5]


def test_never_overwrites_without_overwrite(tmp_path, run_dir):
  run = saved_run.load_run(run_dir)
  out = str(tmp_path / "export")
  paths = export.export_run(run, out)
  before = {p: open(p, "rb").read() for p in paths.values()}
  with pytest.raises(export.ExportError, match="pass --overwrite"):
    export.export_run(run, out)
  assert {p: open(p, "rb").read() for p in paths.values()} == before
  # Only the files of the format asked for are in the way.
  export.export_run(run, str(tmp_path / "other"), fmt="orbax")
  again = saved_run.load_run(run_dir, params="val_selected")
  export.export_run(again, out, overwrite=True)
  assert open(paths["model"], "rb").read() != before[paths["model"]]
  export.export_run(again, out, fmt="orbax", overwrite=True)
  export.export_run(run, out, fmt="orbax", overwrite=True)  # Replaces a dir.
  assert sorted(os.listdir(out)) == ["labels.json", "model.safetensors",
                                     "orbax", "preprocessing.json"]
  afile = str(tmp_path / "afile")
  open(afile, "w").close()
  with pytest.raises(export.ExportError, match="is a file"):
    export.export_run(run, afile)


def test_run_export_prints_how_to_load(run_dir, tmp_path):
  lines = []
  paths = export_cli.run_export(run_dir, output=str(tmp_path / "e"),
                                emit=lines.append, warn=lines.append)
  assert lines[0] == (f"exported the final params of {run_dir} (step 40, "
                      "lenet, 3 classes) in the l2tl_jax layout:")
  assert lines[1:4] == [f"  {p}" for p in paths.values()]
  assert lines[4].startswith("load: l2tl_jax.weights.load(")
  assert "l2tl_jax.export.read_flat(" in lines[4]


# ----------------------------------------------------------------- slow


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.export", *args],
                        cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"},
                        check=False)


@pytest.mark.slow
def test_command_line(run_dir, tmp_path):
  out = str(tmp_path / "export")
  result = _cli(f"--workdir={run_dir}", f"--output={out}", "--format=orbax")
  assert result.returncode == 0, result.stderr
  assert "in the orbax layout" in result.stdout
  result = _cli(f"--workdir={run_dir}", f"--output={out}", "--format=orbax")
  assert result.returncode == 2
  assert result.stderr == (
      f"error: {out}/orbax, {out}/labels.json, {out}/preprocessing.json "
      "already exist(s); pass --overwrite to replace them, or choose another "
      "--output. See --help.\n")
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  result = _cli(f"--workdir={empty}")
  assert result.returncode == 2
  assert result.stderr.startswith(f"error: {empty} holds no finished run")
  assert result.stderr.count("\n") == 1
  assert not os.path.exists(os.path.join(empty, "export"))


@pytest.mark.slow
def test_torchvision_loads_the_export_with_the_same_logits(tmp_path):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  st_torch = pytest.importorskip("safetensors.torch")
  images = np.random.default_rng(0).uniform(-2, 2, (2, 64, 64, 3)).astype(
      np.float32)
  for encoder in ("resnet18", "resnet50"):
    run = _resnet_run(tmp_path / encoder, encoder=encoder, num_classes=5,
                      size=64)
    paths = export.export_run(run, str(tmp_path / encoder / "export"))
    model = getattr(torchvision.models, encoder)(num_classes=5)
    model.load_state_dict(st_torch.load_file(paths["model"]), strict=True)
    model.eval()
    with torch.no_grad():
      got = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    expected = _logits_fn(run.model)(run.variables, images)
    diff = float(np.abs(got - expected).max())
    print(f"{encoder}: max abs logit {np.abs(expected).max():.3f}, max abs "
          f"diff {diff:.2e}")
    assert diff <= 1e-5 * max(1.0, float(np.abs(expected).max()))
