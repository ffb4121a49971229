"""The alignment estimators: class weights from the validation gradient.

Every one scores each source example of the outer step by the alignment of
its gradient with the validation gradient (`alignment.alignment_scores`),
turns the scores into Learning to Reweight's weights w_i = max(0, s_i) /
mean max(0, s) (`alignment.positive_weights`) and keeps a per-class EMA of
them (`AlignmentState`):

  alignment_ema        class weights from the per-class EMA, mean 1 over
                       classes, uniform for a warm-up (`alignment_update`).
  alignment_reinforce  the paper's per-class categoricals, REINFORCE with one
                       reward per class every step.
  l2rw                 Learning to Reweight: w_i replaces the class weight of
                       each source example every step.

They learn class weights only; alpha stays at config.l2tl.fixed_alpha. Their
entries (and the checks of the options they run with) are in
`l2tl_jax.estimators.ESTIMATORS`.
"""

from __future__ import annotations

import chex
import flax.struct
import jax
import jax.numpy as jnp
import optax

from l2tl_jax import alignment
from l2tl_jax import parallel
from l2tl_jax import policy as policy_lib
from l2tl_jax.estimators_common import (
    OuterData,
    Outcome,
    Spec,
    action_weights,
    fixed_alpha,
    rollout,
    sample,
    val_stats,
)


@flax.struct.dataclass
class AlignmentState:
  """Per-class EMA of the alignment weights (`alignment_update`).

  Attributes:
    num: [C] EMA of the per-step sum of the weights w_i of class c.
    den: [C] EMA of the per-step count of class c's examples; num / den is
      the class's mean weight, bias-corrected (the ratio of two EMAs started
      at 0 needs no other correction).
    count: int32, scored steps so far.
    weights: [C] the class weights of the last step (what reports show).
  """

  num: jax.Array
  den: jax.Array
  count: jax.Array
  weights: jax.Array


def init_alignment(num_classes: int = 0) -> AlignmentState:
  """Zero EMAs, class weights 1."""
  # Distinct buffers: the state is donated to the compiled step.
  zeros = lambda: jnp.zeros((num_classes,), jnp.float32)
  return AlignmentState(num=zeros(), den=zeros(),
                        count=jnp.zeros((), jnp.int32),
                        weights=jnp.ones((num_classes,), jnp.float32))


def alignment_class_means(num: jax.Array, den: jax.Array) -> jax.Array:
  """num / den per class, 0 where a class was never seen (den = 0)."""
  chex.assert_rank([num, den], 1)
  chex.assert_equal_shape([num, den])
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def mean_one(values: jax.Array) -> jax.Array:
  """C * v / sum(v): class weights of mean 1; all 1 when the sum is 0."""
  chex.assert_rank(values, 1)
  total = jnp.sum(values)
  return jnp.where(total > 0, values.shape[0] * values /
                   jnp.where(total > 0, total, 1.0), 1.0)


def _alignment_signal(state, data: OuterData, spec: Spec,
                      normalize: bool = True):
  """(weights w [N*M*B_local], their labels, the global mean score).

  w_i = max(0, s_i) / mean max(0, s) (`alignment.positive_weights`) of the
  alignment scores at the state's parameters; without `normalize`,
  w_i = max(0, s_i).

  Scores every source example of the outer step (all N inner slices) before
  any selection, against the validation batch, at the parameters before the
  model update.
  """
  problem, opts = spec.problem, spec.options
  src = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), data.src)
  scores = alignment.alignment_scores(
      state.params, state.model_state, src, data.val, problem=problem,
      layers=opts.score_layers)
  # The global mean score, for the logs (equal shards on every device).
  mean_score = parallel.pmean(jnp.mean(scores), problem.axis_name)
  weights = (alignment.positive_weights(scores, problem.axis_name)
             if normalize else jnp.maximum(scores, 0.0))
  return weights, src["label"], mean_score


def _class_sums(est: AlignmentState, weights, labels, spec: Spec):
  """This step's per-class (sum of w_i, count), global."""
  return alignment.class_sums(weights, labels, est.num.shape[0],
                          spec.problem.axis_name)


