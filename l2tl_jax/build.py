"""One construction path from a RunSpec to the objects a run steps.

Training (`train`), source pre-training (`pretrain`), the benchmarks, the
policy study and the tests build models, optimisers, train states and
compiled steps here and nowhere else, from the pieces of a
`l2tl_jax.spec.RunSpec`:

  make_model / model_tx / policy_tx       spec pieces -> modules, optimisers
  joint_parts / supervised_parts          objects -> (state, compiled step)
  target_stage / source_stage             RunSpec -> `Parts` of a run
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from l2tl_jax import estimators
from l2tl_jax import methods as methods_lib
from l2tl_jax import models
from l2tl_jax import optim
from l2tl_jax import parallel
from l2tl_jax import policy as policy_lib
from l2tl_jax import steps
from l2tl_jax import train_state

if TYPE_CHECKING:  # The spec reads configs; the benches build without them.
  from l2tl_jax import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class Shapes:
  """What model construction needs to know about a task."""

  image_shape: tuple[int, ...]
  num_src_classes: int
  num_tgt_classes: int

  @classmethod
  def of(cls, task: Any) -> "Shapes":
    """Of a `data.TransferTask` (or anything with the same attributes)."""
    return cls(tuple(task.image_shape), int(task.num_src_classes),
               int(task.num_tgt_classes))


class Parts(NamedTuple):
  """What a run steps: model, optimisers, options, state, compiled steps."""

  model: models.TransferModel
  tx: optax.GradientTransformation
  policy_tx: optax.GradientTransformation | None
  options: steps.L2TLOptions | None
  state: train_state.TrainState
  train_step: steps.StepFn
  eval_step: Any


DTYPES = ("float32", "bfloat16")


def make_model(model: spec_lib.ModelSpec, *, heads: tuple[str, ...],
               shapes: Shapes, axis_name: str | None = None
               ) -> models.TransferModel:
  """The spec's encoder with the given heads ('src_head', 'tgt_head').

  A dtype other than float32 becomes the encoder's `dtype` (activations and
  matmuls; params, optimiser state, heads, losses and softmax stay
  float32).

  Raises:
    ValueError: a reduced precision for an encoder that takes no dtype.
  """
  kwargs = model.kwargs()
  if model.dtype != "float32":
    if not models.get_encoder(model.encoder).dtype:
      raise ValueError(
          f"config.model.dtype={model.dtype!r} needs an encoder with a dtype "
          f"field (the ImageNet ResNets); {model.encoder!r} computes in "
          "float32 only.")
    kwargs.setdefault("dtype", getattr(jnp, model.dtype))
  return models.make_model(
      model.encoder,
      num_src_classes=shapes.num_src_classes if "src_head" in heads else 0,
      num_tgt_classes=shapes.num_tgt_classes if "tgt_head" in heads else 0,
      encoder_kwargs=kwargs,
      axis_name=axis_name,
  )


def model_tx(stage: spec_lib.StageSpec) -> optax.GradientTransformation:
  """Nesterov SGD of the target stage or of pre-training."""
  return optim.momentum_sgd(stage.lr, boundaries=stage.lr_boundaries,
                            scales=stage.lr_scales, momentum=stage.momentum)


def policy_tx(policy: spec_lib.PolicySpec) -> optax.GradientTransformation:
  """The policy's Adam with its piecewise rate."""
  return optim.adam(policy.lr, boundaries=policy.lr_boundaries,
                    scales=policy.lr_scales)


def joint_parts(
    *,
    model: models.TransferModel,
    tx: optax.GradientTransformation,
    options: steps.L2TLOptions,
    params: Any,
    model_state: Any,
    rng: jax.Array,
    par: parallel.Parallelism,
    policy_tx: optax.GradientTransformation | None = None,
    policy_params: Any = None,
) -> tuple[train_state.TrainState, steps.StepFn]:
  """Placed train state and compiled L2TL step.

  Args:
    model: transfer model with both heads.
    tx: model optimiser.
    options: the step's options.
    params: initial model params.
    model_state: initial non-param collections.
    rng: typed key of the state (steps fold in the step number).
    par: compilation and placement.
    policy_tx: policy optimiser, when `options` learn something.
    policy_params: initial policy params, with `policy_tx`.

  Returns:
    (state placed by `par`, compiled step).
  """
  state = train_state.create(
      params=params, model_state=model_state, tx=tx, rng=rng,
      policy_params=policy_params, policy_tx=policy_tx,
      estimator_state=steps.init_estimator_state(options,
                                                 model.num_src_classes))
  step = steps.make_l2tl_step(model=model, tx=tx, policy_tx=policy_tx,
                              options=options, parallelism=par)
  return par.put_replicated(state), step


def supervised_parts(
    *,
    model: models.TransferModel,
    tx: optax.GradientTransformation,
    head: str,
    weight_decay: float,
    decay_set: str,  # pylint: disable=redefined-outer-name
    params: Any,
    model_state: Any,
    rng: jax.Array,
    par: parallel.Parallelism,
    bn_mode: str = "joint",
) -> tuple[train_state.TrainState, steps.StepFn]:
  """Placed train state and compiled supervised step of one head."""
  state = train_state.create(params=params, model_state=model_state, tx=tx,
                             rng=rng)
  step = steps.make_supervised_step(
      model=model, tx=tx, head=head, weight_decay=weight_decay,
      decay_set=decay_set, parallelism=par, bn_mode=bn_mode)
  return par.put_replicated(state), step


