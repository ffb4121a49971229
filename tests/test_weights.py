"""Weight files read into this project's trees: formats, checkpoints, errors."""

import os
import pickle
import sys

import chex
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from safetensors import numpy as st_numpy

from l2tl_jax import checkpointing
from l2tl_jax import loading
from l2tl_jax import models
from l2tl_jax import train_state
from l2tl_jax import weights

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "fixtures")
BOTTLENECK = os.path.join(FIXTURES, "tv_bottleneck.safetensors")


def _fixture_dict():
  return dict(st_numpy.load_file(BOTTLENECK))


def _save(tmp_path, flat, name="w.safetensors"):
  path = os.path.join(tmp_path, name)
  if name.endswith(".npz"):
    np.savez(path, **flat)
  else:
    st_numpy.save_file(flat, path)
  return path


def _shapes_of(loaded):
  """(params, model_state) shapes of the model `loaded` fits, plus tgt head."""
  model = models.make_model(loaded.family,
                            num_src_classes=loaded.source_head_classes,
                            num_tgt_classes=3,
                            encoder_kwargs=loaded.encoder_kwargs)
  shapes = jax.eval_shape(lambda: models.init_variables(
      model, jax.random.key(0), (32, 32, 3)))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def test_torchvision_layout_conversion():
  flat = _fixture_dict()
  loaded = weights.load(BOTTLENECK)
  assert loaded.info["format"] == "safetensors"
  assert loaded.source_head_classes == 7
  enc = loaded.params["encoder"]
  stats = loaded.model_state["batch_stats"]["encoder"]
  # OIHW -> HWIO, [out, in] -> [in, out], BN -> scale/bias + mean/var.
  np.testing.assert_array_equal(
      enc["layer2_0"]["conv2"]["kernel"],
      flat["layer2.0.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      enc["layer1_0"]["downsample_conv"]["kernel"][0, 0],
      flat["layer1.0.downsample.0.weight"][:, :, 0, 0].T)
  np.testing.assert_array_equal(loaded.params["src_head"]["Dense_0"]["kernel"],
                                flat["fc.weight"].T)
  np.testing.assert_array_equal(enc["bn1"]["scale"], flat["bn1.weight"])
  np.testing.assert_array_equal(
      stats["layer1_0"]["downsample_bn"]["var"],
      flat["layer1.0.downsample.1.running_var"])
  np.testing.assert_array_equal(stats["layer3_0"]["bn2"]["mean"],
                                flat["layer3.0.bn2.running_mean"])
  # Every key but the BN step counters is mapped, each once.
  mapped = [m.file_key for m in loaded.info["mapping"]]
  assert len(mapped) == len(set(mapped))
  assert sorted(mapped + loaded.info["ignored"]) == sorted(flat)
  assert all(k.endswith("num_batches_tracked")
             for k in loaded.info["ignored"])
  assert loaded.info["num_params"] == 34_219  # torchvision's count.


def test_merges_for_fine_tuning_with_a_fresh_target_head():
  loaded = weights.load(BOTTLENECK)
  params, model_state = _shapes_of(loaded)
  merged, merged_state = loading.merge_variables(
      params, model_state, loaded.params, loaded.model_state,
      parts=("encoder",), source=BOTTLENECK)
  chex.assert_trees_all_equal(merged["encoder"], loaded.params["encoder"])
  chex.assert_trees_all_equal(merged_state["batch_stats"]["encoder"],
                              loaded.model_state["batch_stats"]["encoder"])
  np.testing.assert_array_equal(merged["src_head"]["Dense_0"]["kernel"], 0)
  assert merged["tgt_head"]["Dense_0"]["kernel"].shape == (128, 3)


def test_npz_and_module_prefix_give_the_same_trees(tmp_path):
  flat = _fixture_dict()
  a = weights.load(BOTTLENECK)
  b = weights.load(_save(tmp_path, {f"module.{k}": v for k, v in flat.items()},
                         "w.npz"))
  assert b.info["format"] == "npz"
  assert (b.family, b.encoder_kwargs) == (a.family, a.encoder_kwargs)
  chex.assert_trees_all_equal(a.params, b.params)
  chex.assert_trees_all_equal(a.model_state, b.model_state)


def _torchvision_shapes(block, layers, *, width=64, classes=1000):
  """{key: shape} of a torchvision ResNet state dict, from its rules."""
  shapes = {}

  def bn(name, c):
    for leaf in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{name}.{leaf}"] = (c,)
    shapes[f"{name}.num_batches_tracked"] = ()

  expansion = 1 if block == "basic" else 4
  shapes["conv1.weight"] = (width, 3, 7, 7)
  bn("bn1", width)
  inplanes = width
  for i, blocks in enumerate(layers):
    planes = width * 2**i
    for j in range(blocks):
      p = f"layer{i + 1}.{j}."
      stride = 2 if i > 0 and j == 0 else 1
      if block == "basic":
        convs = [(planes, inplanes, 3), (planes, planes, 3)]
      else:
        convs = [(planes, inplanes, 1), (planes, planes, 3),
                 (4 * planes, planes, 1)]
      for k, (o, c, size) in enumerate(convs, 1):
        shapes[f"{p}conv{k}.weight"] = (o, c, size, size)
        bn(f"{p}bn{k}", o)
      if stride != 1 or inplanes != planes * expansion:
        shapes[f"{p}downsample.0.weight"] = (planes * expansion, inplanes,
                                             1, 1)
        bn(f"{p}downsample.1", planes * expansion)
      inplanes = planes * expansion
  shapes["fc.weight"] = (classes, inplanes)
  shapes["fc.bias"] = (classes,)
  return shapes


@pytest.mark.parametrize("name, block, layers, count", [
    ("resnet18", "basic", (2, 2, 2, 2), 11_689_512),
    ("resnet34", "basic", (3, 4, 6, 3), 21_797_672),
    ("resnet50", "bottleneck", (3, 4, 6, 3), 25_557_032),
])
def test_standard_architectures_are_named_from_the_keys(tmp_path, name, block,
                                                       layers, count):
  flat = {k: np.zeros(s, np.int64 if k.endswith("tracked") else np.float32)
          for k, s in _torchvision_shapes(block, layers).items()}
  loaded = weights.load(_save(tmp_path, flat))
  assert (loaded.family, loaded.encoder_kwargs) == (name, {})
  assert loaded.source_head_classes == 1000
  assert loaded.info["num_params"] == count  # torchvision's count.
  assert loaded.params["encoder"]["conv1"]["kernel"].shape == (7, 7, 3, 64)


def test_expected_shapes():
  shapes = weights.expected_shapes("resnet18", {}, 1000)
  assert shapes["params/encoder/conv1/kernel"] == (7, 7, 3, 64)
  assert shapes["batch_stats/encoder/layer4_1/bn2/var"] == (512,)
  assert shapes["params/src_head/Dense_0/kernel"] == (512, 1000)
  assert len(shapes) == 62 + 40  # 62 params + 20 BN x (mean, var).


def test_unknown_missing_and_misshapen_keys_are_named_at_once(tmp_path):
  flat = _fixture_dict()
  del flat["layer2.0.conv1.weight"]
  del flat["layer4.0.downsample.1.running_var"]
  flat["layer1.0.conv9.weight"] = np.zeros((1,), np.float32)
  flat["head.extra"] = np.zeros((1,), np.float32)
  flat["layer3.0.bn1.running_mean"] = np.zeros((5,), np.float32)
  flat["conv1.weight"] = np.zeros((4, 3, 5, 5), np.float32)
  path = _save(tmp_path, flat)
  with pytest.raises(weights.WeightsError) as info:
    weights.load(path)
  message = str(info.value)
  assert message.startswith(f"{path}: does not fit a torchvision/timm ResNet")
  assert "2 unknown: head.extra, layer1.0.conv9.weight" in message
  assert ("2 missing: layer2.0.conv1.weight, "
          "layer4.0.downsample.1.running_var") in message
  assert ("2 of another shape: conv1.weight: (4, 3, 5, 5) (here "
          "(5, 5, 3, 4)), expected (7, 7, 3, 4) here, "
          "layer3.0.bn1.running_mean: (5,), expected (16,)") in message


def test_a_missing_stage_is_reported(tmp_path):
  flat = {k: v for k, v in _fixture_dict().items()
          if not k.startswith("layer4.")}
  with pytest.raises(weights.WeightsError,
                     match=r"layer1..layer4; found \['layer1', 'layer2', "
                           r"'layer3'\]"):
    weights.load(_save(tmp_path, flat))


def test_another_architecture_is_refused(tmp_path):
  flat = {"features.0.weight": np.zeros((8, 3, 3, 3), np.float32),
          "classifier.1.weight": np.zeros((10, 8), np.float32)}
  path = _save(tmp_path, flat)
  with pytest.raises(weights.WeightsError,
                     match=r"neither a torchvision/timm ResNet.*nor a BiT.*"
                           r"2 arrays, e\.g\. classifier\.1\.weight"):
    weights.load(path)


@pytest.mark.parametrize("name", ["tv_bottleneck.safetensors", "w.npz"])
def test_truncated_files_are_reported(tmp_path, name):
  source = BOTTLENECK
  if name.endswith(".npz"):
    source = _save(tmp_path, _fixture_dict(), "full.npz")
  with open(source, "rb") as f:
    data = f.read()
  path = os.path.join(tmp_path, name)
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(weights.WeightsError, match=f"{path}: unreadable"):
    weights.load(path)


def test_pth_without_torch_explains_the_conversion(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails.
  path = os.path.join(tmp_path, "resnet50.pth")
  with open(path, "wb") as f:
    f.write(b"not read")
  with pytest.raises(weights.WeightsError,
                     match=r"(?s)needs torch.*safetensors.*"
                           r"resnet50\.safetensors"):
    weights.load(path)


def test_unknown_format_and_missing_file(tmp_path):
  path = os.path.join(tmp_path, "w.h5")
  with open(path, "wb") as f:
    f.write(b"x")
  with pytest.raises(weights.WeightsError, match="unknown weights format"):
    weights.load(path)
  with pytest.raises(weights.WeightsError, match="no such file"):
    weights.load(os.path.join(tmp_path, "absent.safetensors"))


def test_a_symlink_loop_and_a_broken_link_are_named(tmp_path):
  loop = os.path.join(tmp_path, "loop.safetensors")
  os.symlink(loop, loop)
  with pytest.raises(weights.WeightsError,
                     match=f"^{loop}: symlink loop .*point the link at"):
    weights.load(loop)
  broken = os.path.join(tmp_path, "broken.safetensors")
  os.symlink("absent.safetensors", broken)
  with pytest.raises(weights.WeightsError,
                     match=f"^{broken}: broken symlink to 'absent"):
    weights.load(broken)


def _write_as(tmp_path, content):
  """A file holding the fixture as `content` (a format of `sniff_format`)."""
  if content == "pickle":  # What an older torch.save starts with.
    path = os.path.join(tmp_path, "source.pickle")
    with open(path, "wb") as f:
      f.write(pickle.dumps({"conv1.weight": np.zeros(3)}, protocol=2))
    return path
  return _save(tmp_path, _fixture_dict(), f"source.{content}")


@pytest.mark.parametrize("content, name, expected", [
    ("safetensors", "w.npz",
     "this file is a safetensors file named .npz: rename it to .safetensors"),
    ("npz", "w.safetensors", "this file is an npz file (a zip of .npy arrays) "
     "named .safetensors: rename it to .npz"),
    ("safetensors", "w.pth",
     "this file is a safetensors file named .pth: rename it to .safetensors"),
    ("npz", "weights", "this file is an npz file (a zip of .npy arrays) "
     "without an extension: rename it to .npz"),
    ("pickle", "w.npz", "this file is a pickle file (an older torch.save) "
     "named .npz: rename it to .pth"),
])
def test_the_content_decides_the_format(tmp_path, content, name, expected):
  path = os.path.join(tmp_path, name)
  os.rename(_write_as(tmp_path, content), path)
  assert weights.sniff_format(path) == content
  with pytest.raises(weights.WeightsError) as info:
    weights.load(path)
  assert str(info.value) == f"{path}: {expected}."


def test_a_file_that_is_no_zip_named_npz_is_not_called_a_pickle(tmp_path):
  path = os.path.join(tmp_path, "w.npz")
  with open(path, "wb") as f:
    f.write(b"GIF89a not weights at all")
  with pytest.raises(weights.WeightsError,
                     match="unreadable npz file.*does not start like") as info:
    weights.load(path)
  assert "pickle" not in str(info.value)
  with open(path, "wb"):
    pass
  with pytest.raises(weights.WeightsError, match=f"^{path}: empty file"):
    weights.load(path)


@pytest.mark.parametrize("name", ["w.safetensors", "w.npz"])
def test_nan_or_inf_in_any_tensor_is_refused_at_load(tmp_path, name):
  flat = _fixture_dict()
  flat["layer2.0.bn1.running_var"][[0, 3]] = np.nan
  flat["conv1.weight"][0, 0, 0, 0] = np.inf
  flat["fc.bias"][:] = -np.inf
  path = _save(tmp_path, flat, name)
  with pytest.raises(weights.WeightsError) as info:
    weights.load(path)
  assert str(info.value) == (
      f"{path}: 3 tensor(s) holding NaN or inf values: conv1.weight "
      "(1 inf of 588), fc.bias (7 inf of 7), layer2.0.bn1.running_var (2 NaN "
      "of 8). The file is damaged or was exported wrongly (weights are finite "
      "floating-point numbers): download or export it again.")


def test_many_bad_tensors_are_counted_not_all_listed(tmp_path):
  flat = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v
          for k, v in _fixture_dict().items()}
  count = len([k for k in flat if not k.endswith("num_batches_tracked")])
  with pytest.raises(weights.WeightsError) as info:
    weights.load(_save(tmp_path, flat))
  message = str(info.value)
  assert (f": {count} tensor(s) holding NaN or inf values: bn1.bias (4 NaN of "
          "4), bn1.running_mean (4 NaN of 4), bn1.running_var (4 NaN of 4), "
          "bn1.weight (4 NaN of 4), conv1.weight (588 NaN of 588) and "
          f"{count - 5} more. The file is damaged") in message


def test_integer_tensors_are_refused_but_step_counters_dropped(tmp_path):
  flat = _fixture_dict()
  assert flat["bn1.num_batches_tracked"].dtype == np.int64  # As torchvision.
  flat["conv1.weight"] = flat["conv1.weight"].astype(np.int64)
  flat["layer1.0.bn2.running_mean"] = np.zeros(4, np.int32)
  path = _save(tmp_path, flat)
  with pytest.raises(weights.WeightsError) as info:
    weights.load(path)
  assert str(info.value).startswith(
      f"{path}: 2 tensor(s) not floating point: conv1.weight (int64), "
      "layer1.0.bn2.running_mean (int32). The file is damaged or was "
      "exported wrongly")
  loaded = weights.load(BOTTLENECK)  # Integer step counters: ignored.
  assert "bn1.num_batches_tracked" in loaded.info["ignored"]


def test_a_checkpoint_with_nan_is_refused(tmp_path, narrow):
  params, model_state = narrow
  params = {k: v for k, v in params.items() if k != "tgt_head"}
  model_state = jax.tree.map(np.array, model_state)
  model_state["batch_stats"]["encoder"]["bn1"]["var"][1] = np.nan
  entry = os.path.join(tmp_path, "cache", "abc123")
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(entry, "variables"),
               {"params": params, "model_state": model_state})
  with pytest.raises(weights.WeightsError,
                     match=r"variables: 1 tensor\(s\) holding NaN or inf "
                           r"values: batch_stats/encoder/bn1/var \(1 NaN of "
                           r"4\)"):
    weights.load(entry)


