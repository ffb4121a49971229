"""L2TLOptions: what the L2TL outer step does, fixed when it is built."""

from __future__ import annotations

import dataclasses
from typing import Any

from l2tl_jax import estimators
from l2tl_jax import losses
from l2tl_jax import outer
from l2tl_jax import policy as policy_lib

BASELINE_ORDERS = ("reference", "previous")
SAMPLES_LOOPS = ("vmap", "unroll")


# How alignment_ema normalises scores into weights (L2TLOptions).
ALIGNMENT_NORMALIZATIONS = ("step", "run")


@dataclasses.dataclass(frozen=True)
class L2TLOptions:
  """What the L2TL outer step does. Defaults reproduce the reference.

  Attributes:
    num_levels: K, weight levels per source class.
    class_weight_scale: lambda_c = a_c / class_weight_scale; None: K (the
      reference, lambda_c < 1). K / 2 lets a class weigh up to about 2 and
      starts the policy at an expected weight of about 1, uniform's.
    num_alpha_levels: levels of the alpha categorical.
    loss_weight_scale: alpha = a / loss_weight_scale.
    fixed_class_weights: None to sample class weights from the policy, or one
      fixed weight per source class (uniform joint training: all ones).
    fixed_alpha: None to sample alpha from the policy, or a fixed value.
    src_oversample: M; the source batch holds M * B examples of which the B
      with the largest weights are kept.
    src_selection: 'top_k' (reference): keep the B source examples with the
      largest weights; 'first': keep the first B (a uniform draw), whose
      weights only scale their losses.
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
    estimator: how the policy learns (`l2tl_jax.estimators.ESTIMATORS`).
      'alignment_ema' (mode 'recommended', score_every 4),
      'alignment_reinforce' and 'l2rw' learn class weights from the
      per-example alignment of source and validation gradients (alpha stays
      fixed; see the estimators module). 'reinforce' (reference): sample discrete actions, score them
      by the reward, REINFORCE. 'meta_gradient':
      no sampling; the model trains with the policy's EXPECTED class weights
      and alpha, and the policy descends the exact gradient of the
      validation cross-entropy after the inner step(s) with respect to its
      parameters, taken through the model optimiser's update (learning to
      reweight, Ren et al. 2018). reward, baseline_*, class_reduction,
      entropy_coef and num_samples only apply to 'reinforce'. Without a
      learned part (fixed class weights and alpha) estimator and
      num_samples are ignored: there is nothing to sample or differentiate.
    num_samples: S, policy samples per outer step (REINFORCE). With S > 1
      each sample runs its own inner step(s) from the same state (vmapped)
      and is scored on the same validation batch; the advantage of sample s
      is r_s minus the mean reward of the other samples (leave-one-out
      baseline), and the model carries on with sample 0's update. The EMA
      baseline then only tracks the mean reward for logging.
    samples_loop: how the S rollouts are compiled: 'vmap' (one batched
      program) or 'unroll' (S copies; on XLA:CPU, where batched convolutions
      with per-sample weights are slow, about 1.5x faster for S = 4).
    bn_mode: batch statistics of the joint batch: 'joint', 'target' or
      'frozen' (see `outer.JointProblem`; config.model.bn_mode).
    score_layers: the alignment estimators ('alignment_ema',
      'alignment_reinforce', 'l2rw') differentiate the encoder's last
      `score_layers` top-level modules (`outer.scored_layers`; with 2:
      LeNet fc1 and fc2; ResNet-18 layer4_0 and layer4_1, its whole last
      stage; ResNet-34/50 layer4_1 and layer4_2, two of the last stage's
      three blocks; BiT-R50x1 block4_unit03 and the pre-head norm); 0: all
      of it (the exact score).
    alignment_momentum: m of the alignment estimators' per-class EMAs.
    warmup_steps: 'alignment_ema' keeps every class weight at 1 (uniform
      joint training, exactly) for this many outer steps.
    score_every: 'alignment_ema' scores only every k-th outer step (the
      others reuse the class weights), dividing the scoring cost by k
      (mode 'recommended': 4; config.l2tl.score_every).
    alignment_normalize: how 'alignment_ema' turns scores into weights:
      'step' (Learning to Reweight's rule: w_i = max(0, s_i) over its mean
      across the step's source examples) or 'run' (w_i = max(0, s_i); the
      class EMAs' ratio and the final mean-1 scaling do the normalising, so
      no step's few large scores take that step's whole weight).
  """

  num_levels: int = 100
  class_weight_scale: float | None = None
  num_alpha_levels: int = 100
  loss_weight_scale: float = 100.0
  fixed_class_weights: tuple[float, ...] | None = None
  fixed_alpha: float | None = None
  src_oversample: int = 2
  src_normalization: str = "reference"
  src_selection: str = "top_k"
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
  bn_mode: str = "joint"
  score_layers: int = 2
  alignment_momentum: float = 0.99
  warmup_steps: int = 100
  score_every: int = 1
  alignment_normalize: str = "step"

  def __post_init__(self):
    if self.estimator not in estimators.CONFIG_NAMES:
      raise ValueError(
          f"estimator must be one of {estimators.CONFIG_NAMES}, got "
          f"{self.estimator!r}"
      )
    if self.samples_loop not in SAMPLES_LOOPS:
      raise ValueError(
          f"samples_loop must be 'vmap' or 'unroll', got {self.samples_loop!r}"
      )
    if self.num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {self.num_samples}.")
    if self.reward not in outer.REWARDS:
      raise ValueError(
          f"reward must be one of {tuple(outer.REWARDS)}, got {self.reward!r}")
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
    if self.src_selection not in outer.SRC_SELECTIONS:
      raise ValueError(
          f"src_selection must be one of {outer.SRC_SELECTIONS}, got "
          f"{self.src_selection!r}")
    if self.src_normalization not in outer.SRC_NORMALIZATIONS:
      raise ValueError(
          "src_normalization must be 'reference' or 'mean', got "
          f"{self.src_normalization!r}"
      )
    if self.bn_mode not in outer.BN_MODES:
      raise ValueError(
          f"bn_mode must be one of {outer.BN_MODES}, got {self.bn_mode!r}")
    if self.inner_loop not in outer.INNER_LOOPS:
      raise ValueError(
          f"inner_loop must be 'unroll' or 'scan', got {self.inner_loop!r}"
      )
    if self.class_weight_scale is not None and not self.class_weight_scale > 0:
      raise ValueError(
          f"class_weight_scale must be > 0, got {self.class_weight_scale}.")
    if self.inner_steps < 1 or self.src_oversample < 1:
      raise ValueError("inner_steps and src_oversample must be >= 1.")
    if not 0.0 <= self.baseline_momentum < 1.0:
      raise ValueError("baseline_momentum must be in [0, 1).")
    if not 0.0 <= self.alignment_momentum < 1.0:
      raise ValueError(
          f"alignment_momentum must be in [0, 1), got {self.alignment_momentum}.")
    if self.score_layers < 0 or self.warmup_steps < 0 or self.score_every < 1:
      raise ValueError(
          "score_layers and warmup_steps must be >= 0 and score_every >= 1, "
          f"got {self.score_layers}, {self.warmup_steps}, {self.score_every}.")
    if self.alignment_normalize not in ALIGNMENT_NORMALIZATIONS:
      raise ValueError(
          f"alignment_normalize must be one of {ALIGNMENT_NORMALIZATIONS}, "
          f"got {self.alignment_normalize!r}.")
    if self.fixed_class_weights is not None and any(
        w < 0 for w in self.fixed_class_weights
    ):
      raise ValueError("fixed_class_weights must be >= 0.")
    if self.has_policy:  # Refuses combinations no estimator runs.
      estimators.select(self)

  @property
  def learns_classes(self) -> bool:
    return self.fixed_class_weights is None

  @property
  def learns_alpha(self) -> bool:
    return self.fixed_alpha is None

  @property
  def class_weight_divisor(self) -> float:
    return (self.num_levels if self.class_weight_scale is None
            else self.class_weight_scale)

  @property
  def has_policy(self) -> bool:
    return self.learns_classes or self.learns_alpha

  def joint_batch_sizes(self, batch_size: int,
                        val_batch_size: int) -> dict[str, int]:
    """Examples per outer step of each joint stream, as the runs read them.

    Args:
      batch_size: B, config.train.batch_size (kept source and target
        examples per model step).
      val_batch_size: config.l2tl.val_batch_size (the reward batch).

    Returns:
      {'src': inner_steps * src_oversample * B, 'tgt': inner_steps * B,
       'val': val_batch_size}: the batch the L2TL step takes
      (`steps.make_l2tl_step`; the N inner steps split 'src' and 'tgt').
    """
    if batch_size < 1 or val_batch_size < 1:
      raise ValueError(
          f"batch_size and val_batch_size must be >= 1, got {batch_size} and "
          f"{val_batch_size}.")
    n = self.inner_steps
    return {"src": n * self.src_oversample * batch_size,
            "tgt": n * batch_size, "val": val_batch_size}

  @classmethod
  def from_config(
      cls,
      l2tl_config: Any,
      *,
      fixed_class_weights: tuple[float, ...] | None,
      fixed_alpha: float | None,
      weight_decay: float,
      decay_set: str,
      bn_mode: str = "joint",
  ) -> "L2TLOptions":
    """Options from a resolved config.l2tl block plus the method's choices.

    Every field of this class that config.l2tl names is read from it (so an
    option is one field here and one commented field in
    experiments/configs/default.py); the method decides the fixed weights
    and alpha, the train block the weight decay, the model block bn_mode.
    """
    fixed = {"fixed_class_weights": fixed_class_weights,
             "fixed_alpha": fixed_alpha, "weight_decay": weight_decay,
             "decay_set": decay_set, "bn_mode": bn_mode}
    read = {f.name: l2tl_config[f.name] for f in dataclasses.fields(cls)
            if f.name not in fixed and f.name in l2tl_config}
    return cls(**read, **fixed)