def fixed_class_weights(method: methods_lib.Method, shapes: Shapes,
                        datl_weights: Any = None,
                        config_weights: Any = None
                        ) -> tuple[float, ...] | None:
  """The fixed class weights of `method` (None when learned or unused).

  Args:
    method: the method.
    shapes: the task's shapes (the number of source classes).
    datl_weights: DATL's estimated weights ('datl').
    config_weights: config.l2tl.fixed_class_weights ('config';
      PolicySpec.fixed_class_weights).

  Raises:
    ValueError: 'datl' without its estimated weights; 'config' without
      one weight per source class.
  """
  if method.class_weights == "uniform":
    return (1.0,) * shapes.num_src_classes
  if method.class_weights == "config":
    weights = tuple(float(w) for w in (config_weights or ()))
    if len(weights) != shapes.num_src_classes:
      raise ValueError(
          f"Method {method.name!r} needs config.l2tl.fixed_class_weights with "
          f"one weight per source class ({shapes.num_src_classes}), got "
          f"{len(weights)}.")
    return weights
  if method.class_weights == "datl":
    if datl_weights is None:
      raise ValueError("DATL needs its estimated class weights.")
    return tuple(float(w) for w in datl_weights)
  return None


def pool_kwargs(encoder: str, encoder_kwargs: Any, *,
                fast: bool) -> dict[str, Any]:
  """`encoder_kwargs` with fast_pool=`fast` where the encoder declares LeNet's
  choice of max pool and the kwargs leave it unset; else as they are."""
  kwargs = dict(encoder_kwargs)
  entry = models.find_encoder(encoder)
  if entry is not None and entry.pool_choice and "fast_pool" not in kwargs:
    kwargs["fast_pool"] = fast
  return kwargs


def _with_pool(spec: spec_lib.ModelSpec, model: models.TransferModel,
               *, second_order: bool) -> models.TransferModel:
  """`model` with the max pool for its step, where the spec leaves it unset.

  The fast pool for steps that take first derivatives only, where it equals
  flax's exactly (value and gradient: the same parameters, several times
  faster on XLA:CPU); flax's for steps that differentiate through the
  gradient (the meta-gradient), whose second derivative the fast one
  matches only up to rounding.
  """
  kwargs = spec.kwargs()
  chosen = pool_kwargs(spec.encoder, kwargs, fast=not second_order)
  if chosen == kwargs:
    return model
  return model.clone(encoder=model.encoder.clone(
      fast_pool=chosen["fast_pool"]))


def target_stage(
    spec: spec_lib.RunSpec,
    *,
    model: models.TransferModel,
    params: Any,
    model_state: Any,
    rng: jax.Array,
    par: parallel.Parallelism,
    class_weights: tuple[float, ...] | None = None,
) -> Parts:
  """The target stage of the spec's method: L2TL step for joint methods,
  else the supervised step of the target head.

  Args:
    spec: the run.
    model: built by `make_model` with `spec.method.heads`.
    params: initial params (loaded parts merged in).
    model_state: initial non-param collections.
    rng: typed key of the train state.
    par: compilation and placement.
    class_weights: the fixed class weights of a joint method that does not
      learn them (`fixed_class_weights`).
  """
  method = spec.method
  options = spec.options(class_weights) if method.joint else None
  model = _with_pool(spec.model, model, second_order=(
      options is not None and estimators.select(options).second_order))
  tx = model_tx(spec.train)
  eval_step = steps.make_eval_step(model=model, parallelism=par)
  if not method.joint:
    state, step = supervised_parts(
        model=model, tx=tx, head="tgt", weight_decay=spec.train.weight_decay,
        decay_set=spec.train.decay_set, params=params,
        model_state=model_state, rng=rng, par=par, bn_mode=spec.model.bn_mode)
    return Parts(model, tx, None, None, state, step, eval_step)
  p_tx = p_params = None
  if method.has_policy and estimators.select(options).learns:
    p_tx = policy_tx(spec.policy)
    p_params = policy_lib.init_policy_params(
        num_src_classes=model.num_src_classes,
        num_levels=spec.policy.num_levels,
        num_alpha_levels=spec.policy.num_alpha_levels)
  state, step = joint_parts(
      model=model, tx=tx, options=options, params=params,
      model_state=model_state, rng=rng, par=par, policy_tx=p_tx,
      policy_params=p_params)
  return Parts(model, tx, p_tx, options, state, step, eval_step)


def source_stage(spec: spec_lib.RunSpec, shapes: Shapes, *,
                 par: parallel.Parallelism) -> Parts:
  """Source pre-training from scratch (spec.pretrain): the source head."""
  stage = spec.pretrain
  model = make_model(spec.model, heads=("src_head",), shapes=shapes,
                     axis_name=par.axis_name)
  model = _with_pool(spec.model, model, second_order=False)
  tx = model_tx(stage)
  rng_init, rng_state = jax.random.split(jax.random.key(stage.seed))
  params, model_state = models.init_variables(model, rng_init,
                                              shapes.image_shape)
  state, step = supervised_parts(
      model=model, tx=tx, head="src", weight_decay=stage.weight_decay,
      decay_set=stage.decay_set, params=params, model_state=model_state,
      rng=rng_state, par=par)
  eval_step = steps.make_eval_step(model=model, head="src", parallelism=par)
  return Parts(model, tx, None, None, state, step, eval_step)
