"""ImageNet ResNets: exact sizes, parity with torchvision and with BiT.

Fast tier: parameter counts (shapes only), the committed torchvision
fixtures (tests/fixtures/make_resnet_fixtures.py) through `weights.load` +
`loading.merge_variables` + our model, and a narrow BiT ResNet v2 written
with the official npz key names against a NumPy reference written here.
Full-size parity against torchvision runs only where torch is importable.
"""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2tl_jax import loading
from l2tl_jax import models
from l2tl_jax.families import bit as bit_family
from l2tl_jax.families import torchvision as tv_family
from l2tl_jax import weights

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "fixtures")
PARITY_ATOL = 1e-4


def _shapes(model, image_shape=(224, 224, 3)):
  return jax.eval_shape(
      lambda: models.init_variables(model, jax.random.key(0), image_shape))


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _logits(loaded, images, *, head_classes=None):
  """Loaded weights merged into a freshly initialised model, eval logits."""
  classes = head_classes or loaded.source_head_classes
  model = models.make_model(loaded.family, num_src_classes=classes,
                            encoder_kwargs=loaded.encoder_kwargs)
  params, model_state = _init(model, images.shape[1:])
  params, model_state = loading.merge_variables(
      params, model_state, loaded.params, loaded.model_state,
      parts=("encoder", "src_head"), source=loaded.info["path"])
  return np.asarray(_eval_logits(model, params, model_state, images))


def _init(model, image_shape, rng=None):
  """(params, model_state) of `model` without jax.random (its compilation
  dominates CPU test time): kernels He-normal from NumPy, BN/GN scales and
  variances 1, the rest 0. Enough wherever everything is then loaded."""
  rng = rng or np.random.default_rng(0)
  shapes = jax.eval_shape(lambda: models.init_variables(
      model, jax.random.key(0), tuple(image_shape)))

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if "kernel" in name:
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.normal(size=leaf.shape) * np.sqrt(2 / fan_in)).astype(
          leaf.dtype)
    ones = "scale" in name or "var" in name
    return np.full(leaf.shape, 1.0 if ones else 0.0, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _eval_logits(model, params, model_state, images):
  @jax.jit
  def forward(params, model_state, images):
    features, _ = models.apply_encoder(model, params, model_state, images,
                                       train=False)
    return models.apply_head(model, params, features, "src")

  return forward(params, model_state, jnp.asarray(images))


# ------------------------------------------------------------------- sizes


@pytest.mark.parametrize("name, expected, features", [
    ("resnet18", 11_689_512, 512),
    ("resnet34", 21_797_672, 512),
    ("resnet50", 25_557_032, 2048),
])
def test_torchvision_parameter_counts(name, expected, features):
  # torchvision's counts with the 1000-way fc; running stats are not params.
  params, model_state = _shapes(models.make_model(name, num_src_classes=1000))
  assert _count(params) == expected
  assert params["src_head"]["Dense_0"]["kernel"].shape == (features, 1000)
  # Running mean and var: one pair per BN scale/bias pair.
  bn = sum(_count(v) for k, v in loading.flatten(params["encoder"]).items()
           if k.endswith(("/scale", "/bias")))
  assert _count(model_state["batch_stats"]) == bn


def test_bit_r50x1_parameter_count_by_hand():
  # Same convolutions as ResNet-50 v1.5 (stride on the 3x3, projections at
  # each stage's first unit): its 25_557_032 less the BN scale/bias (26_560
  # channels, 2 each) ...
  convs_and_head = 25_557_032 - 2 * 26_560
  # ... plus GroupNorm scale/bias before each conv of a unit (input, mid,
  # mid) and the final one.
  channels = 0
  cin = 64
  for mid, units in zip((64, 128, 256, 512), (3, 4, 6, 3)):
    for _ in range(units):
      channels += cin + 2 * mid
      cin = 4 * mid
  channels += 2048
  params, model_state = _shapes(
      models.make_model("bit_r50x1", num_src_classes=1000))
  assert _count(params) == convs_and_head + 2 * channels == 25_549_352
  assert model_state == {}


def test_registry_and_feature_sizes_of_narrow_models():
  for name in ("resnet18", "resnet34", "resnet50", "resnet_v1", "bit_r50x1",
               "bit_resnet"):
    assert name in models.encoder_names()
  image = jnp.zeros((2, 40, 40, 3))
  for name, kwargs, features in [
      ("resnet18", {"width": 4}, 32),
      ("resnet50", {"width": 4}, 128),
      ("bit_r50x1", {"width": 32, "num_groups": 8}, 1024)]:
    encoder = models.make_encoder(name, **kwargs)
    out = jax.eval_shape(
        lambda e=encoder: e.init_with_output(jax.random.key(0), image)[0])
    chex.assert_shape(out, (2, features))
    assert out.dtype == jnp.float32


def test_bn_axis_name_is_set_for_torchvision_resnets():
  model = models.make_model("resnet50", num_tgt_classes=2, axis_name="batch")
  assert model.encoder.bn_axis_name == "batch"
  assert model.encoder.stage_sizes == (3, 4, 6, 3)


@pytest.mark.parametrize("block, last", [(tv_family.BasicBlock, "bn2"),
                                         (tv_family.Bottleneck, "bn3")])
def test_zero_init_residual_zeroes_the_last_bn_scale(block, last):
  x = jnp.ones((1, 8, 8, 4))
  key = jax.random.key(0, impl="unsafe_rbg")  # Compiles fast on CPU.
  for zero in (False, True):
    params = block(planes=4, zero_init_residual=zero).init(
        key, x, train=False)["params"]
    np.testing.assert_array_equal(params[last]["scale"], 0.0 if zero else 1.0)
    np.testing.assert_array_equal(params["bn1"]["scale"], 1.0)


def test_bfloat16_activations_keep_float32_params_and_stats():
  model = models.make_model(
      "resnet18", num_tgt_classes=3,
      encoder_kwargs={"width": 4, "dtype": jnp.bfloat16})
  shapes = jax.eval_shape(lambda: models.init_variables(
      model, jax.random.key(0), (32, 32, 3)))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))
  params, model_state = _init(model, (32, 32, 3))
  features, new_state = jax.jit(
      lambda p, s, x: models.apply_encoder(model, p, s, x, train=True))(
          params, model_state, jnp.ones((2, 32, 32, 3)))
  assert features.dtype == jnp.float32
  chex.assert_tree_all_finite(features)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new_state))


