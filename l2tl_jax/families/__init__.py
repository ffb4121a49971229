"""Encoders by family, one module each; importing this package registers them.

  torchvision  ImageNet ResNets v1.5 (resnet18/34/50, resnet_v1) and the key
               map of torchvision / timm state dicts
  bit          BiT ResNets v2 (bit_r50x1, bit_resnet) and BiT's npz keys
  small        LeNet, MLP and the CIFAR ResNet, trained from scratch here

A family of published weights (`FAMILIES`) keeps together its architecture,
its file key map, how its files and this project's checkpoints of it are
recognised, and the preprocessing its weights expect (`base.WeightFamily`).
`family_of` is the one rule from a family or encoder name to its family.

A new weight family: a module beside these ending with its `FAMILY`, and an
entry of `FAMILIES`. A new encoder: a Linen module registered with
`@l2tl_jax.encoders.register_encoder`, in its family's module.
"""

from __future__ import annotations

from l2tl_jax.families import bit
from l2tl_jax.families import small
from l2tl_jax.families import torchvision
from l2tl_jax.families.base import WeightFamily

# The families of published weights, in the order files are recognised.
FAMILIES: tuple[WeightFamily, ...] = (torchvision.FAMILY, bit.FAMILY)


def family_of(name: str | None) -> WeightFamily | None:
  """The weight family of a family or encoder name.

  Args:
    name: 'torchvision', 'timm', a torchvision encoder ('resnet50', ...),
      'bit' or any name starting with it ('bit_r50x1', ...), a
      `weights.Loaded.family`; or anything else.

  Returns:
    Its `WeightFamily`; None for other names (the small encoders, None).
  """
  if not isinstance(name, str):
    return None
  for family in FAMILIES:
    if family.matches(name):
      return family
  return None


def known_names() -> tuple[str, ...]:
  """The names of every family, for messages (`family_of` may know more)."""
  return tuple(n for family in FAMILIES for n in family.names)


__all__ = ["FAMILIES", "WeightFamily", "bit", "family_of", "known_names",
           "small", "torchvision"]
