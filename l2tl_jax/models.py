"""Classifier heads and the two-headed transfer model (Flax Linen).

The transfer model is one encoder shared by a source head and a target head:

  params = {'encoder': ..., 'src_head': ..., 'tgt_head': ...}

Either head may be absent (``num_src_classes=0`` for scratch / fine-tuning,
``num_tgt_classes=0`` for source pre-training). Encoders are looked up by name
in a registry (`l2tl_jax.encoders`, which also writes down the contract every
encoder keeps) so new architectures plug in without touching the train steps;
they live with their weight family in `l2tl_jax.families`, imported here so
that every encoder is registered once `models` is imported. Encoders take
``train`` so that ones with batch statistics or dropout can use it;
non-parameter collections (e.g. ``batch_stats``) travel in the train state as
``model_state``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from l2tl_jax import encoders
from l2tl_jax import families  # noqa: F401  Registers every encoder.
from l2tl_jax.families.small import LeNet, MLP, ResNet, ResNetBlock

ModuleDef = Any

# The registry, under the names callers use.
register_encoder = encoders.register_encoder
encoder_names = encoders.names
make_encoder = encoders.make
get_encoder = encoders.get
find_encoder = encoders.find


def encoder_fields(name: str) -> tuple[str, ...]:
  """The constructor fields of the encoder registered as `name` (with
  Linen's 'parent' and 'name'); () for an unknown name."""
  entry = encoders.find(name)
  return () if entry is None else entry.fields


def encoder_defaults(name: str) -> dict[str, Any]:
  """Default values of the encoder's constructor fields that have one."""
  entry = encoders.find(name)
  return {} if entry is None else dict(entry.defaults)


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
    axis_name: the pmap axis, given as `bn_axis_name` to encoders that
      declare batch statistics (`encoders.register_encoder(batch_norm=True)`)
      so that they average over all devices.

  Returns:
    The model.
  """
  if num_src_classes < 0 or num_tgt_classes < 0:
    raise ValueError("Class counts must be >= 0.")
  if not (num_src_classes or num_tgt_classes):
    raise ValueError("A model needs at least one head (source or target).")
  kwargs = dict(encoder_kwargs or {})
  entry = encoders.find(encoder)
  if axis_name is not None and entry is not None and entry.batch_norm:
    kwargs.setdefault(encoders.BN_AXIS_NAME, axis_name)
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
