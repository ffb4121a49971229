"""Encoders, heads and the registry: parameter counts worked out by hand."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2tl_jax import encoders
from l2tl_jax import models


def _variables(model, image_shape):
  """Shapes of (params, model_state), without running the initialisers."""
  return jax.eval_shape(
      lambda: models.init_variables(model, jax.random.key(0), image_shape))


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_registry_lists_the_encoders_and_rejects_unknown_names():
  names = models.encoder_names()
  assert {"lenet", "mlp", "resnet"} <= set(names)
  assert names == sorted(set(names))  # Sorted, each name once.
  with pytest.raises(ValueError, match="Unknown encoder 'vit'.*'lenet'"):
    models.make_encoder("vit")
  with pytest.raises(ValueError, match="Unknown encoder"):
    models.make_model("vit", num_tgt_classes=2)


def test_registering_a_name_twice_is_refused_and_keeps_the_first(monkeypatch):
  monkeypatch.setattr(encoders, "_REGISTRY", dict(encoders._REGISTRY))  # pylint: disable=protected-access

  class Other(nn.Module):

    @nn.compact
    def __call__(self, x, *, train=False):
      return x.reshape((x.shape[0], -1))

  with pytest.raises(ValueError, match="'mlp' is already registered"):
    models.register_encoder("mlp")(Other)
  assert isinstance(models.make_encoder("mlp"), models.MLP)
  # A new name plugs in: a flatten encoder of 2*3*1 = 6 features and a
  # 6 * 4 + 4 = 28 parameter target head.
  assert models.register_encoder("flatten")(Other) is Other
  assert "flatten" in models.encoder_names()
  params, _ = _variables(models.make_model("flatten", num_tgt_classes=4),
                         (2, 3, 1))
  assert _count(params) == 28


def test_lenet_reference_size():
  # 32x32x1 input; two 2x2 max pools leave 8x8x32 = 2048 features.
  expected = ((5 * 5 * 1 * 32 + 32)  # conv1: 832
              + (5 * 5 * 32 * 32 + 32)  # conv2: 25_632
              + (2048 * 512 + 512)  # fc1: 1_049_088
              + (512 * 128 + 128))  # fc2: 65_664
  assert expected == 1_141_216
  params, model_state = _variables(
      models.make_model("lenet", num_tgt_classes=5), (32, 32, 1))
  assert _count(params["encoder"]) == expected
  assert model_state == {}


def test_lenet_small_kwargs_and_28x28_rgb_input():
  # conv_features 8, hidden 32, features 16; 28x28x3 -> 14 -> 7: 7*7*8 = 392.
  expected = ((5 * 5 * 3 * 8 + 8)  # conv1: 608
              + (5 * 5 * 8 * 8 + 8)  # conv2: 1_608
              + (392 * 32 + 32)  # fc1: 12_576
              + (32 * 16 + 16))  # fc2: 528
  assert expected == 15_320
  model = models.make_model(
      "lenet", num_tgt_classes=5,
      encoder_kwargs={"conv_features": 8, "hidden": 32, "features": 16})
  params, _ = _variables(model, (28, 28, 3))
  assert _count(params["encoder"]) == expected


def test_mlp_sizes():
  # Default hidden (64, 32) on 8x8x1 = 64 inputs.
  params, _ = _variables(models.make_model("mlp", num_tgt_classes=2), (8, 8, 1))
  assert _count(params["encoder"]) == (64 * 64 + 64) + (64 * 32 + 32)  # 6_240
  # hidden (5,) on 2x3x1 = 6 inputs.
  model = models.make_model("mlp", num_tgt_classes=2,
                            encoder_kwargs={"hidden": (5,)})
  params, _ = _variables(model, (2, 3, 1))
  assert _count(params["encoder"]) == 6 * 5 + 5


def _block(c_in, c_out):
  """Basic block: two bias-free 3x3 convs, two batch norms (scale + bias),
  and a 1x1 projection with its norm when the shape changes."""
  n = 3 * 3 * c_in * c_out + 2 * c_out + 3 * 3 * c_out * c_out + 2 * c_out
  if c_in != c_out:
    n += c_in * c_out + 2 * c_out
  return n


def test_resnet20_size():
  # Stem 3x3x3x16 (no bias) + norm; 3 stages (16, 32, 64) of 3 blocks.
  stem = 3 * 3 * 3 * 16 + 2 * 16  # 464
  stage1 = 3 * _block(16, 16)  # 3 * 4_672
  stage2 = _block(16, 32) + 2 * _block(32, 32)  # 14_528 + 2 * 18_560
  stage3 = _block(32, 64) + 2 * _block(64, 64)  # 57_728 + 2 * 73_984
  assert (stem, stage1, stage2, stage3) == (464, 14_016, 51_648, 205_696)
  params, model_state = _variables(
      models.make_model("resnet", num_tgt_classes=10), (32, 32, 3))
  assert _count(params["encoder"]) == 271_824
  # One running mean and variance per normalised channel: as many numbers as
  # the norms' scales and biases, 2 * (16 + 6*16 + 7*32 + 7*64) = 1_568.
  assert list(model_state) == ["batch_stats"]
  assert _count(model_state["batch_stats"]) == 1_568


def test_resnet_small_kwargs():
  # widths (4, 8), one block per stage, 8x8x1 input.
  stem = 3 * 3 * 1 * 4 + 2 * 4  # 44
  # Block (4 -> 4): 144 + 8 + 144 + 8 = 304.
  # Block (4 -> 8): 288 + 16 + 576 + 16 + proj 32 + 16 = 944.
  assert (_block(4, 4), _block(4, 8)) == (304, 944)
  model = models.make_model(
      "resnet", num_tgt_classes=2,
      encoder_kwargs={"widths": (4, 8), "blocks_per_stage": 1})
  params, model_state = _variables(model, (8, 8, 1))
  assert _count(params["encoder"]) == stem + 304 + 944  # 1_292
  assert _count(model_state["batch_stats"]) == 2 * (4 + 2 * 4 + 3 * 8)  # 72


def test_heads_are_dense_layers_on_the_features():
  model = models.make_model("mlp", num_src_classes=10, num_tgt_classes=5,
                            encoder_kwargs={"hidden": (6,)})
  params, _ = _variables(model, (2, 2, 1))
  assert set(params) == {"encoder", "src_head", "tgt_head"}
  assert _count(params["src_head"]) == 6 * 10 + 10
  assert _count(params["tgt_head"]) == 6 * 5 + 5
  # Only the heads asked for exist.
  params, _ = _variables(models.make_model("mlp", num_src_classes=3), (2, 2, 1))
  assert set(params) == {"encoder", "src_head"}
  params, _ = _variables(models.make_model("mlp", num_tgt_classes=3), (2, 2, 1))
  assert set(params) == {"encoder", "tgt_head"}


def test_bad_class_counts_and_head_names():
  with pytest.raises(ValueError, match="at least one head"):
    models.make_model("mlp")
  with pytest.raises(ValueError, match=">= 0"):
    models.make_model("mlp", num_src_classes=-1, num_tgt_classes=2)
  model = models.make_model("mlp", num_tgt_classes=2)
  params, _ = _variables(model, (2, 2, 1))
  with pytest.raises(ValueError, match="head must be one of"):
    jax.eval_shape(
        lambda p: models.apply_head(model, p, jnp.zeros((1, 32)), "val"),
        params)


@pytest.mark.parametrize(
    "encoder, kwargs, image_shape, features",
    [
        ("lenet", {}, (32, 32, 1), 128),
        ("mlp", {"hidden": (7, 5)}, (4, 4, 3), 5),
        ("resnet", {}, (32, 32, 3), 64),
    ],
)
def test_feature_and_logit_shapes(encoder, kwargs, image_shape, features):
  model = models.make_model(encoder, num_src_classes=3, num_tgt_classes=2,
                            encoder_kwargs=kwargs)
  params, model_state = _variables(model, image_shape)

  def forward(params, model_state, images):
    feats, new_state = models.apply_encoder(model, params, model_state,
                                            images, train=True)
    return (feats, new_state, models.apply_head(model, params, feats, "src"),
            models.apply_head(model, params, feats, "tgt"))

  feats, new_state, src_logits, tgt_logits = jax.eval_shape(
      forward, params, model_state,
      jax.ShapeDtypeStruct((4, *image_shape), jnp.float32))
  chex.assert_shape(feats, (4, features))
  chex.assert_trees_all_equal_shapes(new_state, model_state)
  chex.assert_shape(src_logits, (4, 3))
  chex.assert_shape(tgt_logits, (4, 2))


def test_resnet_batch_statistics_update_only_in_training():
  model = models.make_model(
      "resnet", num_tgt_classes=2,
      encoder_kwargs={"widths": (4,), "blocks_per_stage": 1})
  params, model_state = models.init_variables(model, jax.random.key(0),
                                              (4, 4, 1))
  images = jnp.ones((2, 4, 4, 1))
  _, same = models.apply_encoder(model, params, model_state, images,
                                 train=False)
  chex.assert_trees_all_equal(same, model_state)
  _, updated = models.apply_encoder(model, params, model_state, images,
                                    train=True)
  # On a constant image of ones, the 'SAME' 3x3 stem conv at a pixel sums the
  # kernel taps that fall inside the 4x4 image. Tap row (or column) offset
  # -1, 0, +1 is inside for 3, 4, 3 of the 4 rows, so the batch mean of
  # channel c is sum_ab k[a, b, 0, c] * r_a * r_b / 16 with r = (3, 4, 3);
  # the running mean moves from 0 to (1 - momentum 0.9) * that.
  kernel = np.asarray(params["encoder"]["stem"]["kernel"])[:, :, 0, :]
  r = np.array([3.0, 4.0, 3.0])
  batch_mean = np.einsum("abc,a,b->c", kernel, r, r) / 16
  chex.assert_trees_all_close(
      updated["batch_stats"]["encoder"]["BatchNorm_0"]["mean"],
      0.1 * batch_mean, rtol=1e-5, atol=1e-7)


def test_axis_name_reaches_only_encoders_with_batch_norm():
  resnet = models.make_model("resnet", num_tgt_classes=2, axis_name="batch")
  assert resnet.encoder.bn_axis_name == "batch"
  explicit = models.make_model("resnet", num_tgt_classes=2, axis_name="batch",
                               encoder_kwargs={"bn_axis_name": "devices"})
  assert explicit.encoder.bn_axis_name == "devices"
  lenet = models.make_model("lenet", num_tgt_classes=2, axis_name="batch")
  assert not hasattr(lenet.encoder, "bn_axis_name")


def test_the_encoders_declare_the_contract():
  for name in models.encoder_names():
    entry = models.get_encoder(name)
    assert entry.dtype, name  # Every encoder here takes dtype.
    assert entry.batch_norm == ("bn_axis_name" in entry.fields), name
    assert entry.pool_choice == (name == "lenet"), name
  assert models.get_encoder("resnet").batch_norm
  assert models.get_encoder("resnet50").batch_norm
  assert not models.get_encoder("bit_r50x1").batch_norm


def test_an_encoder_naming_its_batch_norm_axis_otherwise_is_refused(
    monkeypatch):
  monkeypatch.setattr(encoders, "_REGISTRY", dict(encoders._REGISTRY))  # pylint: disable=protected-access

  class OwnAxis(nn.Module):
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, *, train=False):
      x = nn.BatchNorm(use_running_average=not train,
                       axis_name=self.axis_name)(x)
      return x.reshape((x.shape[0], -1))

  # Declared or not, make_model could not set 'axis_name': refused at once.
  for declared in (False, True):
    with pytest.raises(TypeError, match="'axis_name'.*must be called "
                       "'bn_axis_name'.*averaged per device"):
      models.register_encoder("own_axis", batch_norm=declared)(OwnAxis)
  assert "own_axis" not in models.encoder_names()

  class Undeclared(nn.Module):
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, *, train=False):
      return x.reshape((x.shape[0], -1))

  with pytest.raises(TypeError, match="does not declare batch_norm=True"):
    models.register_encoder("undeclared")(Undeclared)
  with pytest.raises(TypeError, match="declares pool_choice=True but takes "
                     "no 'fast_pool'"):
    models.register_encoder("no_pool", pool_choice=True)(Undeclared)
  with pytest.raises(TypeError, match="declares batch_norm=True but takes "
                     "no 'bn_axis_name'"):
    models.register_encoder("no_axis", batch_norm=True)(models.MLP)
  # Declared: make_model gives it the pmap axis.
  models.register_encoder("declared", batch_norm=True)(Undeclared)
  model = models.make_model("declared", num_tgt_classes=2, axis_name="batch")
  assert model.encoder.bn_axis_name == "batch"


def test_small_encoders_compute_in_bfloat16_with_float32_params():
  image = jnp.zeros((2, 8, 8, 1))
  for name, kwargs in (("lenet", {"hidden": 8, "features": 4}),
                       ("mlp", {}), ("resnet", {"widths": (4, 8)})):
    encoder = models.make_encoder(name, dtype=jnp.bfloat16, **kwargs)
    out, variables = jax.eval_shape(
        lambda e=encoder: e.init_with_output(jax.random.key(0), image))
    assert out.dtype == jnp.float32, name
    assert all(x.dtype == jnp.float32
               for x in jax.tree.leaves(variables)), name

