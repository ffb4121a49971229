"""Train and eval steps: pure functions compiled once by `parallel.compile_step`.

* `make_supervised_step`: one head, mean cross-entropy + weight decay. Source
  pre-training ('src'), training from scratch and fine-tuning ('tgt').
* `make_l2tl_step`: the L2TL outer step. Sample the policy; N inner model
  steps on `alpha * weighted_source_ce + target_ce + wd`; reward from the
  target-validation batch with the updated parameters; EMA baseline;
  REINFORCE update of the policy. With fixed class weights and/or a fixed
  alpha (`L2TLOptions`) the same step is uniform joint training, fixed-alpha
  L2TL, or joint training with any fixed class weighting.
* `make_eval_step`: summed hits / loss over a masked batch.

Batches are dicts of arrays: the supervised step takes {'image', 'label'};
the L2TL step takes {'src': ..., 'tgt': ..., 'val': ...} where 'src' holds
`inner_steps * src_oversample * B` examples and 'tgt' `inner_steps * B`.

Every step takes an `axis_name`: None under `jax.jit` (single device, or a
device mesh where the compiler partitions the global computation), or the
`jax.pmap` axis, where the step sees its local shard and sums across devices
explicitly. Both give the single-device result up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from l2tl_jax import losses
from l2tl_jax import models
from l2tl_jax import parallel
from l2tl_jax import policy as policy_lib
from l2tl_jax.train_state import TrainState

Batch = dict[str, Any]
Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]

REWARDS = ("accuracy", "neg_loss", "loss_improvement")
BASELINE_ORDERS = ("reference", "previous")
ESTIMATORS = ("reinforce", "meta_gradient")


@dataclasses.dataclass(frozen=True)
class L2TLOptions:
  """What the L2TL outer step does. Defaults reproduce the reference.

  Attributes:
    num_levels: K, weight levels per source class (lambda_c = a_c / K).
    num_alpha_levels: levels of the alpha categorical.
    loss_weight_scale: alpha = a / loss_weight_scale.
    fixed_class_weights: None to sample class weights from the policy, or one
      fixed weight per source class (uniform joint training: all ones).
    fixed_alpha: None to sample alpha from the policy, or a fixed value.
    src_oversample: M; the source batch holds M * B examples of which the B
      with the largest weights are kept.
    src_normalization: 'reference': kept weights renormalised to sum to B and
      the weighted loss divided by the number of non-zero weights (so a
      single kept non-zero example counts B times); 'mean': the raw weights,
      `sum_i lambda_i CE_i / B`, so a class weight scales its examples'
      contribution directly.
    inner_steps: N model steps per sampled action and reward (1: reference).
    reward: on the validation batch: 'accuracy' (reference), 'neg_loss', or
      'loss_improvement' (the validation loss of the same batch before minus
      after the inner steps: a paired difference that cancels batch noise,
      for one extra forward pass).
    baseline_momentum: m of the EMA baseline.
    baseline_order: 'reference' updates the EMA with the current reward
      before taking the advantage; 'previous' subtracts the baseline of the
      previous steps (the advantage of the first step is 0 in both).
    inner_loop: how the N inner steps are compiled: 'unroll' (a traced
      Python loop) or 'scan' (`jax.lax.scan`: constant compile time in N, but
      XLA:CPU runs convolutions inside a loop body ~20x slower).
    class_reduction: 'mean' (reference) or 'sum' of per-class log-probs.
    entropy_coef: entropy bonus added to the policy objective (reference: 0).
    weight_decay: coefficient of sum(p^2)/2.
    decay_set: which parameters decay: 'all' (reference L2TL), 'kernels'.
    skip_nonfinite: leave the state unchanged when a loss or gradient is not
      finite (the step is reported in 'train/nonfinite').
    estimator: how the policy learns. 'reinforce' (reference): sample
      discrete actions, score them by the reward, REINFORCE. 'meta_gradient':
      no sampling; the model trains with the policy's EXPECTED class weights
      and alpha, and the policy descends the exact gradient of the
      validation cross-entropy after the inner step(s) with respect to its
      parameters, taken through the model optimiser's update (learning to
      reweight, Ren et al. 2018). reward, baseline_*, class_reduction,
      entropy_coef and num_samples only apply to 'reinforce'.
    num_samples: S, policy samples per outer step (REINFORCE). With S > 1
      each sample runs its own inner step(s) from the same state (vmapped)
      and is scored on the same validation batch; the advantage of sample s
      is r_s minus the mean reward of the other samples (leave-one-out
      baseline), and the model carries on with sample 0's update. The EMA
      baseline then only tracks the mean reward for logging.
    samples_loop: how the S rollouts are compiled: 'vmap' (one batched
      program) or 'unroll' (S copies; on XLA:CPU, where batched convolutions
      with per-sample weights are slow, about 1.5x faster for S = 4).
  """

  num_levels: int = 100
  num_alpha_levels: int = 100
  loss_weight_scale: float = 100.0
  fixed_class_weights: tuple[float, ...] | None = None
  fixed_alpha: float | None = None
  src_oversample: int = 2
  src_normalization: str = "reference"
  inner_steps: int = 1
  inner_loop: str = "unroll"
  reward: str = "accuracy"
  baseline_momentum: float = 0.9
  baseline_order: str = "reference"
  class_reduction: str = "mean"
  entropy_coef: float = 0.0
  weight_decay: float = 5e-4
  decay_set: str = "all"
  skip_nonfinite: bool = True
  estimator: str = "reinforce"
  num_samples: int = 1
  samples_loop: str = "vmap"

  def __post_init__(self):
    if self.estimator not in ESTIMATORS:
      raise ValueError(
          f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}"
      )
    if self.samples_loop not in ("vmap", "unroll"):
      raise ValueError(
          f"samples_loop must be 'vmap' or 'unroll', got {self.samples_loop!r}"
      )
    if self.num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {self.num_samples}.")
    if self.estimator == "meta_gradient" and self.num_samples != 1:
      raise ValueError(
          "num_samples > 1 is a REINFORCE option; the meta-gradient "
          "estimator takes no samples. Set num_samples=1."
      )
    if self.reward not in REWARDS:
      raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
    if self.baseline_order not in BASELINE_ORDERS:
      raise ValueError(
          f"baseline_order must be one of {BASELINE_ORDERS}, "
          f"got {self.baseline_order!r}"
      )
    if self.class_reduction not in policy_lib.CLASS_REDUCTIONS:
      raise ValueError(
          f"class_reduction must be one of {policy_lib.CLASS_REDUCTIONS}, "
          f"got {self.class_reduction!r}"
      )
    if self.decay_set not in losses.DECAY_SETS:
      raise ValueError(
          f"decay_set must be one of {losses.DECAY_SETS}, got {self.decay_set!r}"
      )
    if self.src_normalization not in ("reference", "mean"):
      raise ValueError(
          "src_normalization must be 'reference' or 'mean', got "
          f"{self.src_normalization!r}"
      )
    if self.inner_loop not in ("unroll", "scan"):
      raise ValueError(
          f"inner_loop must be 'unroll' or 'scan', got {self.inner_loop!r}"
      )
    if self.inner_steps < 1 or self.src_oversample < 1:
      raise ValueError("inner_steps and src_oversample must be >= 1.")
    if not 0.0 <= self.baseline_momentum < 1.0:
      raise ValueError("baseline_momentum must be in [0, 1).")
    if self.fixed_class_weights is not None and any(
        w < 0 for w in self.fixed_class_weights
    ):
      raise ValueError("fixed_class_weights must be >= 0.")

  @property
  def learns_classes(self) -> bool:
    return self.fixed_class_weights is None

  @property
  def learns_alpha(self) -> bool:
    return self.fixed_alpha is None

  @property
  def has_policy(self) -> bool:
    return self.learns_classes or self.learns_alpha


def update_baseline(
    num: jax.Array,
    den: jax.Array,
    reward: jax.Array,
    *,
    momentum: float,
    order: str,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One step of the bias-corrected EMA baseline.

  num <- m num + (1-m) r; den <- m den + (1-m); b = num / den.

  Args:
    num: EMA numerator, scalar.
    den: EMA denominator, scalar.
    reward: this step's reward, scalar.
    momentum: m.
    order: 'reference' (advantage = r - b after the update, so it is 0 at the
      first step) or 'previous' (advantage = r - b before the update; at the
      first step, with no history, b = r).

  Returns:
    (new_num, new_den, baseline used, advantage).
  """
  new_num = momentum * num + (1.0 - momentum) * reward
  new_den = momentum * den + (1.0 - momentum)
  if order == "reference":
    baseline = new_num / new_den
  elif order == "previous":
    baseline = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), reward)
  else:
    raise ValueError(f"order must be one of {BASELINE_ORDERS}, got {order!r}")
  return new_num, new_den, baseline, reward - baseline


