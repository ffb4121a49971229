"""The L2TL data-weighting policy: pure functions over an explicit pytree.

One categorical over `num_levels` weight levels per source class, and one over
`num_alpha_levels` levels for the global source-loss weight:

  a_c ~ Cat(softmax(class_logits[c]))  ->  lambda_c = a_c / class_weight_scale
  a   ~ Cat(softmax(alpha_logits))     ->  alpha    = a / loss_weight_scale

Logits start at zero (uniform), as in the reference. The reference divides
by the number of levels (class_weight_scale = K: lambda_c < 1, starting at an
expected (K-1)/2K); a smaller scale lets a class weigh more than 1.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp

PolicyParams = dict[str, jax.Array]
Actions = dict[str, jax.Array]

CLASS_REDUCTIONS = ("mean", "sum")


def init_policy_params(
    *, num_src_classes: int, num_levels: int, num_alpha_levels: int
) -> PolicyParams:
  """Zero logits: class_logits [C_src, K] and alpha_logits [K_alpha]."""
  if num_src_classes < 1 or num_levels < 1 or num_alpha_levels < 1:
    raise ValueError(
        "Policy sizes must be >= 1, got "
        f"num_src_classes={num_src_classes}, num_levels={num_levels}, "
        f"num_alpha_levels={num_alpha_levels}."
    )
  return {
      "class_logits": jnp.zeros((num_src_classes, num_levels), jnp.float32),
      "alpha_logits": jnp.zeros((num_alpha_levels,), jnp.float32),
  }


def sample(params: PolicyParams, rng: jax.Array) -> Actions:
  """Samples actions.

  Args:
    params: policy params.
    rng: PRNG key.

  Returns:
    {'class': int32 [C_src], 'alpha': int32 []}.
  """
  rng_class, rng_alpha = jax.random.split(rng)
  return {
      "class": jax.random.categorical(rng_class, params["class_logits"]),
      "alpha": jax.random.categorical(rng_alpha, params["alpha_logits"]),
  }


def log_prob(
    params: PolicyParams,
    actions: Actions,
    *,
    class_reduction: str = "mean",
    include_alpha: bool = True,
) -> jax.Array:
  """Log-probability of `actions`.

  Args:
    params: policy params.
    actions: {'class': [C_src], 'alpha': []} as from `sample`.
    class_reduction: 'mean' over classes (reference) or 'sum' (the joint
      log-probability of the independent per-class actions).
    include_alpha: add the alpha action's log-probability (False when alpha
      is fixed rather than sampled).

  Returns:
    scalar.
  """
  chex.assert_rank(params["class_logits"], 2)
  chex.assert_rank(actions["class"], 1)
  if class_reduction not in CLASS_REDUCTIONS:
    raise ValueError(
        f"class_reduction must be one of {CLASS_REDUCTIONS}, "
        f"got {class_reduction!r}"
    )
  class_logp = jax.nn.log_softmax(params["class_logits"])  # [C, K]
  per_class = jnp.take_along_axis(
      class_logp, actions["class"][:, None], axis=1
  )[:, 0]  # [C]
  total = jnp.mean(per_class) if class_reduction == "mean" else jnp.sum(
      per_class
  )
  if include_alpha:
    total += jax.nn.log_softmax(params["alpha_logits"])[actions["alpha"]]
  return total


def _categorical_entropy(logits: jax.Array) -> jax.Array:
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def entropy(params: PolicyParams, *, include_alpha: bool = True) -> jax.Array:
  """Mean per-class entropy plus the alpha entropy (nats), a scalar."""
  total = jnp.mean(_categorical_entropy(params["class_logits"]))
  if include_alpha:
    total += _categorical_entropy(params["alpha_logits"])
  return total


def class_weights(class_actions: jax.Array, scale: float) -> jax.Array:
  """lambda_c = a_c / scale (reference: scale = K), float32 [C_src]."""
  return class_actions.astype(jnp.float32) / scale


def alpha_value(alpha_action: jax.Array, loss_weight_scale: float) -> jax.Array:
  """alpha = a / loss_weight_scale, float32 scalar."""
  return alpha_action.astype(jnp.float32) / loss_weight_scale


def expected_class_weights(params: PolicyParams,
                           scale: float | None = None) -> jax.Array:
  """E[lambda_c] = sum_k softmax(class_logits[c])_k * k / scale, [C_src].

  `scale` defaults to K (the reference: lambda_c in [0, (K-1)/K]).
  """
  num_levels = params["class_logits"].shape[-1]
  probs = jax.nn.softmax(params["class_logits"])
  return probs @ (jnp.arange(num_levels, dtype=jnp.float32)
                  / (num_levels if scale is None else scale))


def expected_alpha(params: PolicyParams, loss_weight_scale: float) -> jax.Array:
  """E[alpha] under the alpha categorical, float32 scalar."""
  num_levels = params["alpha_logits"].shape[-1]
  probs = jax.nn.softmax(params["alpha_logits"])
  return probs @ jnp.arange(num_levels, dtype=jnp.float32) / loss_weight_scale


def reinforce_loss(
    params: PolicyParams,
    actions: Actions,
    advantage: jax.Array,
    *,
    class_reduction: str = "mean",
    include_alpha: bool = True,
    entropy_coef: float = 0.0,
) -> tuple[jax.Array, dict[str, Any]]:
  """REINFORCE surrogate: -stop_grad(advantage) * log pi(actions) - c * H.

  Args:
    params: policy params.
    actions: the sampled actions.
    advantage: scalar; no gradient flows through it.
    class_reduction: see `log_prob`.
    include_alpha: see `log_prob`.
    entropy_coef: entropy bonus coefficient (reference: 0).

  Returns:
    (loss, aux) with aux = {'log_prob', 'entropy'}.
  """
  chex.assert_rank(advantage, 0)
  logp = log_prob(
      params,
      actions,
      class_reduction=class_reduction,
      include_alpha=include_alpha,
  )
  ent = entropy(params, include_alpha=include_alpha)
  loss = -jax.lax.stop_gradient(advantage) * logp - entropy_coef * ent
  return loss, {"log_prob": logp, "entropy": ent}
