"""Per-example alignment with the validation gradient, as pure functions.

The signal of the alignment estimators (`l2tl_jax.estimators_alignment`):

  alignment_scores  per source example, <grad of its source CE, grad of the
                    validation loss> over the shared encoder (one JVP)
  positive_weights  alignment scores -> Learning to Reweight's weights
  top_k_mean        the mean of the k largest values of the global batch
  class_sums        per source class: sum of example values and count

Which encoder modules the scores differentiate is `outer.scored_layers`. As
in `l2tl_jax.outer`, under `jax.pmap` (axis_name set) each function sees its
device's shard and sums across devices itself.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp

from l2tl_jax import losses
from l2tl_jax import models
from l2tl_jax import outer
from l2tl_jax import parallel


def alignment_scores(
    params: Any,
    model_state: Any,
    src: outer.Batch,
    val: outer.Batch,
    *,
    problem: outer.JointProblem,
    layers: int = 0,
) -> jax.Array:
  """s_i = <grad CE_src(x_i, y_i), grad L_val> for every source example.

  The gradients are over the shared encoder (the heads are disjoint, so
  they add nothing), restricted to its last `layers` top-level modules
  (`outer.scored_layers`; 0: all of it). One validation backward gives g =
  grad L_val; one forward-mode pass (`jax.jvp` of the per-example source
  losses along g) gives every s_i, with no per-example gradients. Both
  passes run the encoder in evaluation mode (batch statistics, where the
  encoder has them, are the running ones, so examples do not interact).

  s_i is Learning to Reweight's (Ren et al. 2018) signal: for a model step
  theta' = theta - lr * sum_j eps_j grad CE_j, s_i = -(1/lr) dL_val(theta')
  / d eps_i at eps = 0, to first order in lr.

  Args:
    params: model params (both heads).
    model_state: non-param collections.
    src: this device's source examples {'image' [n, ...], 'label' [n]}.
    val: this device's validation examples.
    problem: the static problem (under pmap, g is the psum of the devices'
      shares, so every device scores its examples against the global
      validation gradient).
    layers: see `outer.scored_layers`.

  Returns:
    float32 [n], this device's scores.
  """
  encoder = params["encoder"]
  names = outer.scored_layers(encoder, layers)
  scored = {k: encoder[k] for k in names}

  def with_scored(part):
    return {**params, "encoder": {**encoder, **part}}

  def val_loss(part):
    return outer.validation_stats(with_scored(part), model_state, val,
                                  problem=problem).local_loss

  g = parallel.psum(jax.grad(val_loss)(scored), problem.axis_name)

  def src_ce(part):
    p = with_scored(part)
    features, _ = models.apply_encoder(problem.model, p, model_state,
                                       src["image"], train=False)
    logits = models.apply_head(problem.model, p, features, "src")
    return losses.cross_entropy(logits, src["label"])

  _, scores = jax.jvp(src_ce, (scored,), (g,))
  return scores.astype(jnp.float32)


def positive_weights(scores: jax.Array,
                     axis_name: str | None = None) -> jax.Array:
  """Learning to Reweight's weights: max(0, s_i) / mean_j max(0, s_j).

  The mean is over the global batch (every device's scores), so the weights
  have batch mean 1; all 0 when no score is positive.
  """
  chex.assert_rank(scores, 1)
  positive = jnp.maximum(scores, 0.0)
  total = parallel.psum(jnp.sum(positive), axis_name)
  count = parallel.psum(jnp.asarray(scores.size, jnp.float32), axis_name)
  mean = total / count
  return jnp.where(mean > 0, positive / jnp.where(mean > 0, mean, 1.0), 0.0)


def top_k_mean(values: jax.Array, k: int,
               axis_name: str | None = None) -> jax.Array:
  """Mean of the k largest of `values` over the global batch (all devices)."""
  chex.assert_rank(values, 1)
  if axis_name is not None:
    values = jax.lax.all_gather(values, axis_name, tiled=True)
  return jnp.mean(jax.lax.top_k(values, k)[0])


def class_sums(values: jax.Array, labels: jax.Array, num_classes: int,
               axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
  """Per class c: (sum of values with label c, their count), global.

  Args:
    values: float [n].
    labels: int [n] in [0, num_classes).
    num_classes: C.
    axis_name: pmap axis or None.

  Returns:
    (sums [C], counts [C]), summed over devices.
  """
  chex.assert_rank([values, labels], 1)
  chex.assert_equal_shape([values, labels])
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [n, C]
  sums = parallel.psum(values.astype(jnp.float32) @ one_hot, axis_name)
  counts = parallel.psum(jnp.sum(one_hot, axis=0), axis_name)
  return sums, counts
