"""Train and eval steps: pure functions compiled once by `parallel.compile_step`.

* `make_supervised_step`: one head, mean cross-entropy + weight decay. Source
  pre-training ('src'), training from scratch and fine-tuning ('tgt').
* `make_l2tl_step`: the L2TL outer step. The estimator that `L2TLOptions`
  select (`l2tl_jax.estimators`: fixed weights, REINFORCE, leave-one-out
  REINFORCE, meta-gradient) runs the model rollout on `alpha *
  weighted_source_ce + target_ce + wd` (built from `l2tl_jax.outer`) and
  updates the policy; this module splits the batch, calls it and guards
  against non-finite values.
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
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from l2tl_jax import estimators
from l2tl_jax import losses
from l2tl_jax import models
from l2tl_jax import options as options_lib
from l2tl_jax import outer
from l2tl_jax import parallel
from l2tl_jax import policy as policy_lib
from l2tl_jax.train_state import TrainState

Batch = dict[str, Any]
Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]

L2TLOptions = options_lib.L2TLOptions


def all_finite(tree) -> jax.Array:
  """Whether every leaf of `tree` is finite (True for an empty tree)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def keep_if_finite(finite: jax.Array, new, old):
  """`new` where `finite`, else `old`, leaf by leaf."""
  return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)


def _supervised_step_fn(
    *,
    model: models.TransferModel,
    tx: optax.GradientTransformation,
    head: str,
    weight_decay: float,
    decay_set: str,
    skip_nonfinite: bool,
    axis_name: str | None,
    bn_mode: str = "joint",
) -> StepFn:
  """Pure supervised step; see `make_supervised_step`."""
  # 'frozen': the running batch statistics normalise and are not updated.
  train_bn = bn_mode != "frozen"

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    images, labels = batch["image"], batch["label"]
    global_batch = labels.shape[0] * parallel.axis_size(axis_name)
    mask = losses.decay_mask(state.params, decay_set)

    def loss_fn(params):
      features, model_state = models.apply_encoder(
          model, params, state.model_state, images, train=train_bn
      )
      logits = models.apply_head(model, params, features, head)
      ce_sum = jnp.sum(losses.cross_entropy(logits, labels))
      wd = weight_decay * losses.weight_decay(params, mask)
      # Per-device share of the global loss: the shares sum to the loss.
      loss = ce_sum / global_batch + wd / parallel.axis_size(axis_name)
      return loss, (model_state, ce_sum, jnp.sum(losses.correct(logits, labels)), wd)

    grads, (model_state, ce_sum, hits, wd) = jax.grad(loss_fn, has_aux=True)(
        state.params
    )
    grads = parallel.psum(grads, axis_name)
    model_state = parallel.pmean(model_state, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ce = parallel.psum(ce_sum, axis_name) / global_batch
    metrics = {
        "train/loss": ce + wd,
        f"train/{head}_loss": ce,
        f"train/{head}_accuracy": parallel.psum(hits, axis_name) / global_batch,
        "train/weight_decay": wd,
        "train/grad_norm": optax.tree.norm(grads),
    }
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        model_state=model_state,
        opt_state=opt_state,
    )
    finite = all_finite((metrics["train/loss"], grads))
    metrics["train/nonfinite"] = 1.0 - finite.astype(jnp.float32)
    if skip_nonfinite:
      new_state = keep_if_finite(finite, new_state,
                                 state.replace(step=state.step + 1))
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
    bn_mode: str = "joint",
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
    bn_mode: 'frozen' keeps batch statistics at their running (e.g.
      pretrained) values; 'joint' / 'target' (one data stream here: the
      same) normalise by and update from the batch.

  Returns:
    The compiled step; metrics are scalars namespaced 'train/...'.
  """
  parallelism = parallelism or parallel.Parallelism()
  if bn_mode not in outer.BN_MODES:
    raise ValueError(f"bn_mode must be one of {outer.BN_MODES}, got "
                     f"{bn_mode!r}.")
  fn = _supervised_step_fn(
      model=model,
      tx=tx,
      head=head,
      weight_decay=weight_decay,
      decay_set=decay_set,
      skip_nonfinite=skip_nonfinite,
      axis_name=parallelism.axis_name,
      bn_mode=bn_mode,
  )
  return parallelism.compile_step(fn)


def init_estimator_state(options: L2TLOptions, num_src_classes: int = 0) -> Any:
  """The initial estimator state of the L2TL step `options` build."""
  return estimators.select(options).init(num_src_classes)


def _check_l2tl_build(model, policy_tx, options, estimator) -> None:
  if estimator.learns != (policy_tx is not None):
    raise ValueError(
        "A policy optimiser is needed exactly when class weights or alpha "
        "are learned."
    )
  if not (model.num_src_classes and model.num_tgt_classes):
    raise ValueError("The L2TL step needs a model with both heads.")
  fixed = options.fixed_class_weights
  if fixed is not None and len(fixed) != model.num_src_classes:
    raise ValueError(
        f"fixed_class_weights has {len(fixed)} entries for "
        f"{model.num_src_classes} source classes; give one per class."
    )


def _check_estimator_state(state: TrainState, estimator) -> None:
  """At trace time: the state carries what this step's estimator keeps."""
  want = jax.tree.structure(estimator.init(0))
  got = jax.tree.structure(state.estimator_state)
  if want != got:
    raise ValueError(
        f"The train state's estimator_state ({got}) is not the state of the "
        f"{estimator.name!r} estimator ({want}); create the state with "
        "train_state.create(..., estimator_state="
        "steps.init_estimator_state(options, num_src_classes))."
    )


