"""The train state: one pytree carrying everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: outer steps taken, int32 scalar.
    params: model params {'encoder', 'src_head'?, 'tgt_head'?}.
    model_state: non-param model collections (e.g. 'batch_stats'); {} if none.
    opt_state: the model optimiser's state.
    policy_params: policy params ({} for methods without a policy).
    policy_opt_state: the policy optimiser's state (() without a policy).
    estimator_state: the L2TL estimator's own state (REINFORCE: its EMA
      reward baseline; see `l2tl_jax.estimators`); () for the other steps.
    rng: base PRNG key as raw uint32 key data (checkpointable as a plain
      array); steps derive their keys with `fold_in(key, step)`, so resuming
      needs no stored split keys.
  """

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: optax.OptState
  policy_params: Any
  policy_opt_state: Any
  estimator_state: Any
  rng: jax.Array

  def step_key(self) -> jax.Array:
    """The typed PRNG key for this state's step."""
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)


def create(
    *,
    params: Any,
    model_state: Any,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    policy_params: Any = None,
    policy_tx: optax.GradientTransformation | None = None,
    estimator_state: Any = (),
) -> TrainState:
  """Builds a fresh train state.

  Args:
    params: model params.
    model_state: non-param model collections ({} if none).
    tx: model optimiser.
    rng: typed PRNG key (`jax.random.key(seed)`).
    policy_params: policy params, or None for methods without a policy.
    policy_tx: policy optimiser; required with `policy_params`.
    estimator_state: the initial state of the L2TL step's estimator
      (`steps.init_estimator_state(options)`); () for supervised steps.

  Returns:
    TrainState at step 0.
  """
  if (policy_params is None) != (policy_tx is None):
    raise ValueError("policy_params and policy_tx go together.")
  policy_params = {} if policy_params is None else policy_params
  policy_opt_state = policy_tx.init(policy_params) if policy_tx else ()
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      model_state=dict(model_state),
      opt_state=tx.init(params),
      policy_params=policy_params,
      policy_opt_state=policy_opt_state,
      estimator_state=estimator_state,
      rng=jax.random.key_data(rng),
  )