def _axis_size(axis_name: str | None) -> int:
  return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def _psum(x, axis_name: str | None):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _pmean(x, axis_name: str | None):
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _select(pred: jax.Array, new, old):
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _supervised_step_fn(
    *,
    model: models.TransferModel,
    tx: optax.GradientTransformation,
    head: str,
    weight_decay: float,
    decay_set: str,
    skip_nonfinite: bool,
    axis_name: str | None,
) -> StepFn:
  """Pure supervised step; see `make_supervised_step`."""

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    images, labels = batch["image"], batch["label"]
    global_batch = labels.shape[0] * _axis_size(axis_name)
    mask = losses.decay_mask(state.params, decay_set)

    def loss_fn(params):
      features, model_state = models.apply_encoder(
          model, params, state.model_state, images, train=True
      )
      logits = models.apply_head(model, params, features, head)
      ce_sum = jnp.sum(losses.cross_entropy(logits, labels))
      wd = weight_decay * losses.weight_decay(params, mask)
      # Per-device share of the global loss: the shares sum to the loss.
      loss = ce_sum / global_batch + wd / _axis_size(axis_name)
      return loss, (model_state, ce_sum, jnp.sum(losses.correct(logits, labels)), wd)

    grads, (model_state, ce_sum, hits, wd) = jax.grad(loss_fn, has_aux=True)(
        state.params
    )
    grads = _psum(grads, axis_name)
    model_state = _pmean(model_state, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ce = _psum(ce_sum, axis_name) / global_batch
    metrics = {
        "train/loss": ce + wd,
        f"train/{head}_loss": ce,
        f"train/{head}_accuracy": _psum(hits, axis_name) / global_batch,
        "train/weight_decay": wd,
        "train/grad_norm": optax.tree.norm(grads),
    }
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        model_state=model_state,
        opt_state=opt_state,
    )
    finite = _all_finite((metrics["train/loss"], grads))
    metrics["train/nonfinite"] = 1.0 - finite.astype(jnp.float32)
    if skip_nonfinite:
      new_state = _select(finite, new_state, state.replace(step=state.step + 1))
    return new_state, metrics

  return step


