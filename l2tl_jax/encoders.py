"""The encoder registry and the contract every encoder keeps.

An encoder is a Linen module registered under a name:

  @encoders.register_encoder("name", batch_norm=True)
  class MyEncoder(nn.Module):
    width: int = 64
    bn_axis_name: str | None = None  # Declared by batch_norm=True.
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train=False):  # [B, H, W, C] -> [B, F] float32
      ...

The contract, checked when the encoder registers:

* It is called as `encoder(images, train=...)` and returns float32 features
  [B, F]; `train` selects batch statistics (and dropout, were there any).
* `dtype`: the activations' and matmuls' dtype (e.g. bfloat16); parameters
  stay float32. Every encoder of this project takes it; one that does not
  computes in float32 only, and `config.model.dtype` other than float32 is
  refused for it.
* `batch_norm=True` declares batch statistics, kept in the 'batch_stats'
  collection. Such an encoder takes `bn_axis_name`, the device axis its
  statistics average over, which `models.make_model` sets under pmap. An
  encoder that names that axis otherwise (a field with 'axis' in its name)
  is refused here: under pmap it would average statistics per device,
  silently.
* `pool_choice=True` declares LeNet's choice of max pool: the encoder takes
  `fast_pool` (see `families.small.LeNet`), which the step factories set to
  the fast pool where only first derivatives are taken.

Declarations and constructor fields must agree; a mismatch is a TypeError at
import time, never a silent fallback at run time. The registry holds no
model code: `l2tl_jax.models` and the family modules (`l2tl_jax.families`)
import it, it imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from typing import Any

import flax.linen as nn

# The constructor fields the contract names.
DTYPE = "dtype"
BN_AXIS_NAME = "bn_axis_name"
FAST_POOL = "fast_pool"
# Fields every Linen module has; not encoder arguments.
_MODULE_FIELDS = ("parent", "name")


@dataclasses.dataclass(frozen=True)
class Encoder:
  """One registered encoder.

  Attributes:
    name: its registered name ('lenet', 'resnet50', ...).
    module: the Linen module class (or factory) that builds it.
    fields: its constructor fields, as the dataclass lists them (with
      Linen's 'parent' and 'name').
    defaults: {field: default} of the fields that have one.
    dtype: takes `dtype` (reduced-precision activations).
    batch_norm: keeps batch statistics and takes `bn_axis_name`.
    pool_choice: takes `fast_pool` (LeNet's choice of max pool).
  """

  name: str
  module: Any
  fields: tuple[str, ...]
  defaults: Mapping[str, Any]
  dtype: bool
  batch_norm: bool
  pool_choice: bool


_REGISTRY: dict[str, Encoder] = {}


def _contract(name: str, module: Any, *, batch_norm: bool,
              pool_choice: bool) -> Encoder:
  """The registry entry of `module`, or a TypeError naming what breaks the
  contract."""
  dataclass_fields = getattr(module, "__dataclass_fields__", {})
  fields = tuple(dataclass_fields)
  arguments = [f for f in fields if f not in _MODULE_FIELDS]
  problems = []
  has_axis = BN_AXIS_NAME in arguments
  other_axes = [f for f in arguments if "axis" in f and f != BN_AXIS_NAME]
  if other_axes:
    problems.append(
        f"it names a device axis {', '.join(repr(f) for f in other_axes)}; "
        f"the batch-norm axis must be called {BN_AXIS_NAME!r} (with "
        "batch_norm=True), or make_model cannot set it and batch statistics "
        "are averaged per device under pmap")
  if batch_norm and not has_axis:
    problems.append(f"it declares batch_norm=True but takes no "
                    f"{BN_AXIS_NAME!r} field (the device axis its batch "
                    "statistics average over)")
  if has_axis and not batch_norm:
    problems.append(f"it takes {BN_AXIS_NAME!r} but does not declare "
                    "batch_norm=True")
  has_pool = FAST_POOL in arguments
  if pool_choice != has_pool:
    problems.append(
        f"it declares pool_choice=True but takes no {FAST_POOL!r} field"
        if pool_choice else
        f"it takes {FAST_POOL!r} but does not declare pool_choice=True")
  if problems:
    raise TypeError(f"Encoder {name!r} ({getattr(module, '__name__', module)})"
                    " breaks the encoder contract (l2tl_jax.encoders): "
                    + "; ".join(problems) + ".")
  defaults = {k: f.default for k, f in dataclass_fields.items()
              if f.default is not dataclasses.MISSING}
  return Encoder(name=name, module=module, fields=fields, defaults=defaults,
                 dtype=DTYPE in arguments, batch_norm=batch_norm,
                 pool_choice=pool_choice)


def register_encoder(name: str, *, batch_norm: bool = False,
                     pool_choice: bool = False):
  """Class decorator adding an encoder to the registry under `name`.

  Args:
    name: the name `config.model.encoder` selects it by.
    batch_norm: it keeps batch statistics and takes `bn_axis_name`.
    pool_choice: it takes `fast_pool` (LeNet's choice of max pool).

  Returns:
    The decorator; it returns the class unchanged.

  Raises:
    ValueError: `name` is already registered (the first one is kept).
    TypeError: the class breaks the contract (module docstring).
  """

  def wrap(module):
    if name in _REGISTRY:
      raise ValueError(f"Encoder {name!r} is already registered.")
    _REGISTRY[name] = _contract(name, module, batch_norm=batch_norm,
                                pool_choice=pool_choice)
    return module

  return wrap


def names() -> list[str]:
  """Registered encoder names, sorted."""
  return sorted(_REGISTRY)


def get(name: str) -> Encoder:
  """The registered encoder `name`.

  Raises:
    ValueError: for an unknown name, listing the known ones.
  """
  if name not in _REGISTRY:
    raise ValueError(
        f"Unknown encoder {name!r}; known encoders: {names()}. "
        "Register new ones with @l2tl_jax.models.register_encoder."
    )
  return _REGISTRY[name]


def find(name: str) -> Encoder | None:
  """The registered encoder `name`, or None."""
  return _REGISTRY.get(name)


def make(name: str, **kwargs) -> nn.Module:
  """Builds the encoder registered as `name` with constructor `kwargs`.

  Raises:
    ValueError: for an unknown name, listing the known ones.
  """
  return get(name).module(**kwargs)