# ------------------------------------------------------- torchvision parity


@pytest.mark.parametrize("name, kind, width", [
    ("tv_basic", "basic", 4),
    ("tv_bottleneck", "bottleneck", 4),
])
def test_torchvision_fixture_parity(name, kind, width):
  loaded = weights.load(os.path.join(FIXTURES, f"{name}.safetensors"))
  assert loaded.family == "resnet_v1"
  assert loaded.encoder_kwargs == {"stage_sizes": (2, 1, 1, 1),
                                   "block": kind, "width": width}
  io = np.load(os.path.join(FIXTURES, f"{name}_io.npz"))
  logits = _logits(loaded, io["images"])
  chex.assert_trees_all_close(logits, io["logits"], atol=PARITY_ATOL, rtol=0)


# --------------------------------------------------------------- BiT parity


def _bit_npz(rng, *, width, stage_sizes, classes):
  """A random BiT ResNet v2 with the official npz key names."""
  out = {}

  def conv(key, k, cin, cout):
    out[f"{key}/standardized_conv2d/kernel"] = (
        rng.normal(0.3, 1.0, (k, k, cin, cout)).astype(np.float32))

  def norm(key, c):
    out[f"{key}/group_norm/gamma"] = rng.uniform(0.5, 1.5, c).astype(
        np.float32)
    out[f"{key}/group_norm/beta"] = rng.normal(0, 0.2, c).astype(np.float32)

  conv("resnet/root_block", 7, 3, width)
  cin = width
  for b, units in enumerate(stage_sizes, 1):
    mid = width * 2**(b - 1)
    for u in range(1, units + 1):
      prefix = f"resnet/block{b}/unit{u:02d}"
      norm(f"{prefix}/a", cin)
      if u == 1:
        conv(f"{prefix}/a/proj", 1, cin, 4 * mid)
      conv(f"{prefix}/a", 1, cin, mid)
      norm(f"{prefix}/b", mid)
      conv(f"{prefix}/b", 3, mid, mid)
      norm(f"{prefix}/c", mid)
      conv(f"{prefix}/c", 1, mid, 4 * mid)
      cin = 4 * mid
  norm("resnet", cin)
  out["resnet/head/conv2d/kernel"] = rng.normal(
      0, 0.1, (1, 1, cin, classes)).astype(np.float32)
  out["resnet/head/conv2d/bias"] = rng.normal(0, 0.1, classes).astype(
      np.float32)
  return out


