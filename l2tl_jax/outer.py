"""The pieces of the L2TL outer step, as module-level pure functions.

An estimator (`l2tl_jax.estimators`) composes them into one outer step:

  split_inner       the batch -> N inner slices of source and target examples
  select_source     class weights -> the kept source examples (top-k over the
                    GLOBAL source batch; the only place with a cross-device
                    gather and slice)
  joint_loss        alpha * weighted source CE + target CE + weight decay
  inner_update      one optimiser step of the model on the joint loss
  rollout           N inner updates with one set of weights (unrolled or scan)
  validation_stats  accuracy and cross-entropy of the target validation batch
  REWARDS           (before, after) validation stats -> reward
  scored_layers     the encoder modules that alignment scores differentiate

The alignment scores and the weights made from them are in
`l2tl_jax.alignment`.

What is fixed when a step is built (model, optimiser, loss settings, device
axis) travels in one `JointProblem`; everything traced is an argument. Under
`jax.pmap` (problem.axis_name set) each function sees its device's shard and
sums across devices itself; otherwise the batch is global.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from l2tl_jax import losses
from l2tl_jax import models
from l2tl_jax import parallel

Batch = dict[str, Any]
Metrics = dict[str, jax.Array]
SRC_NORMALIZATIONS = ("reference", "mean")
SRC_SELECTIONS = ("top_k", "first")
INNER_LOOPS = ("unroll", "scan")
# How encoders with batch statistics treat the joint batch (see JointProblem).
BN_MODES = ("joint", "target", "frozen")


@dataclasses.dataclass(frozen=True)
class JointProblem:
  """The static part of the joint training problem.

  Attributes:
    model: transfer model with both heads.
    tx: model optimiser.
    weight_decay: coefficient of sum(p^2)/2.
    decay_set: which parameters decay ('all', 'kernels', 'none').
    src_selection: which B of the M * B source examples are kept: 'top_k'
      (the reference: the largest class weights) or 'first' (the first B,
      a uniform draw since the stream is shuffled; the weights only scale
      their losses, so every class present gets a gradient, whatever its
      weight).
    src_normalization: 'reference' (kept weights renormalised to sum to B,
      weighted loss / #non-zero) or 'mean' (raw weights, / B).
    inner_loop: 'unroll' or 'scan' (see `rollout`).
    axis_name: the pmap axis, or None for a global batch.
    bn_mode: batch statistics of encoders that have them. 'joint': source
      and target examples are normalised together by the statistics of the
      joint batch, which also update the running averages (one pass, the
      reference); 'target': two passes, each part normalised by its own
      batch, and only the target's statistics update the running averages
      that evaluation uses; 'frozen': the running averages (e.g. the
      pretrained ones) normalise everything and are never updated.
  """

  model: models.TransferModel
  tx: optax.GradientTransformation
  weight_decay: float = 5e-4
  decay_set: str = "all"
  src_normalization: str = "reference"
  inner_loop: str = "unroll"
  axis_name: str | None = None
  bn_mode: str = "joint"
  src_selection: str = "top_k"


class ModelCarry(NamedTuple):
  """What the inner updates change: params, model_state, opt_state."""

  params: Any
  model_state: Any
  opt_state: Any


class KeptSource(NamedTuple):
  """This device's slice of the kept source examples.

  Attributes:
    image: [B_local, ...].
    label: int32 [B_local].
    weight: float32 [B_local], the example weights after selection.
    count: the GLOBAL normaliser of the weighted source loss, scalar.
  """

  image: jax.Array
  label: jax.Array
  weight: jax.Array
  count: jax.Array


class ValStats(NamedTuple):
  """Target-validation statistics of one set of parameters.

  Attributes:
    accuracy: top-1 accuracy over the global batch.
    loss: mean cross-entropy over the global batch.
    local_loss: this device's share of `loss` (the shares sum to it); the
      quantity to differentiate under pmap.
  """

  accuracy: jax.Array
  loss: jax.Array
  local_loss: jax.Array


def split_inner(examples: Batch, inner_steps: int) -> Batch:
  """[N * n, ...] leaves -> [N, n, ...]: one slice per inner step."""
  return jax.tree.map(
      lambda x: x.reshape((inner_steps, x.shape[0] // inner_steps,
                           *x.shape[1:])),
      examples,
  )


def select_source(
    src: Batch,
    class_weights: jax.Array,
    *,
    keep_local: int,
    normalization: str,
    axis_name: str | None,
    selection: str = "top_k",
    example_weights: jax.Array | None = None,
) -> KeptSource:
  """Keeps the source examples with the largest class weights.

  Top-k runs over the GLOBAL source batch, so every device agrees on the kept
  set; each device then takes its slice of the kept examples.

  Args:
    src: {'image' [M*B_local, ...], 'label' int [M*B_local]}, this device's
      source examples.
    class_weights: [C_src] weight of each source class.
    keep_local: B_local, kept examples per device (B = B_local * devices).
    normalization: 'reference' (kept weights renormalised to sum to B; the
      loss normaliser is the number of non-zero kept weights) or 'mean' (raw
      weights; the normaliser is B).
    axis_name: pmap axis or None.
    selection: 'top_k' (the largest weights) or 'first' (the first B of
      the global batch, whatever their weights).
    example_weights: [M*B_local] per-example weights that replace the class
      weights (Learning to Reweight); None: w_i = class_weights[y_i].

  Returns:
    The kept examples of this device.
  """
  keep = keep_local * parallel.axis_size(axis_name)
  if example_weights is not None:
    src = {**src, "weight": example_weights}
  if axis_name is not None:
    src = jax.tree.map(
        lambda x: jax.lax.all_gather(x, axis_name, tiled=True), src)
  if example_weights is not None:
    example_w = src["weight"]
  else:
    example_w = class_weights[src["label"]]  # [M * B]
  if selection == "first":
    idx, kept_w = jnp.arange(keep), example_w[:keep]
    if normalization == "reference":
      kept_w = losses.renormalize_weights(kept_w)
  else:
    idx, kept_w = losses.select_top_k(
        example_w, keep, renormalize=normalization == "reference")  # [B]
  image, label = src["image"][idx], src["label"][idx]
  if axis_name is not None:
    start = jax.lax.axis_index(axis_name) * keep_local
    local = lambda x: jax.lax.dynamic_slice_in_dim(x, start, keep_local)
    image, label, kept_w = map(local, (image, label, kept_w))
  if normalization == "reference":
    count = parallel.psum(jnp.sum(kept_w != 0).astype(jnp.float32), axis_name)
  else:
    count = jnp.asarray(keep, jnp.float32)
  return KeptSource(image, label, kept_w, count)


def joint_loss(
    params: Any,
    *,
    problem: JointProblem,
    model_state: Any,
    kept: KeptSource,
    tgt: Batch,
    alpha: jax.Array,
    decay_mask: Any,
) -> tuple[jax.Array, tuple[Any, jax.Array, jax.Array, jax.Array]]:
  """This device's share of `alpha * src_loss + tgt_loss + wd`.

  Source and target examples go through the encoder in one batch.

  Args:
    params: model params.
    problem: the static problem.
    model_state: non-param collections.
    kept: the kept source examples (`select_source`).
    tgt: {'image' [B_local, ...], 'label' [B_local]}.
    alpha: scalar weight of the source loss.
    decay_mask: which params decay (`losses.decay_mask`).

  Returns:
    (loss share, (new model_state, src_loss share, tgt_loss share, wd)); the
    shares summed over devices give the global values.
  """
  model = problem.model
  n_dev = parallel.axis_size(problem.axis_name)
  keep = tgt["label"].shape[0] * n_dev  # B: as many source as target.
  src_features, tgt_features, new_model_state = _encode_joint(
      params, model_state, kept.image, tgt["image"], problem=problem)
  src_logits = models.apply_head(model, params, src_features, "src")
  tgt_logits = models.apply_head(model, params, tgt_features, "tgt")
  src_num, _ = losses.weighted_ce_sums(src_logits, kept.label, kept.weight)
  tgt_sum = jnp.sum(losses.cross_entropy(tgt_logits, tgt["label"]))
  wd = problem.weight_decay * losses.weight_decay(params, decay_mask)
  src_share = losses.safe_ratio(src_num, kept.count)
  loss = alpha * src_share + tgt_sum / keep + wd / n_dev
  return loss, (new_model_state, src_share, tgt_sum / keep, wd)


def _encode_joint(params, model_state, src_images, tgt_images, *,
                  problem: JointProblem):
  """(source features, target features, new model_state) per bn_mode."""
  model = problem.model
  encode = lambda images, train: models.apply_encoder(
      model, params, model_state, images, train=train)
  if problem.bn_mode == "frozen" or not model_state:
    train = problem.bn_mode != "frozen"
    features, _ = encode(jnp.concatenate([src_images, tgt_images]), train)
    src_features, tgt_features = jnp.split(features, [src_images.shape[0]])
    return src_features, tgt_features, model_state
  if problem.bn_mode == "target":
    src_features, _ = encode(src_images, True)
    tgt_features, new_model_state = encode(tgt_images, True)
    return src_features, tgt_features, new_model_state
  features, new_model_state = encode(
      jnp.concatenate([src_images, tgt_images], axis=0), True)
  src_features, tgt_features = jnp.split(features, [src_images.shape[0]])
  return src_features, tgt_features, new_model_state


def inner_update(
    carry: ModelCarry,
    src: Batch,
    tgt: Batch,
    *,
    problem: JointProblem,
    class_weights: jax.Array,
    alpha: jax.Array,
    decay_mask: Any,
) -> tuple[ModelCarry, Metrics]:
  """One model optimiser step on the joint loss.

  Args:
    carry: params, model_state, opt_state before the step.
    src: this device's source examples of the step [M*B_local, ...]; an
      optional 'weight' entry [M*B_local] gives per-example weights that
      replace the class weights.
    tgt: this device's target examples of the step [B_local, ...].
    problem: the static problem.
    class_weights: [C_src].
    alpha: scalar.
    decay_mask: which params decay.

  Returns:
    (carry after the step, metrics 'train/...').
  """
  axis_name = problem.axis_name
  kept = select_source(
      {"image": src["image"], "label": src["label"]}, class_weights,
      keep_local=tgt["label"].shape[0],
      normalization=problem.src_normalization, axis_name=axis_name,
      selection=problem.src_selection, example_weights=src.get("weight"))
  loss_fn = lambda p: joint_loss(
      p, problem=problem, model_state=carry.model_state, kept=kept, tgt=tgt,
      alpha=alpha, decay_mask=decay_mask)
  grads, (model_state, src_loss, tgt_loss, wd) = jax.grad(
      loss_fn, has_aux=True)(carry.params)
  grads = parallel.psum(grads, axis_name)
  model_state = parallel.pmean(model_state, axis_name)
  updates, opt_state = problem.tx.update(grads, carry.opt_state, carry.params)
  params = optax.apply_updates(carry.params, updates)
  metrics = {
      "train/src_loss": parallel.psum(src_loss, axis_name),
      "train/tgt_loss": parallel.psum(tgt_loss, axis_name),
      "train/weight_decay": wd,
      "train/grad_norm": optax.tree.norm(grads),
      "train/src_kept_nonzero": parallel.psum(
          jnp.sum(kept.weight != 0).astype(jnp.float32), axis_name),
  }
  return ModelCarry(params, model_state, opt_state), metrics


def rollout(
    carry: ModelCarry,
    src: Batch,
    tgt: Batch,
    *,
    problem: JointProblem,
    class_weights: jax.Array,
    alpha: jax.Array,
    decay_mask: Any,
) -> tuple[ModelCarry, Metrics]:
  """N inner updates with one set of weights.

  Args:
    carry: the model before the first update.
    src: source examples with a leading inner axis [N, M*B_local, ...].
    tgt: target examples [N, B_local, ...].
    problem: the static problem; problem.inner_loop 'unroll' traces a Python
      loop, 'scan' compiles `jax.lax.scan` (constant compile time in N, but
      XLA:CPU runs convolutions inside a loop body ~20x slower).
    class_weights: [C_src].
    alpha: scalar.
    decay_mask: which params decay.

  Returns:
    (carry after N updates, metrics averaged over the N updates).
  """
  body = lambda c, xs: inner_update(
      c, *xs, problem=problem, class_weights=class_weights, alpha=alpha,
      decay_mask=decay_mask)
  if problem.inner_loop == "scan":
    carry, per_step = jax.lax.scan(body, carry, (src, tgt))
  else:
    steps = []
    for i in range(jax.tree.leaves(tgt)[0].shape[0]):
      carry, m = body(carry, jax.tree.map(lambda x: x[i], (src, tgt)))
      steps.append(m)
    per_step = jax.tree.map(lambda *xs: jnp.stack(xs), *steps)
  return carry, jax.tree.map(jnp.mean, per_step)


def validation_stats(
    params: Any, model_state: Any, val: Batch, *, problem: JointProblem
) -> ValStats:
  """Accuracy and mean cross-entropy of the target head on `val`.

  Args:
    params: model params.
    model_state: non-param collections (batch statistics are not updated).
    val: this device's validation examples {'image', 'label'}.
    problem: the static problem.

  Returns:
    Global accuracy and loss, and this device's loss share.
  """
  axis_name = problem.axis_name
  num_val = val["label"].shape[0] * parallel.axis_size(axis_name)
  features, _ = models.apply_encoder(
      problem.model, params, model_state, val["image"], train=False)
  logits = models.apply_head(problem.model, params, features, "tgt")
  hits = jnp.sum(losses.correct(logits, val["label"]))
  local_loss = jnp.sum(losses.cross_entropy(logits, val["label"])) / num_val
  return ValStats(parallel.psum(hits, axis_name) / num_val,
                  parallel.psum(local_loss, axis_name), local_loss)


@dataclasses.dataclass(frozen=True)
class Reward:
  """A reward: fn(before, after) of validation stats (before may be None).

  Attributes:
    fn: (before, after) -> scalar reward.
    needs_before: whether `before` (the stats of the parameters before the
      inner updates, one extra forward pass) must be computed.
  """

  fn: Callable[[ValStats | None, ValStats], jax.Array]
  needs_before: bool = False


REWARDS: dict[str, Reward] = {
    # The reference: validation accuracy of the updated parameters.
    "accuracy": Reward(lambda before, after: after.accuracy),
    "neg_loss": Reward(lambda before, after: -after.loss),
    # The validation loss of the same batch before minus after the inner
    # updates: a paired difference that cancels batch noise.
    "loss_improvement": Reward(
        lambda before, after: before.loss - after.loss, needs_before=True),
}


def scored_layers(encoder_params: Any, layers: int) -> tuple[str, ...]:
  """The encoder's top-level modules that alignment scores differentiate.

  Args:
    encoder_params: params['encoder'] (top-level modules in the order the
      encoder applies them).
    layers: the last `layers` of them; 0 for every one (the exact score).

  Returns:
    Their names, e.g. ('fc1', 'fc2') for LeNet with layers=2, ('layer4_0',
    'layer4_1') for ResNet-18 (its last stage).
  """
  names = tuple(encoder_params)
  if layers < 0:
    raise ValueError(f"score_layers must be >= 0, got {layers}.")
  return names if layers == 0 else names[-layers:]