def test_bit_missing_keys_use_the_official_names(tmp_path):
  flat = {}
  width, classes = 32, 3
  flat["resnet/root_block/standardized_conv2d/kernel"] = np.zeros(
      (7, 7, 3, width), np.float32)
  cin = width
  for b in range(1, 5):
    mid = width * 2**(b - 1)
    prefix = f"resnet/block{b}/unit01"
    for part, (k, i, o) in {"a": (1, cin, mid), "b": (3, mid, mid),
                            "c": (1, mid, 4 * mid)}.items():
      flat[f"{prefix}/{part}/standardized_conv2d/kernel"] = np.zeros(
          (k, k, i, o), np.float32)
      flat[f"{prefix}/{part}/group_norm/gamma"] = np.ones(i, np.float32)
      flat[f"{prefix}/{part}/group_norm/beta"] = np.zeros(i, np.float32)
    flat[f"{prefix}/a/proj/standardized_conv2d/kernel"] = np.zeros(
        (1, 1, cin, 4 * mid), np.float32)
    cin = 4 * mid
  flat["resnet/group_norm/gamma"] = np.ones((1, 1, 1, cin), np.float32)
  flat["resnet/group_norm/beta"] = np.zeros((1, 1, 1, cin), np.float32)
  flat["resnet/head/conv2d/kernel"] = np.zeros((1, 1, cin, classes),
                                               np.float32)
  flat["resnet/head/conv2d/bias"] = np.zeros(classes, np.float32)
  loaded = weights.load(_save(tmp_path, flat, "bit.npz"))
  assert loaded.family == "bit_resnet"
  assert loaded.encoder_kwargs == {"stage_sizes": (1, 1, 1, 1), "width": 32}
  assert loaded.params["encoder"]["norm_pre_head"]["scale"].shape == (cin,)
  assert loaded.params["src_head"]["Dense_0"]["kernel"].shape == (cin, 3)
  assert loaded.params["encoder"]["block3_unit01"]["gn2"]["bias"].shape == (
      128,)
  del flat["resnet/block2/unit01/a/proj/standardized_conv2d/kernel"]
  del flat["resnet/block3/unit01/b/group_norm/beta"]
  path = _save(tmp_path, flat, "bit_broken.npz")
  with pytest.raises(weights.WeightsError,
                     match=r"BiT ResNet v2.*2 missing: "
                           r"resnet/block2/unit01/a/proj/standardized_conv2d/"
                           r"kernel, resnet/block3/unit01/b/group_norm/beta"):
    weights.load(path)


