"""Encoders, classifier heads and the two-headed transfer model (Flax Linen).

The transfer model is one encoder shared by a source head and a target head:

  params = {'encoder': ..., 'src_head': ..., 'tgt_head': ...}

Either head may be absent (``num_src_classes=0`` for scratch / fine-tuning,
``num_tgt_classes=0`` for source pre-training). Encoders are looked up by name
in a registry so new architectures plug in without touching the train steps.
Encoders take ``train`` so that ones with batch statistics or dropout can use
it; non-parameter collections (e.g. ``batch_stats``) travel in the train state
as ``model_state``.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from l2tl_jax import pooling

ModuleDef = Any

_ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str):
  """Class decorator adding an encoder factory to the registry under `name`."""

  def wrap(factory):
    if name in _ENCODERS:
      raise ValueError(f"Encoder {name!r} is already registered.")
    _ENCODERS[name] = factory
    return factory

  return wrap


def encoder_names() -> list[str]:
  """Names accepted by `make_encoder`."""
  return sorted(_ENCODERS)


def encoder_fields(name: str) -> tuple[str, ...]:
  """The constructor fields of the encoder registered as `name`."""
  return tuple(getattr(_ENCODERS.get(name), "__dataclass_fields__", {}))


def encoder_defaults(name: str) -> dict[str, Any]:
  """Default values of the encoder's constructor fields that have one."""
  fields = getattr(_ENCODERS.get(name), "__dataclass_fields__", {})
  return {k: f.default for k, f in fields.items()
          if f.default is not dataclasses.MISSING}


def make_encoder(name: str, **kwargs) -> nn.Module:
  """Builds the encoder registered as `name`.

  Raises:
    ValueError: for an unknown name, listing the known ones.
  """
  if name not in _ENCODERS:
    raise ValueError(
        f"Unknown encoder {name!r}; known encoders: {encoder_names()}. "
        "Register new ones with @l2tl_jax.models.register_encoder."
    )
  return _ENCODERS[name](**kwargs)


@register_encoder("lenet")
class LeNet(nn.Module):
  """The reference's LeNet-like encoder.

  conv 5x5x32 same + ReLU, maxpool 2; conv 5x5x32 same + ReLU, maxpool 2;
  flatten; dense 512 ReLU; dense 128 ReLU. Glorot-uniform kernels, zero
  biases, no dropout (the reference's dropout calls are no-ops).

  Attributes:
    features: output features.
    hidden: width of the first dense layer.
    conv_features: channels of both convolutions.
    fast_pool: max pool through `pooling.max_pool`, whose backward is about
      20x faster on XLA:CPU (the batch-128 step about 2x). Its values and first derivatives equal flax's
      exactly; second-order derivatives (the meta-gradient estimator) agree
      only to float rounding, so it is off by default, keeping results
      identical to earlier runs.
  """

  features: int = 128
  hidden: int = 512
  conv_features: int = 32
  fast_pool: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Maps images [B, H, W, C] to features [B, features]."""
    del train  # No train-dependent layers.
    dense = functools.partial(
        nn.Dense, kernel_init=nn.initializers.glorot_uniform()
    )
    conv = functools.partial(
        nn.Conv,
        kernel_size=(5, 5),
        padding="SAME",
        kernel_init=nn.initializers.glorot_uniform(),
    )
    pool = (functools.partial(pooling.max_pool, window=(2, 2))
            if self.fast_pool
            else functools.partial(nn.max_pool, window_shape=(2, 2),
                                   strides=(2, 2)))
    x = nn.relu(conv(self.conv_features, name="conv1")(x))
    x = pool(x)
    x = nn.relu(conv(self.conv_features, name="conv2")(x))
    x = pool(x)
    x = x.reshape((x.shape[0], -1))  # [B, H/4 * W/4 * conv_features]
    x = nn.relu(dense(self.hidden, name="fc1")(x))
    return nn.relu(dense(self.features, name="fc2")(x))


@register_encoder("mlp")
class MLP(nn.Module):
  """Flatten then ReLU dense layers: for small inputs and quick tests."""

  hidden: tuple[int, ...] = (64, 32)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Maps inputs [B, ...] to features [B, hidden[-1]]."""
    del train
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return x


class ResNetBlock(nn.Module):
  """Basic residual block (two 3x3 convolutions)."""

  filters: int
  strides: int = 1
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    norm = functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=0.9,
        axis_name=self.bn_axis_name,
    )
    residual = x
    y = nn.Conv(self.filters, (3, 3), self.strides, use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.filters, (3, 3), use_bias=False)(y)
    y = norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = nn.Conv(
          self.filters, (1, 1), self.strides, use_bias=False, name="proj"
      )(residual)
      residual = norm(name="proj_norm")(residual)
    return nn.relu(residual + y)