def _ema_step(est: AlignmentState, sums, counts, spec: Spec):
  """The EMAs after one scored step with class sums and counts: (num, den)."""
  m = spec.options.alignment_momentum
  return m * est.num + (1 - m) * sums, m * est.den + (1 - m) * counts


def _score_now(state, spec: Spec) -> jax.Array:
  every = spec.options.score_every
  return (state.step % every == 0) if every > 1 else jnp.array(True)


def alignment_update(state, data: OuterData, spec: Spec) -> Outcome:
  """Class weights from the per-class EMA of the alignment weights.

  Per outer step: w_i = max(0, s_i) / mean max(0, s) over the global source
  batch (`alignment.positive_weights`; with config.l2tl.alignment_normalize
  'run', w_i = max(0, s_i)); per class, EMAs (momentum
  config.l2tl.alignment_momentum) of the sum of w_i and of the count; class
  weights lambda = 1 during the first config.l2tl.warmup_steps outer steps,
  then C * A / sum(A) with A_c = num_c / den_c (mean 1 over classes). The
  model step is the fixed-weight step with lambda (alpha fixed): with all
  lambda 1 it is uniform joint training's step exactly. With score_every
  = k > 1 only every k-th step scores (the others keep the EMAs and weights).
  """
  est = state.estimator_state
  opts = spec.options

  def scored(est):
    weights, labels, mean_score = _alignment_signal(
        state, data, spec, normalize=opts.alignment_normalize == "step")
    num, den = _ema_step(est, *_class_sums(est, weights, labels, spec), spec)
    return est.replace(num=num, den=den, count=est.count + 1), mean_score

  def skipped(est):
    return est, jnp.zeros((), jnp.float32)

  est, mean_score = jax.lax.cond(_score_now(state, spec), scored, skipped,
                                 est)
  learned = mean_one(alignment_class_means(est.num, est.den))
  class_w = jnp.where(state.step >= opts.warmup_steps, learned,
                      jnp.ones_like(learned))
  est = est.replace(weights=class_w)
  alpha = fixed_alpha(spec)
  carry, metrics = rollout(state, data, spec, class_w, alpha)
  after = val_stats(carry, data, spec)
  metrics.update({
      "val/accuracy": after.accuracy,
      "val/loss": after.loss,
      "policy/alpha": alpha,
      "policy/mean_class_weight": jnp.mean(class_w),
      "policy/max_class_weight": jnp.max(class_w),
      "policy/mean_alignment": mean_score,
  })
  return Outcome(carry, state.policy_params, state.policy_opt_state, est,
                 metrics, after.loss)


def per_class_advantages(class_means: jax.Array, present: jax.Array,
                         weights: jax.Array,
                         expected: jax.Array) -> jax.Array:
  """REINFORCE advantages of the per-class actions (`alignment_reinforce`).

  Class c's reward is its chosen weight times its centred alignment,
  R_c = lambda_c * (r_c - r_bar), with r_c the mean alignment weight of its
  examples this step and r_bar the mean of r over the classes present: the
  first-order share of the validation improvement that class c's weight
  buys, relative to an average class. Its baseline E[lambda_c] * (r_c -
  r_bar) does not depend on the action, so the advantage is (lambda_c -
  E[lambda_c]) * (r_c - r_bar); 0 for classes absent from the batch.

  Args:
    class_means: [C] r_c (0 where absent).
    present: [C] bool, the class has examples this step.
    weights: [C] the sampled lambda_c.
    expected: [C] E[lambda_c] under the policy.
  """
  chex.assert_rank([class_means, present, weights, expected], 1)
  chex.assert_equal_shape([class_means, present, weights, expected])
  n = jnp.maximum(jnp.sum(present), 1)
  r_bar = jnp.sum(jnp.where(present, class_means, 0.0)) / n
  return jnp.where(present, (weights - expected) * (class_means - r_bar), 0.0)