def _np_conv(x, w, stride, pad):
  """NHWC x HWIO convolution with symmetric zero padding, float64."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  k = w.shape[0]
  h = (x.shape[1] - k) // stride + 1
  wd = (x.shape[2] - k) // stride + 1
  out = np.zeros((x.shape[0], h, wd, w.shape[-1]))
  for i in range(k):
    for j in range(k):
      patch = x[:, i:i + stride * (h - 1) + 1:stride,
                j:j + stride * (wd - 1) + 1:stride]
      out += patch @ w[i, j]
  return out


def _np_bit_forward(p, images, *, groups):
  """BiT ResNet v2 logits from the official names, in float64 NumPy."""
  p = {k: v.astype(np.float64) for k, v in p.items()}

  def ws_conv(x, key, stride=1, pad=0):
    w = p[f"{key}/standardized_conv2d/kernel"]
    mean = w.mean(axis=(0, 1, 2))
    var = w.var(axis=(0, 1, 2))
    return _np_conv(x, (w - mean) / np.sqrt(var + 1e-10), stride, pad)

  def gn_relu(x, key):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    g = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(
        g.var(axis=(1, 2, 4), keepdims=True) + 1e-5)
    x = (g.reshape(x.shape) * p[f"{key}/group_norm/gamma"]
         + p[f"{key}/group_norm/beta"])
    return np.maximum(x, 0)

  x = ws_conv(images.astype(np.float64), "resnet/root_block", 2, 3)
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # Zeros, as BiT.
  h, w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  x = np.max([x[:, i:i + 2 * h - 1:2, j:j + 2 * w - 1:2]
              for i in range(3) for j in range(3)], axis=0)
  blocks = sorted({k.split("/")[1] for k in p if k.startswith("resnet/block")})
  for b, block in enumerate(blocks):
    units = sorted({k.split("/")[2] for k in p
                    if k.startswith(f"resnet/{block}/")})
    for u, unit in enumerate(units):
      prefix = f"resnet/{block}/{unit}"
      stride = 2 if b > 0 and u == 0 else 1
      y = gn_relu(x, f"{prefix}/a")
      shortcut = (ws_conv(y, f"{prefix}/a/proj", stride)
                  if f"{prefix}/a/proj/standardized_conv2d/kernel" in p
                  else x)
      y = ws_conv(y, f"{prefix}/a")
      y = ws_conv(gn_relu(y, f"{prefix}/b"), f"{prefix}/b", stride, 1)
      y = ws_conv(gn_relu(y, f"{prefix}/c"), f"{prefix}/c")
      x = shortcut + y
  x = gn_relu(x, "resnet").mean(axis=(1, 2))
  return (x @ p["resnet/head/conv2d/kernel"][0, 0]
          + p["resnet/head/conv2d/bias"])


def test_bit_npz_parity_with_numpy_reference(tmp_path):
  rng = np.random.default_rng(0)
  npz = _bit_npz(rng, width=32, stage_sizes=(1, 2, 1, 1), classes=5)
  path = os.path.join(tmp_path, "BiT-tiny.npz")
  np.savez(path, **npz)
  loaded = weights.load(path)
  assert loaded.family == "bit_resnet"
  assert loaded.encoder_kwargs == {"stage_sizes": (1, 2, 1, 1), "width": 32}
  assert loaded.source_head_classes == 5
  assert loaded.model_state == {}
  # Every official key is mapped.
  assert sorted(m.file_key for m in loaded.info["mapping"]) == sorted(npz)
  # 8 groups here (4 channels per group at the first GroupNorm); BiT's 32
  # would need width >= 64 for the same coverage.
  images = rng.uniform(-1, 1, (2, 38, 38, 3)).astype(np.float32)
  model = models.make_model(
      loaded.family, num_src_classes=5,
      encoder_kwargs={**loaded.encoder_kwargs, "num_groups": 8})
  params, _ = _init(model, (38, 38, 3))
  params, _ = loading.merge_variables(
      params, {}, loaded.params, loaded.model_state,
      parts=("encoder", "src_head"))
  logits = np.asarray(_eval_logits(model, params, {}, images))
  expected = _np_bit_forward(npz, images, groups=8)
  assert np.abs(expected).max() > 0.1  # Not a trivially small output.
  chex.assert_trees_all_close(logits, expected.astype(np.float32),
                              atol=PARITY_ATOL, rtol=0)


def test_weight_standardisation_is_over_hwi():
  kernel = jax.random.normal(jax.random.key(0), (3, 3, 4, 5)) * 3 + 1
  std = bit_family.standardize_kernel(kernel)
  np.testing.assert_allclose(np.mean(std, axis=(0, 1, 2)), 0, atol=1e-6)
  np.testing.assert_allclose(np.std(std, axis=(0, 1, 2)), 1, atol=1e-5)


# ------------------------------------------- full size, only where torch is


def test_full_size_parity_with_torchvision(tmp_path):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  st_torch = pytest.importorskip("safetensors.torch")
  torch.manual_seed(0)
  generator = torch.Generator().manual_seed(0)
  images = torch.rand(2, 3, 224, 224, generator=generator) * 4 - 2
  for name in ("resnet18", "resnet50"):
    model = getattr(torchvision.models, name)()  # Random init.
    with torch.no_grad():
      for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
          c = m.num_features
          m.weight.copy_(0.5 + torch.rand(c, generator=generator))
          m.bias.copy_(0.2 * torch.randn(c, generator=generator))
          m.running_mean.copy_(0.2 * torch.randn(c, generator=generator))
          m.running_var.copy_(0.5 + torch.rand(c, generator=generator))
    model.eval()
    with torch.no_grad():
      expected = model(images).numpy()
    state = model.state_dict()
    pth = os.path.join(tmp_path, f"{name}.pth")
    torch.save(state, pth)
    safe = os.path.join(tmp_path, f"{name}.safetensors")
    st_torch.save_file({k: v.contiguous() for k, v in state.items()}, safe)
    nhwc = images.permute(0, 2, 3, 1).numpy()
    for path in (pth, safe):
      loaded = weights.load(path)
      assert loaded.family == name and loaded.encoder_kwargs == {}
      assert loaded.source_head_classes == 1000
      logits = _logits(loaded, nhwc)
      diff = float(np.abs(logits - expected).max())
      print(f"{name} {os.path.basename(path)}: max abs logit "
            f"{np.abs(expected).max():.3f}, max abs diff {diff:.2e}")
      assert diff < PARITY_ATOL * max(1.0, np.abs(expected).max())


def test_full_size_bit_parity_with_timm(tmp_path):
  # timm's ResNetV2 with its own BiT npz reader: an independent reading of
  # the official key names and of BiT's semantics (WS eps 1e-8 there).
  torch = pytest.importorskip("torch")
  pytest.importorskip("timm")
  from timm.models import resnetv2  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  npz = _bit_npz(rng, width=64, stage_sizes=(3, 4, 6, 3), classes=1000)
  path = os.path.join(tmp_path, "BiT-S-R50x1.npz")
  np.savez(path, **npz)
  model = resnetv2.resnetv2_50x1_bit(pretrained=False, num_classes=1000)
  resnetv2._load_weights(model, path)  # pylint: disable=protected-access
  model.eval()
  images = rng.uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    expected = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
  loaded = weights.load(path)
  assert loaded.family == "bit_r50x1" and loaded.encoder_kwargs == {}
  logits = _logits(loaded, images)
  diff = float(np.abs(logits - expected).max())
  print(f"bit_r50x1 vs timm: max abs logit {np.abs(expected).max():.3f}, "
        f"max abs diff {diff:.2e}")
  assert diff < PARITY_ATOL * max(1.0, np.abs(expected).max())