@register_encoder("resnet")
class ResNet(nn.Module):
  """A small CIFAR-style ResNet with batch norm (ResNet-20 by default).

  Stage widths `widths`, `blocks_per_stage` basic blocks each, global average
  pooling to a [B, widths[-1]] feature. Under `jax.pmap`, set `bn_axis_name`
  to the pmap axis so batch statistics are global (as under a mesh).
  """

  widths: tuple[int, ...] = (16, 32, 64)
  blocks_per_stage: int = 3
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Maps images [B, H, W, C] to features [B, widths[-1]]."""
    x = nn.Conv(self.widths[0], (3, 3), use_bias=False, name="stem")(x)
    x = nn.relu(
        nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            axis_name=self.bn_axis_name,
        )(x)
    )
    for stage, filters in enumerate(self.widths):
      for block in range(self.blocks_per_stage):
        strides = 2 if stage > 0 and block == 0 else 1
        x = ResNetBlock(filters, strides, self.bn_axis_name)(x, train=train)
    return jnp.mean(x, axis=(1, 2))


class Head(nn.Module):
  """Linear classifier head; kernel ~ N(0, 0.05^2), zero bias (reference)."""

  num_classes: int

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    """Maps features [B, F] to logits [B, num_classes]."""
    return nn.Dense(
        self.num_classes, kernel_init=nn.initializers.normal(stddev=0.05)
    )(features)


HEADS = ("src", "tgt")


class TransferModel(nn.Module):
  """One encoder with an optional source head and an optional target head."""

  encoder: ModuleDef
  num_src_classes: int = 0
  num_tgt_classes: int = 0

  def setup(self):
    if self.num_src_classes:
      self.src_head = Head(self.num_src_classes)
    if self.num_tgt_classes:
      self.tgt_head = Head(self.num_tgt_classes)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Encodes images [B, H, W, C] into features [B, F]."""
    return self.encoder(x, train=train)

  def classify(self, features: jax.Array, head: str) -> jax.Array:
    """Applies head 'src' or 'tgt' to features [B, F] -> logits [B, classes]."""
    if head == "src":
      return self.src_head(features)
    if head == "tgt":
      return self.tgt_head(features)
    raise ValueError(f"head must be one of {HEADS}, got {head!r}")

  def init_all(self, x: jax.Array) -> dict[str, jax.Array]:
    """Touches every submodule; used only by `init_variables`."""
    features = self(x, train=False)
    logits = {}
    if self.num_src_classes:
      logits["src"] = self.src_head(features)
    if self.num_tgt_classes:
      logits["tgt"] = self.tgt_head(features)
    return logits


def make_model(
    encoder: str,
    *,
    num_src_classes: int = 0,
    num_tgt_classes: int = 0,
    encoder_kwargs: dict[str, Any] | None = None,
    axis_name: str | None = None,
) -> TransferModel:
  """Builds a `TransferModel` around the registered encoder `encoder`.

  Args:
    encoder: registered encoder name.
    num_src_classes: source head size (0: no source head).
    num_tgt_classes: target head size (0: no target head).
    encoder_kwargs: encoder constructor arguments.
    axis_name: the pmap axis, given to encoders with batch statistics
      (a `bn_axis_name` field) so that they average over all devices.

  Returns:
    The model.
  """
  if num_src_classes < 0 or num_tgt_classes < 0:
    raise ValueError("Class counts must be >= 0.")
  if not (num_src_classes or num_tgt_classes):
    raise ValueError("A model needs at least one head (source or target).")
  kwargs = dict(encoder_kwargs or {})
  if axis_name is not None and encoder in _ENCODERS:
    fields = getattr(_ENCODERS[encoder], "__dataclass_fields__", {})
    if "bn_axis_name" in fields:
      kwargs.setdefault("bn_axis_name", axis_name)
  return TransferModel(
      encoder=make_encoder(encoder, **kwargs),
      num_src_classes=num_src_classes,
      num_tgt_classes=num_tgt_classes,
  )


def init_variables(
    model: TransferModel, rng: jax.Array, image_shape: tuple[int, ...]
) -> tuple[Any, Any]:
  """Initialises a model.

  Args:
    model: the transfer model.
    rng: PRNG key.
    image_shape: one image's shape (H, W, C).

  Returns:
    (params, model_state): the 'params' collection and a dict of the other
    collections (empty for encoders without batch statistics).
  """
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  variables = model.init(rng, dummy, method=TransferModel.init_all)
  variables = dict(variables)
  params = variables.pop("params")
  return params, variables


def apply_encoder(
    model: TransferModel,
    params: Any,
    model_state: Any,
    images: jax.Array,
    *,
    train: bool,
) -> tuple[jax.Array, Any]:
  """Runs the encoder.

  Args:
    model: the transfer model.
    params: its 'params' collection.
    model_state: dict of non-param collections (may be empty).
    images: [B, H, W, C].
    train: training mode (updates batch statistics when the encoder has them).

  Returns:
    (features [B, F], new model_state).
  """
  variables = {"params": params, **model_state}
  if train and model_state:
    features, updates = model.apply(
        variables, images, train=True, mutable=list(model_state)
    )
    return features, {**model_state, **updates}
  return model.apply(variables, images, train=train), model_state


def apply_head(
    model: TransferModel, params: Any, features: jax.Array, head: str
) -> jax.Array:
  """Applies head 'src' or 'tgt' to features [B, F] -> logits [B, classes]."""
  return model.apply(
      {"params": params}, features, head, method=TransferModel.classify
  )


# The ImageNet ResNets (resnet18/34/50, bit_r50x1, ...) register on import.
from l2tl_jax import resnets  # noqa: E402,F401  pylint: disable=unused-import