# ------------------------------------------------------ project checkpoints


@pytest.fixture(name="narrow")
def _narrow():
  """The bottleneck fixture as (params, model_state) with a target head."""
  loaded = weights.load(BOTTLENECK)
  params, model_state = _shapes_of(loaded)
  return loading.merge_variables(
      params, model_state, loaded.params, loaded.model_state,
      parts=("encoder", "src_head"))


def test_reads_a_runs_checkpoint_without_a_template(tmp_path, narrow):
  params, model_state = narrow
  state = train_state.create(params=params, model_state=model_state,
                             tx=optax.sgd(0.1, momentum=0.9),
                             rng=jax.random.key(0))
  workdir = os.path.join(tmp_path, "run")
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  best = jax.tree.map(lambda x: x * 0, (params, model_state))
  ckpt.save(7, state=state, best=best, host={"step": 7})
  ckpt.close()
  for path in (workdir, os.path.join(workdir, "checkpoints"),
               os.path.join(workdir, "checkpoints", "7"),
               os.path.join(workdir, "checkpoints", "7", "state")):
    loaded = weights.load(path)
    assert loaded.info["format"] == "orbax"
    assert loaded.family == "resnet_v1"
    assert loaded.encoder_kwargs == {"stage_sizes": (2, 1, 1, 1),
                                     "block": "bottleneck", "width": 4}
    assert loaded.source_head_classes == 7
    chex.assert_trees_all_equal(loaded.params, jax.device_get(params))
    chex.assert_trees_all_equal(loaded.model_state,
                                jax.device_get(model_state))
  best_loaded = weights.load(workdir, item="best")
  np.testing.assert_array_equal(
      best_loaded.params["encoder"]["conv1"]["kernel"], 0)
  # Directly mergeable, e.g. encoder only.
  merged, _ = loading.merge_variables(
      params, model_state, loaded.params, loaded.model_state,
      parts=("encoder",))
  chex.assert_trees_all_equal(merged["encoder"], jax.device_get(
      params["encoder"]))


