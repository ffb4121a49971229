"""Losses: weighted source cross-entropy with top-k selection, target
cross-entropy, accuracy, and masked weight decay."""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

DECAY_SETS = ("all", "kernels", "none")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy.

  Args:
    logits: [B, C].
    labels: int [B].

  Returns:
    [B].
  """
  chex.assert_rank(logits, 2)
  chex.assert_rank(labels, 1)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def select_top_k(
    weights: jax.Array, k: int, *, renormalize: bool = True
) -> tuple[jax.Array, jax.Array]:
  """Keeps the k largest weights and (by default) renormalises them to sum to k.

  Ties go to the earlier index (`jax.lax.top_k` is stable), as the reference's
  `tf.nn.top_k`. When every kept weight is zero the kept weights are all
  exactly zero (the reference divides by zero there).

  Args:
    weights: per-example weights [N], N >= k.
    k: how many to keep.
    renormalize: scale the kept weights to sum to k (reference).

  Returns:
    (indices int32 [k], kept weights float32 [k]).
  """
  chex.assert_rank(weights, 1)
  if weights.shape[0] < k:
    raise ValueError(f"Cannot keep {k} of {weights.shape[0]} examples.")
  kept, idx = jax.lax.top_k(weights, k)
  return idx, renormalize_weights(kept) if renormalize else kept


def renormalize_weights(kept: jax.Array) -> jax.Array:
  """Kept weights [k] scaled to sum to k; all exactly zero if they sum to 0."""
  k = kept.shape[0]
  total = jnp.sum(kept)
  safe_total = jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, kept * (k / safe_total), 0.0)


def weighted_ce_sums(
    logits: jax.Array, labels: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Numerator and denominator of the reference's weighted source loss.

  The loss is `sum_i w_i * CE_i / #(w_i != 0)`; the two parts are returned
  separately so that data-parallel steps can sum them across devices before
  dividing (see `safe_ratio`).

  Args:
    logits: [B, C].
    labels: int [B].
    weights: [B]; gradients flow through them (the meta-gradient estimator
      differentiates the model update with respect to the weights).

  Returns:
    (sum_i w_i * CE_i, #(w_i != 0)), both float32 scalars.
  """
  chex.assert_equal_shape_prefix((logits, labels, weights), 1)
  numerator = jnp.sum(weights * cross_entropy(logits, labels))
  count = jnp.sum(weights != 0).astype(jnp.float32)
  return numerator, count


def safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  """numerator / denominator, exactly 0 (with zero gradient) when it is 0."""
  safe = jnp.where(denominator > 0, denominator, 1.0)
  return jnp.where(denominator > 0, numerator / safe, 0.0)


def weighted_cross_entropy(
    logits: jax.Array, labels: jax.Array, weights: jax.Array
) -> jax.Array:
  """`sum_i w_i CE_i / #(w_i != 0)`; exactly 0 when every weight is 0."""
  return safe_ratio(*weighted_ce_sums(logits, labels, weights))


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Top-1 hits as float32 [B]."""
  chex.assert_rank(logits, 2)
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def decay_mask(params: Any, which: str) -> Any:
  """Boolean pytree selecting the parameters that weight decay applies to.

  Args:
    params: model params.
    which: 'all' (every parameter: the reference's L2TL), 'kernels' (leaves
      named 'kernel': the reference's baselines and pre-training) or 'none'.

  Returns:
    A pytree of bools with the structure of `params`.
  """
  if which not in DECAY_SETS:
    raise ValueError(f"weight decay set must be one of {DECAY_SETS}, got {which!r}")

  def keep(path, _):
    if which == "all":
      return True
    if which == "none":
      return False
    return getattr(path[-1], "key", None) == "kernel"

  return jax.tree_util.tree_map_with_path(keep, params)


def weight_decay(params: Any, mask: Any) -> jax.Array:
  """`sum(p^2) / 2` over the masked parameters (TF's `l2_loss`)."""
  leaves = [
      jnp.sum(jnp.square(p))
      for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask))
      if m
  ]
  return 0.5 * sum(leaves) if leaves else jnp.zeros((), jnp.float32)
