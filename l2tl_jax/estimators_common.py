"""What every estimator of `l2tl_jax.estimators` shares.

The contract of an update, `update(state, OuterData, Spec) -> Outcome`, and
the pieces the estimators build their updates from: the model rollout with
one set of weights, the validation stats after it, the fixed alpha, and the
policy's sampled actions with the class weights and alpha they give.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from l2tl_jax import losses
from l2tl_jax import outer
from l2tl_jax import policy as policy_lib


class OuterData(NamedTuple):
  """One outer step's examples on this device.

  Attributes:
    src: source examples [N, M*B_local, ...] (N inner steps).
    tgt: target examples [N, B_local, ...].
    val: validation examples [V_local, ...].
  """

  src: Any
  tgt: Any
  val: Any


@dataclasses.dataclass(frozen=True)
class Spec:
  """What an estimator's update reads besides the state and the data.

  Attributes:
    problem: the joint problem (model, optimiser, loss settings, axis).
    options: the step's `L2TLOptions`.
    policy_tx: the policy optimiser (None for 'fixed').
    fixed_class_weights: [C_src] array when the class weights are fixed.
  """

  problem: outer.JointProblem
  options: Any
  policy_tx: optax.GradientTransformation | None
  fixed_class_weights: jax.Array | None


class Outcome(NamedTuple):
  """What an estimator's update returns.

  Attributes:
    carry: the model after the rollout the run keeps.
    policy_params: updated policy params.
    policy_opt_state: updated policy optimiser state.
    estimator_state: the estimator's new state.
    metrics: scalars 'train/...', 'val/...', 'policy/...'.
    checked: further values that must be finite for the step to count (the
      reward or objective).
  """

  carry: outer.ModelCarry
  policy_params: Any
  policy_opt_state: Any
  estimator_state: Any
  metrics: dict[str, jax.Array]
  checked: Any


def rollout(state, data: OuterData, spec: Spec, class_w, alpha):
  """`outer.rollout` of the state's model: (carry after it, metrics)."""
  carry = outer.ModelCarry(state.params, state.model_state, state.opt_state)
  return outer.rollout(
      carry, data.src, data.tgt, problem=spec.problem, class_weights=class_w,
      alpha=alpha, decay_mask=losses.decay_mask(
          state.params, spec.problem.decay_set))


def val_stats(carry: outer.ModelCarry, data: OuterData, spec: Spec):
  """`outer.validation_stats` of a carry on the step's validation batch."""
  return outer.validation_stats(carry.params, carry.model_state, data.val,
                                problem=spec.problem)


def fixed_alpha(spec: Spec) -> jax.Array:
  """config.l2tl.fixed_alpha as a float32 scalar."""
  return jnp.asarray(spec.options.fixed_alpha, jnp.float32)



def sample(state, options, num_samples: int | None):
  """Actions from the replicated step key: the same draw on every device."""
  rng = jax.random.fold_in(state.step_key(), 0)
  if num_samples is None:
    return policy_lib.sample(state.policy_params, rng)
  return jax.vmap(policy_lib.sample, in_axes=(None, 0))(
      state.policy_params, jax.random.split(rng, num_samples))


def action_weights(actions, spec: Spec):
  """(class weights, alpha) of sampled actions; fixed parts stay fixed."""
  opts = spec.options
  if opts.learns_classes:
    class_w = policy_lib.class_weights(actions["class"],
                                       opts.class_weight_divisor)
  else:
    class_w = spec.fixed_class_weights
  if opts.learns_alpha:
    alpha = policy_lib.alpha_value(actions["alpha"], opts.loss_weight_scale)
  else:
    alpha = fixed_alpha(spec)
  return class_w, alpha