def make_supervised_step(
    *,
    model: models.TransferModel,
    tx: optax.GradientTransformation,
    head: str,
    weight_decay: float = 5e-4,
    decay_set: str = "kernels",
    skip_nonfinite: bool = True,
    parallelism: parallel.Parallelism | None = None,
) -> StepFn:
  """Compiled `(state, batch) -> (state, metrics)` for one head.

  Args:
    model: the transfer model.
    tx: model optimiser.
    head: 'src' (source pre-training) or 'tgt' (scratch, fine-tuning).
    weight_decay: coefficient of sum(p^2)/2.
    decay_set: which parameters decay ('kernels': the reference baselines).
    skip_nonfinite: leave the state unchanged on a non-finite loss/gradient.
    parallelism: how to compile (default: single-device `jax.jit`).

  Returns:
    The compiled step; metrics are scalars namespaced 'train/...'.
  """
  parallelism = parallelism or parallel.Parallelism()
  fn = _supervised_step_fn(
      model=model,
      tx=tx,
      head=head,
      weight_decay=weight_decay,
      decay_set=decay_set,
      skip_nonfinite=skip_nonfinite,
      axis_name=parallelism.axis_name,
  )
  return parallelism.compile_step(fn)


def _l2tl_step_fn(
    *,
    model: models.TransferModel,
    tx: optax.GradientTransformation,
    policy_tx: optax.GradientTransformation | None,
    options: L2TLOptions,
    axis_name: str | None,
) -> StepFn:
  """Pure L2TL outer step; see `make_l2tl_step`."""
  opts = options
  if opts.has_policy != (policy_tx is not None):
    raise ValueError(
        "A policy optimiser is needed exactly when class weights or alpha "
        "are learned."
    )
  if not (model.num_src_classes and model.num_tgt_classes):
    raise ValueError("The L2TL step needs a model with both heads.")
  fixed_weights = None
  if not opts.learns_classes:
    if len(opts.fixed_class_weights) != model.num_src_classes:
      raise ValueError(
          f"fixed_class_weights has {len(opts.fixed_class_weights)} entries "
          f"for {model.num_src_classes} source classes; give one per class."
      )
    fixed_weights = jnp.asarray(
        np.asarray(opts.fixed_class_weights, np.float32)
    )

  def inner_step(carry, xs, *, class_w, alpha, n_dev, decay_mask):
    params, model_state, opt_state = carry
    src, tgt = xs
    b_tgt_local = tgt["label"].shape[0]
    keep = b_tgt_local * n_dev  # B: as many source examples as target ones.
    # Top-k over the GLOBAL source batch, so every device agrees on the kept
    # set; each device then takes its slice of the kept examples.
    if axis_name is not None:
      src = jax.tree.map(
          lambda x: jax.lax.all_gather(x, axis_name, tiled=True), src
      )
    example_w = class_w[src["label"]]  # [M * B]
    idx, kept_w = losses.select_top_k(
        example_w, keep, renormalize=opts.src_normalization == "reference"
    )  # [B], [B]
    kept_images = src["image"][idx]
    kept_labels = src["label"][idx]
    if axis_name is not None:
      start = jax.lax.axis_index(axis_name) * b_tgt_local
      local = lambda x: jax.lax.dynamic_slice_in_dim(x, start, b_tgt_local)
      kept_images, kept_labels, kept_w = map(
          local, (kept_images, kept_labels, kept_w)
      )
    if opts.src_normalization == "reference":
      kept_count = jnp.sum(kept_w != 0).astype(jnp.float32)
      global_count = _psum(kept_count, axis_name)
    else:
      global_count = jnp.asarray(keep, jnp.float32)

    def loss_fn(params):
      images = jnp.concatenate([kept_images, tgt["image"]], axis=0)
      features, new_model_state = models.apply_encoder(
          model, params, model_state, images, train=True
      )
      src_features, tgt_features = jnp.split(features, [kept_images.shape[0]])
      src_logits = models.apply_head(model, params, src_features, "src")
      tgt_logits = models.apply_head(model, params, tgt_features, "tgt")
      src_num, _ = losses.weighted_ce_sums(src_logits, kept_labels, kept_w)
      tgt_sum = jnp.sum(losses.cross_entropy(tgt_logits, tgt["label"]))
      wd = opts.weight_decay * losses.weight_decay(params, decay_mask)
      # Per-device shares; summed over devices they give the global loss.
      src_share = losses.safe_ratio(src_num, global_count)
      loss = alpha * src_share + tgt_sum / keep + wd / n_dev
      return loss, (new_model_state, src_share, tgt_sum / keep, wd)

    grads, (model_state, src_loss, tgt_loss, wd) = jax.grad(
        loss_fn, has_aux=True
    )(params)
    grads = _psum(grads, axis_name)
    model_state = _pmean(model_state, axis_name)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {
        "train/src_loss": _psum(src_loss, axis_name),
        "train/tgt_loss": _psum(tgt_loss, axis_name),
        "train/weight_decay": wd,
        "train/grad_norm": optax.tree.norm(grads),
        "train/src_kept_nonzero": _psum(
            jnp.sum(kept_w != 0).astype(jnp.float32), axis_name
        ),
    }
    return (params, model_state, opt_state), metrics

  def rollout(state, src, tgt, class_w, alpha, n_dev):
    """N inner model steps with one action: (params, model_state, opt_state)."""
    body = lambda carry, xs: inner_step(
        carry,
        xs,
        class_w=class_w,
        alpha=alpha,
        n_dev=n_dev,
        decay_mask=losses.decay_mask(state.params, opts.decay_set),
    )
    carry = (state.params, state.model_state, state.opt_state)
    if opts.inner_loop == "scan":
      carry, inner_metrics = jax.lax.scan(body, carry, (src, tgt))
    else:
      per_step = []
      for i in range(opts.inner_steps):
        carry, m = body(carry, jax.tree.map(lambda x: x[i], (src, tgt)))
        per_step.append(m)
      inner_metrics = jax.tree.map(lambda *xs: jnp.stack(xs), *per_step)
    return carry, jax.tree.map(jnp.mean, inner_metrics)

  def val_sums(params, model_state, val, num_val):
    """(accuracy, mean cross-entropy) of the global validation batch.

    Also returns the local loss share (not summed over devices) for
    differentiation: summed over devices it is the mean loss.
    """
    features, _ = models.apply_encoder(
        model, params, model_state, val["image"], train=False
    )
    logits = models.apply_head(model, params, features, "tgt")
    hits = jnp.sum(losses.correct(logits, val["label"]))
    local_loss = jnp.sum(losses.cross_entropy(logits, val["label"])) / num_val
    return (
        _psum(hits, axis_name) / num_val,
        _psum(local_loss, axis_name),
        local_loss,
    )

  def fixed_or(value, fixed):
    return value if fixed is None else fixed

  def finish(state, carry, policy_params, policy_opt_state, metrics,
             baseline=None, reward=None):
    params, model_state, opt_state = carry
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        model_state=model_state,
        opt_state=opt_state,
        policy_params=policy_params,
        policy_opt_state=policy_opt_state,
    )
    if baseline is not None:
      new_state = new_state.replace(
          baseline_num=baseline[0], baseline_den=baseline[1]
      )
    if opts.learns_classes:
      metrics["policy/mean_expected_class_weight"] = jnp.mean(
          policy_lib.expected_class_weights(policy_params)
      )
    checked = [metrics["train/src_loss"], metrics["train/tgt_loss"], params,
               policy_params]
    if reward is not None:
      checked.append(reward)
    finite = _all_finite(checked)
    metrics["train/nonfinite"] = 1.0 - finite.astype(jnp.float32)
    if opts.skip_nonfinite:
      new_state = _select(finite, new_state, state.replace(step=state.step + 1))
    return new_state, metrics

  def meta_gradient_step(state, src, tgt, val, n_dev, num_val):
    """The model trains with the expected weights; the policy descends the
    gradient of the validation loss after the inner steps."""
    alpha_fixed = (
        None if opts.learns_alpha else jnp.asarray(opts.fixed_alpha, jnp.float32)
    )

    def objective(policy_params):
      class_w = fixed_or(
          policy_lib.expected_class_weights(policy_params)
          if opts.learns_classes else None,
          fixed_weights,
      )
      alpha = fixed_or(
          policy_lib.expected_alpha(policy_params, opts.loss_weight_scale)
          if opts.learns_alpha else None,
          alpha_fixed,
      )
      carry, metrics = rollout(state, src, tgt, class_w, alpha, n_dev)
      val_acc, val_loss, local_loss = val_sums(carry[0], carry[1], val, num_val)
      return local_loss, (carry, metrics, val_acc, val_loss, class_w, alpha)

    policy_grads, (carry, metrics, val_acc, val_loss, class_w, alpha) = (
        jax.grad(objective, has_aux=True)(state.policy_params)
    )
    # Each device differentiated its share of the validation loss.
    policy_grads = _psum(policy_grads, axis_name)
    updates, policy_opt_state = policy_tx.update(
        policy_grads, state.policy_opt_state, state.policy_params
    )
    policy_params = optax.apply_updates(state.policy_params, updates)
    metrics.update({
        "val/accuracy": val_acc,
        "val/loss": val_loss,
        # What the policy descends: the validation loss after the rollout.
        "policy/meta_objective": val_loss,
        "policy/grad_norm": optax.tree.norm(policy_grads),
        "policy/alpha": alpha,
        "policy/mean_class_weight": jnp.mean(class_w),
    })
    return finish(state, carry, policy_params, policy_opt_state, metrics,
                  reward=val_loss)

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    n_dev = _axis_size(axis_name)
    n = opts.inner_steps
    split_inner = lambda x: x.reshape((n, x.shape[0] // n, *x.shape[1:]))
    src = jax.tree.map(split_inner, batch["src"])
    tgt = jax.tree.map(split_inner, batch["tgt"])
    val = batch["val"]
    num_val = val["label"].shape[0] * n_dev
    if opts.estimator == "meta_gradient" and opts.has_policy:
      return meta_gradient_step(state, src, tgt, val, n_dev, num_val)

    # 1. Sample the policy (the key is replicated: the same draw everywhere).
    rng_policy = jax.random.fold_in(state.step_key(), 0)
    num_samples = opts.num_samples
    if opts.has_policy:
      if num_samples == 1:
        actions = policy_lib.sample(state.policy_params, rng_policy)
      else:
        actions = jax.vmap(policy_lib.sample, in_axes=(None, 0))(
            state.policy_params, jax.random.split(rng_policy, num_samples)
        )
    if opts.learns_classes:
      class_w = policy_lib.class_weights(actions["class"], opts.num_levels)
    else:
      class_w = fixed_weights
    if opts.learns_alpha:
      alpha = policy_lib.alpha_value(actions["alpha"], opts.loss_weight_scale)
    else:
      alpha = jnp.asarray(opts.fixed_alpha, jnp.float32)

    # 2.-3. N inner model steps with the action; the reward on the validation
    # batch with the UPDATED parameters.
    if opts.reward == "loss_improvement":
      _, val_loss_before, _ = val_sums(
          state.params, state.model_state, val, num_val
      )

    def score(class_w, alpha):
      carry, metrics = rollout(state, src, tgt, class_w, alpha, n_dev)
      val_acc, val_loss, _ = val_sums(carry[0], carry[1], val, num_val)
      if opts.reward == "accuracy":
        reward = val_acc
      elif opts.reward == "neg_loss":
        reward = -val_loss
      else:
        reward = val_loss_before - val_loss
      return carry, metrics, val_acc, val_loss, reward

    if num_samples == 1:
      carry, metrics, val_acc, val_loss, reward = score(class_w, alpha)
    else:
      in_axes = (0 if opts.learns_classes else None,
                 0 if opts.learns_alpha else None)
      if opts.samples_loop == "vmap":
        outcomes = jax.vmap(score, in_axes=in_axes)(class_w, alpha)
      else:
        pick = lambda x, axis, i: x if axis is None else x[i]
        outcomes = jax.tree.map(
            lambda *xs: jnp.stack(xs),
            *[score(pick(class_w, in_axes[0], i), pick(alpha, in_axes[1], i))
              for i in range(num_samples)],
        )
      carries, metrics, val_accs, val_losses, rewards = outcomes
      # The model carries on with sample 0.
      first = lambda x: x[0]
      carry, val_acc, val_loss = jax.tree.map(
          first, (carries, val_accs, val_losses)
      )
      metrics = jax.tree.map(first, metrics)
      class_w = class_w[0] if opts.learns_classes else class_w
      alpha = alpha[0] if opts.learns_alpha else alpha
      reward = jnp.mean(rewards)

    # 4. Baseline and advantage.
    num, den, baseline, advantage = update_baseline(
        state.baseline_num,
        state.baseline_den,
        reward,
        momentum=opts.baseline_momentum,
        order=opts.baseline_order,
    )
    if num_samples > 1:
      # Leave-one-out: each sample against the mean of the others.
      loo = (jnp.sum(rewards) - rewards) / (num_samples - 1)
      advantages = rewards - loo
      advantage = advantages[0]
      metrics["policy/reward_std"] = jnp.std(rewards)

    # 5. REINFORCE update of the policy.
    policy_params, policy_opt_state = state.policy_params, state.policy_opt_state
    if opts.has_policy:
      if not opts.learns_classes:
        # Only alpha is sampled; the class part of the log-prob is constant.
        actions = {**actions, "class": jnp.zeros_like(actions["class"])}
      loss = lambda p, a, adv: policy_lib.reinforce_loss(
          p,
          a,
          adv,
          class_reduction=opts.class_reduction,
          include_alpha=opts.learns_alpha,
          entropy_coef=opts.entropy_coef,
      )
      if num_samples == 1:
        policy_loss = lambda p: loss(p, actions, advantage)
      else:

        def policy_loss(p):
          values, aux = jax.vmap(loss, in_axes=(None, 0, 0))(
              p, actions, advantages
          )
          return jnp.mean(values), jax.tree.map(jnp.mean, aux)

      policy_grads, aux = jax.grad(policy_loss, has_aux=True)(policy_params)
      if not opts.learns_classes:
        policy_grads = {
            **policy_grads,
            "class_logits": jnp.zeros_like(policy_grads["class_logits"]),
        }
      updates, policy_opt_state = policy_tx.update(
          policy_grads, policy_opt_state, policy_params
      )
      policy_params = optax.apply_updates(policy_params, updates)
      metrics["policy/entropy"] = aux["entropy"]
      metrics["policy/log_prob"] = aux["log_prob"]
      metrics["policy/grad_norm"] = optax.tree.norm(policy_grads)

    metrics.update({
        "val/accuracy": val_acc,
        "val/loss": val_loss,
        "policy/reward": reward,
        "policy/baseline": baseline,
        "policy/advantage": advantage,
        "policy/alpha": alpha,
        "policy/mean_class_weight": jnp.mean(class_w),
    })
    return finish(state, carry, policy_params, policy_opt_state, metrics,
                  baseline=(num, den), reward=reward)

  return step


def make_l2tl_step(
    *,
    model: models.TransferModel,
    tx: optax.GradientTransformation,
    policy_tx: optax.GradientTransformation | None,
    options: L2TLOptions = L2TLOptions(),
    parallelism: parallel.Parallelism | None = None,
) -> StepFn:
  """Compiled L2TL outer step `(state, batch) -> (state, metrics)`.

  Args:
    model: transfer model with both heads.
    tx: model optimiser (its step counts inner steps).
    policy_tx: policy optimiser, or None when nothing is learned (uniform /
      fixed-weight joint training).
    options: see `L2TLOptions`.
    parallelism: how to compile (default: single-device `jax.jit`).

  Returns:
    The compiled step. Batch: {'src': {'image' [N*M*B, H, W, C], 'label'
    [N*M*B]}, 'tgt': {... [N*B]}, 'val': {... [V]}}. Metrics: scalars under
    'train/', 'val/' and 'policy/'.
  """
  parallelism = parallelism or parallel.Parallelism()
  fn = _l2tl_step_fn(
      model=model,
      tx=tx,
      policy_tx=policy_tx,
      options=options,
      axis_name=parallelism.axis_name,
  )
  return parallelism.compile_step(fn)


def check_l2tl_batch(batch: Batch, options: L2TLOptions) -> None:
  """Raises ValueError when batch sizes do not fit `options` (host side)."""
  for name in ("src", "tgt", "val"):
    if name not in batch:
      raise ValueError(f"L2TL batch needs a {name!r} entry; got {list(batch)}.")
  n_src, n_tgt = len(batch["src"]["label"]), len(batch["tgt"]["label"])
  n = options.inner_steps
  if n_tgt % n:
    raise ValueError(
        f"Target batch {n_tgt} is not divisible by inner_steps={n}."
    )
  if n_src != options.src_oversample * n_tgt:
    raise ValueError(
        f"Source batch must be src_oversample * target batch = "
        f"{options.src_oversample} * {n_tgt}, got {n_src}."
    )


def _eval_step_fn(model, head, axis_name):
  def step(params, model_state, batch):
    features, _ = models.apply_encoder(
        model, params, model_state, batch["image"], train=False
    )
    logits = models.apply_head(model, params, features, head)
    mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
    sums = {
        "hits": jnp.sum(mask * losses.correct(logits, batch["label"])),
        "loss": jnp.sum(mask * losses.cross_entropy(logits, batch["label"])),
        "count": jnp.sum(mask),
    }
    return _psum(sums, axis_name)

  return step


def make_eval_step(
    *,
    model: models.TransferModel,
    head: str = "tgt",
    parallelism: parallel.Parallelism | None = None,
) -> Callable[[Any, Any, Batch], dict[str, jax.Array]]:
  """Compiled `(params, model_state, batch) -> {'hits', 'loss', 'count'}`.

  Sums over the batch, weighted by batch['mask'] (padding has mask 0), so
  accuracies over a whole split are exact: sum(hits) / sum(count).
  """
  parallelism = parallelism or parallel.Parallelism()
  fn = _eval_step_fn(model, head, parallelism.axis_name)
  return parallelism.compile_eval(fn)


def evaluate(
    eval_step: Callable[..., dict[str, jax.Array]],
    params: Any,
    model_state: Any,
    batches: Sequence[Batch] | Any,
) -> dict[str, float]:
  """Accuracy and mean loss over an iterable of (masked) batches."""
  totals = None
  for batch in batches:
    sums = eval_step(params, model_state, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError("evaluate() got no batches.")
  totals = jax.device_get(totals)
  count = float(np.asarray(totals["count"]).reshape(-1)[0])
  return {
      "accuracy": float(np.asarray(totals["hits"]).reshape(-1)[0]) / count,
      "loss": float(np.asarray(totals["loss"]).reshape(-1)[0]) / count,
      "count": count,
  }
