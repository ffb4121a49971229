"""The objects of one run: model, weights, compiled steps, input streams.

`Run` builds them from a `l2tl_jax.spec.RunSpec` (through
`l2tl_jax.build`): fresh variables, the loaded weights merged in
(`l2tl_jax.loading`), the method's fixed class weights (DATL's from the
pre-trained source classifier, `datl_class_weights`), the train state and
steps, and the input streams. The host loop (`l2tl_jax.loop`) drives it.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2tl_jax import build
from l2tl_jax import data
from l2tl_jax import estimators
from l2tl_jax import loading
from l2tl_jax import models
from l2tl_jax import parallel
from l2tl_jax import policy as policy_lib
from l2tl_jax import pretrain
from l2tl_jax import spec as spec_lib
from l2tl_jax import steps


def datl_class_weights(
    model: models.TransferModel,
    params: Any,
    model_state: Any,
    task: data.TransferTask,
    *,
    batch_size: int,
    par: parallel.Parallelism,
) -> np.ndarray:
  """DATL importance weights P_t(c) / P_s(c), scaled to a maximum of 1.

  P_t(c) is the pre-trained source classifier's mean predicted probability
  of source class c over the target train images; P_s(c) the source class
  frequency. The pass over the target train images is compiled and placed
  by `par`, as the evaluation step is.

  Args:
    model: the run's model (with a 'src' head).
    params, model_state: host variables holding the pre-trained encoder
      and source head.
    task: the transfer task (target train images, source class prior).
    batch_size: evaluation batch size (rounded up to the device count).
    par: the run's parallelism.

  Returns:
    [C_src] float32 weights, the largest 1.
  """

  def prob_sums(params, model_state, batch):
    features, _ = models.apply_encoder(
        model, params, model_state, batch["image"], train=False
    )
    probs = jax.nn.softmax(models.apply_head(model, params, features, "src"))
    sums = jnp.sum(probs * batch["mask"][:, None], axis=0)  # [C_src]
    return parallel.psum(sums, par.axis_name)

  step = par.compile_eval(prob_sums)
  params, model_state = par.put_replicated((params, model_state))
  batches = data.eval_batches(task.tgt_train,
                              batch_size=par.round_up(batch_size),
                              **par.data_shard)
  total = sum(
      np.asarray(par.unreplicate(step(params, model_state, par.put_batch(b))))
      for b in batches
  )
  p_tgt = total / len(task.tgt_train)
  weights = p_tgt / np.maximum(pretrain.source_class_prior(task), 1e-12)
  return weights / weights.max()


class Run:
  """Everything built for one run; `l2tl_jax.loop.HostLoop` drives it.

  Attributes:
    spec, task, par: what it was built from.
    joint: whether the method trains on source and target batches.
    info: what results.json records of the construction (loaded weights,
      pre-training, DATL's class weights).
    model, options, state, train_step, eval_step: from `build.target_stage`
      (`state` placed for the compiled steps).
    batches: the resumable input stream.
  """

  def __init__(self, spec: spec_lib.RunSpec, task, workdir, par,
               loaded=None):
    self.spec, self.task, self.par = spec, task, par
    method = spec.method
    self.joint = method.joint
    needs_source = method.joint or (method.init == "pretrained"
                                    and loaded is None)
    if needs_source and task.src_train is None:
      raise data.DataError(
          f"Method {method.name!r} needs source data"
          + ("" if method.joint else " to pre-train on (or weights: "
             "config.model.init_from)")
          + "; set config.data.source.")
    self.info: dict[str, Any] = {}
    shapes = build.Shapes.of(task)
    model = build.make_model(spec.model, heads=method.heads, shapes=shapes,
                             axis_name=par.axis_name)
    rng_init, rng_state = jax.random.split(jax.random.key(spec.seed))
    params, model_state = models.init_variables(model, rng_init,
                                                task.image_shape)
    self.src_head_loaded = False
    if method.init == "pretrained":
      params, model_state = self._load(spec, task, workdir, par, method,
                                       params, model_state, loaded)
    datl_weights = None
    learned = method.class_weights == "learned"
    if method.class_weights == "datl" or (learned and self.src_head_loaded):
      estimate = datl_class_weights(
          model, params, model_state, task,
          batch_size=spec.eval.batch_size, par=par)
      if learned:
        # What DATL would weight, to compare the learned ranking with at the
        # end (`selection_check`); nothing in training reads it.
        self.info["datl_estimate"] = dict(zip(
            task.src_class_names, (round(float(w), 6) for w in estimate)))
      else:
        datl_weights = estimate
    class_weights = build.fixed_class_weights(
        method, shapes, datl_weights, spec.policy.fixed_class_weights)
    if datl_weights is not None:
      self.info["datl_class_weights"] = dict(
          zip(task.src_class_names, class_weights))
    if method.joint and task.tgt_val is None:
      raise ValueError(
          f"Method {method.name!r} needs a target validation split; set "
          "config.data.target_val_split.")
    parts = build.target_stage(
        spec, model=model, params=params,
        model_state=model_state, rng=rng_state, par=par,
        class_weights=class_weights)
    self.model, self.options = model, parts.options
    self.state, self.train_step = parts.state, parts.train_step
    self.eval_step = parts.eval_step
    self.batches = self._batches(spec, task, method)

  def _load(self, spec, task, workdir, par, method, params, model_state,
            loaded):
    """Merges the weights a run starts from into fresh params.

    spec.model.init_from names a weights file or checkpoint; otherwise the
    source pre-training (cached) provides them. A file's classifier becomes
    the source head of the joint methods (when the file has none, the source
    head starts fresh); the target head always starts fresh.
    """
    parts = method.loaded_parts
    if loaded is not None:  # weights.load(spec.model.init_from)
      src_params, src_model_state = loaded.params, loaded.model_state
      if "src_head" not in src_params:
        parts = tuple(p for p in parts if p != "src_head")
      self.info["init_from"] = {
          "path": os.path.abspath(spec.model.init_from),
          "family": loaded.family, "format": loaded.info.get("format"),
          "source_head_classes": loaded.source_head_classes,
          "loaded_parts": list(parts)}
      source = f"weights file {spec.model.init_from}"
    else:
      cache = spec.host.pretrain_cache_dir or os.path.join(workdir,
                                                           "pretrain")
      src_params, src_model_state, info = pretrain.pretrained(
          spec, task, cache, par)
      self.info["pretrain"] = info
      source = f"source pre-training {info['path']}"
    # The source head holds a trained source classifier (DATL's estimate
    # reads it) unless it stays fresh.
    self.src_head_loaded = "src_head" in parts and not any(
        re.fullmatch(p, "src_head/Dense_0/kernel")
        for p in spec.model.dont_load)
    return loading.merge_variables(
        params, model_state, src_params, src_model_state, parts=parts,
        dont_load=spec.model.dont_load, source=source)

  def _batches(self, spec, task, method):
    seed = spec.seed
    # This process's rows of every batch, read with the configured threads.
    shard = dict(self.par.data_shard, num_threads=spec.data.read_threads)
    if not method.joint:
      return data.train_iterator(
          task.tgt_train, batch_size=spec.train.batch_size, seed=seed,
          augment=spec.data.augment, drop_remainder=False, **shard)
    sizes = spec.joint_batch_sizes()
    # Batches run across epoch boundaries, as the reference's
    # shuffle().repeat().batch().
    stream = lambda split, size, **kw: data.train_iterator(
        split, batch_size=size, seed=seed, drop_remainder=False, **shard,
        **kw)
    return data.joint_iterator({
        "src": stream(task.src_train, sizes["src"]),
        "tgt": stream(task.tgt_train, sizes["tgt"], augment=spec.data.augment),
        "val": stream(task.tgt_val, sizes["val"]),
    })

  def evaluate(self, variables, split) -> dict[str, float]:
    """Accuracy and loss over `split` of host (params, model_state)."""
    params, model_state = self.par.put_replicated(variables)
    batch_size = self.par.round_up(self.spec.eval.batch_size)
    batches = (
        self.par.put_batch(b)
        for b in data.eval_batches(split, batch_size=batch_size,
                                   **self.par.data_shard)
    )
    return steps.evaluate(self.eval_step, params, model_state, batches)

  def host_state(self) -> Any:
    """One copy of the train state, on the host."""
    return jax.device_get(self.par.unreplicate(self.state))

  def host_variables(self) -> tuple[Any, Any]:
    """One copy of (params, model_state), on the host (not the optimiser
    and policy states)."""
    return jax.device_get(self.par.unreplicate(
        (self.state.params, self.state.model_state)))

  def learned_weights(self) -> dict[str, Any]:
    """`expected_weights` of the current state, fetching only the policy's
    params and the estimator's state to the host."""
    if self.options is None or not self.options.has_policy:
      return {}
    return self.expected_weights(*jax.device_get(self.par.unreplicate(
        (self.state.policy_params, self.state.estimator_state))))

  def expected_weights(self, policy_params, estimator_state) -> dict[str, Any]:
    """The learned class weights (the policy's expectation, or the
    estimator's own) and the policy's expected alpha, when learned.

    Args:
      policy_params, estimator_state: host copies, from the train state.

    Returns:
      {'policy/expected_class_weights': [C_src] list (rounded to 6 digits),
       'policy/expected_alpha': float}, each when learned; {} otherwise.
    """
    if self.options is None or not self.options.has_policy:
      return {}
    out = {}
    if self.options.learns_classes:
      estimator = estimators.select(self.options)
      out["policy/expected_class_weights"] = np.asarray(
          estimator.class_weights(policy_params, estimator_state,
                                  self.options)
      ).round(6).tolist()
    if self.options.learns_alpha:
      out["policy/expected_alpha"] = float(
          policy_lib.expected_alpha(
              policy_params, self.options.loss_weight_scale
          )
      )
    return out