def _finish(state: TrainState, outcome: estimators.Outcome,
            options: L2TLOptions, estimator: estimators.Estimator
            ) -> tuple[TrainState, Metrics]:
  """The new state, or the old one (step + 1) when anything is non-finite."""
  params, model_state, opt_state = outcome.carry
  metrics = outcome.metrics
  new_state = state.replace(
      step=state.step + 1,
      params=params,
      model_state=model_state,
      opt_state=opt_state,
      policy_params=outcome.policy_params,
      policy_opt_state=outcome.policy_opt_state,
      estimator_state=outcome.estimator_state,
  )
  if options.learns_classes:
    metrics["policy/mean_expected_class_weight"] = jnp.mean(
        estimator.class_weights(outcome.policy_params,
                                outcome.estimator_state, options))
  finite = all_finite([metrics["train/src_loss"], metrics["train/tgt_loss"],
                       params, outcome.policy_params, outcome.checked])
  metrics["train/nonfinite"] = 1.0 - finite.astype(jnp.float32)
  if options.skip_nonfinite:
    new_state = keep_if_finite(finite, new_state,
                               state.replace(step=state.step + 1))
  return new_state, metrics


def _l2tl_step_fn(
    *,
    model: models.TransferModel,
    tx: optax.GradientTransformation,
    policy_tx: optax.GradientTransformation | None,
    options: L2TLOptions,
    axis_name: str | None,
) -> StepFn:
  """Pure L2TL outer step; see `make_l2tl_step`."""
  estimator = estimators.select(options)
  _check_l2tl_build(model, policy_tx, options, estimator)
  fixed = options.fixed_class_weights
  spec = estimators.Spec(
      problem=outer.JointProblem(
          model=model, tx=tx, weight_decay=options.weight_decay,
          decay_set=options.decay_set,
          src_normalization=options.src_normalization,
          inner_loop=options.inner_loop, axis_name=axis_name,
          bn_mode=options.bn_mode, src_selection=options.src_selection),
      options=options,
      policy_tx=policy_tx,
      fixed_class_weights=None if fixed is None else jnp.asarray(
          np.asarray(fixed, np.float32)),
  )

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    _check_estimator_state(state, estimator)
    n = options.inner_steps
    data = estimators.OuterData(
        src=outer.split_inner(batch["src"], n),
        tgt=outer.split_inner(batch["tgt"], n),
        val=batch["val"])
    return _finish(state, estimator.update(state, data, spec), options,
                   estimator)

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
    num_classes = logits.shape[-1]
    true = jax.nn.one_hot(batch["label"], num_classes) * mask[:, None]
    predicted = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes)
    sums = {
        "hits": jnp.sum(mask * losses.correct(logits, batch["label"])),
        "loss": jnp.sum(mask * losses.cross_entropy(logits, batch["label"])),
        "count": jnp.sum(mask),
        "confusion": true.T @ predicted,  # [C, C]: true class x predicted.
    }
    return parallel.psum(sums, axis_name)

  return step


def make_eval_step(
    *,
    model: models.TransferModel,
    head: str = "tgt",
    parallelism: parallel.Parallelism | None = None,
) -> Callable[[Any, Any, Batch], dict[str, jax.Array]]:
  """Compiled `(params, model_state, batch) -> {'hits', 'loss', 'count',
  'confusion'}`.

  Sums over the batch, weighted by batch['mask'] (padding has mask 0), so
  accuracies over a whole split are exact: sum(hits) / sum(count).
  'confusion' [C, C] counts the examples of each true class (row) by
  predicted class (column).
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
  """Accuracy, mean loss and confusion matrix over (masked) batches.

  Returns:
    {'accuracy', 'loss', 'count', 'confusion'}: 'confusion' is an int
    [C, C] array, rows the true classes, columns the predicted ones.
  """
  totals = None
  for batch in batches:
    sums = eval_step(params, model_state, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError("evaluate() got no batches.")
  totals = jax.device_get(totals)
  confusion = np.asarray(totals["confusion"])
  if confusion.ndim == 3:  # pmap: one (equal) copy per device.
    confusion = confusion[0]
  count = float(np.asarray(totals["count"]).reshape(-1)[0])
  return {
      "accuracy": float(np.asarray(totals["hits"]).reshape(-1)[0]) / count,
      "loss": float(np.asarray(totals["loss"]).reshape(-1)[0]) / count,
      "count": count,
      "confusion": np.rint(confusion).astype(np.int64),
  }


def per_class(confusion: np.ndarray,
              class_names: Sequence[str]) -> dict[str, Any]:
  """Per-class accuracy (None for a class without examples) and the matrix.

  Args:
    confusion: [C, C] counts, rows the true classes.
    class_names: the C class names in label order.
  """
  confusion = np.asarray(confusion)
  chex.assert_shape(confusion, (len(class_names), len(class_names)))
  totals = confusion.sum(axis=1)
  accuracy = {
      name: (float(confusion[i, i] / totals[i]) if totals[i] else None)
      for i, name in enumerate(class_names)}
  return {"per_class_accuracy": accuracy,
          "confusion": confusion.astype(int).tolist()}