def alignment_reinforce_update(state, data: OuterData, spec: Spec) -> Outcome:
  """The paper's per-class categoricals, REINFORCE with per-class rewards.

  Actions and the model rollout are the reference's (sampled class levels,
  lambda_c = a_c / class_weight_scale, alpha fixed); the policy's loss is
  -sum_c advantage_c log pi(a_c) with the advantages of
  `per_class_advantages`, from the alignment weights of this step's source
  examples (scored before the model update). The per-class EMA is kept for
  the reports.
  """
  opts = spec.options
  est = state.estimator_state
  actions = sample(state, opts, None)
  class_w, alpha = action_weights(actions, spec)
  weights, labels, mean_score = _alignment_signal(state, data, spec)
  sums, counts = _class_sums(est, weights, labels, spec)
  num, den = _ema_step(est, sums, counts, spec)
  expected = policy_lib.expected_class_weights(state.policy_params,
                                               opts.class_weight_divisor)
  advantages = jax.lax.stop_gradient(per_class_advantages(
      alignment_class_means(sums, counts), counts > 0, class_w, expected))

  def policy_loss(p):
    logp = jax.nn.log_softmax(p["class_logits"])  # [C, K]
    chosen = jnp.take_along_axis(logp, actions["class"][:, None], 1)[:, 0]
    return -jnp.sum(advantages * chosen)

  grads = jax.grad(policy_loss)(state.policy_params)
  updates, policy_opt_state = spec.policy_tx.update(
      grads, state.policy_opt_state, state.policy_params)
  policy_params = optax.apply_updates(state.policy_params, updates)
  carry, metrics = rollout(state, data, spec, class_w, alpha)
  after = val_stats(carry, data, spec)
  est = est.replace(num=num, den=den, count=est.count + 1,
                    weights=policy_lib.expected_class_weights(
                        policy_params, opts.class_weight_divisor))
  metrics.update({
      "val/accuracy": after.accuracy,
      "val/loss": after.loss,
      "policy/alpha": alpha,
      "policy/mean_class_weight": jnp.mean(class_w),
      "policy/grad_norm": optax.tree.norm(grads),
      "policy/mean_alignment": mean_score,
      "policy/mean_abs_advantage": jnp.mean(jnp.abs(advantages)),
  })
  return Outcome(carry, policy_params, policy_opt_state, est, metrics,
                 after.loss)


def l2rw_update(state, data: OuterData, spec: Spec) -> Outcome:
  """Learning to Reweight: fresh per-example weights every step.

  Per example, max(0, s_i) replaces the class weight; top-k keeps the B
  largest, rescaled to mean 1 over the kept ones, so that under 'mean'
  normalisation the source loss sum_kept w_i CE_i / B is Ren et al.'s
  weighted average of the kept examples' losses (the scale of uniform joint
  training's mean). The per-class EMA of the batch-normalised weights is
  kept for the reports (the classes' mean weights), not used by the step.
  Needs inner_steps = 1 (one kept set per scored batch).
  """
  est = state.estimator_state
  weights, labels, mean_score = _alignment_signal(state, data, spec)
  num, den = _ema_step(est, *_class_sums(est, weights, labels, spec), spec)
  est = est.replace(num=num, den=den, count=est.count + 1,
                    weights=mean_one(alignment_class_means(num, den)))
  keep = data.tgt["label"].shape[-1] * parallel.axis_size(
      spec.problem.axis_name)
  kept_mean = alignment.top_k_mean(weights, keep, spec.problem.axis_name)
  example_w = jnp.where(kept_mean > 0,
                        weights / jnp.where(kept_mean > 0, kept_mean, 1.0),
                        0.0)
  src = {**data.src, "weight": example_w.reshape(data.src["label"].shape)}
  alpha = fixed_alpha(spec)
  ones = jnp.ones_like(est.weights)
  carry, metrics = rollout(state, data._replace(src=src), spec, ones, alpha)
  after = val_stats(carry, data, spec)
  metrics.update({
      "val/accuracy": after.accuracy,
      "val/loss": after.loss,
      "policy/alpha": alpha,
      "policy/mean_alignment": mean_score,
      "policy/positive_share": parallel.pmean(
          jnp.mean((weights > 0).astype(jnp.float32)),
          spec.problem.axis_name),
  })
  return Outcome(carry, state.policy_params, state.policy_opt_state, est,
                 metrics, after.loss)