def test_reads_a_pretraining_cache_entry(tmp_path, narrow):
  params, model_state = narrow
  params = {k: v for k, v in params.items() if k != "tgt_head"}
  entry = os.path.join(tmp_path, "cache", "abc123")
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(entry, "variables"),
               {"params": params, "model_state": model_state})
  for path in (entry, os.path.join(entry, "variables")):
    loaded = weights.load(path)
    assert "pretrain_cache" in loaded.info["description"]
    chex.assert_trees_all_equal(loaded.params, jax.device_get(params))
    assert loaded.family == "resnet_v1"


def test_a_directory_that_is_no_checkpoint(tmp_path):
  os.makedirs(os.path.join(tmp_path, "empty"))
  with pytest.raises(weights.WeightsError, match="not a checkpoint"):
    weights.load(os.path.join(tmp_path, "empty"))


def test_normalise():
  images = np.array([[[[0, 128, 255]]]], np.uint8)
  np.testing.assert_allclose(weights.normalise(images, "bit_r50x1"),
                             [[[[-1.0, 128 / 127.5 - 1, 1.0]]]], atol=1e-6)
  expected = (np.array([0, 128, 255]) / 255 - np.array(
      weights.IMAGENET_MEAN)) / np.array(weights.IMAGENET_STD)
  np.testing.assert_allclose(weights.normalise(images, "resnet50")[0, 0, 0],
                             expected, rtol=1e-6)
  assert weights.normalise(images, "resnet50").dtype == np.float32


