"""How the L2TL policy learns: one table of estimators.

An estimator is a pair of pure functions, as an optax transform: `init()`
gives its own state (REINFORCE's EMA reward baseline; nothing for the
meta-gradient) and `update(state, data, spec)` runs one outer step's model
rollout and policy update and returns an `Outcome`. `steps.make_l2tl_step`
picks the entry with `select` when the step is built:

  fixed          no policy: fixed class weights and alpha (uniform joint
                 training, DATL, or any fixed weighting). The reward and its
                 EMA baseline are still computed and logged.
  reinforce      one sampled action, reward on the validation batch, EMA
                 baseline, REINFORCE (the reference).
  reinforce_loo  S > 1 samples rolled out from the same state; advantage of
                 sample s = r_s - mean of the other rewards; the model keeps
                 sample 0's update.
  meta_gradient  no sampling: the model trains with the policy's expected
                 weights and the policy descends the exact gradient of the
                 validation loss after the rollout (learning to reweight).
  alignment_ema  no policy: class weights from a per-class EMA of Learning to
                 Reweight's per-example weights (the positive part of the
                 alignment of each source example's gradient with the
                 validation gradient), mean 1 over classes, uniform for a
                 warm-up (exactly uniform joint training until then).
  alignment_reinforce
                 the paper's policy (per-class categoricals) trained by
                 REINFORCE with one reward per class every step, from the same
                 alignment weights (as Differentiable Data Selection).
  l2rw           Learning to Reweight (Ren et al. 2018): fresh per-example
                 weights max(0, s_i) / mean max(0, s) every step.

The three alignment estimators learn class weights only; alpha stays at
config.l2tl.fixed_alpha.

Adding an estimator: write its `update` (and `init` if it keeps state) from
the pieces in `l2tl_jax.outer`, and add an entry here.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any, NamedTuple

import chex
import flax.struct
import jax
import jax.numpy as jnp
import optax

from l2tl_jax import losses
from l2tl_jax import outer
from l2tl_jax import parallel
from l2tl_jax import policy as policy_lib


@flax.struct.dataclass
class BaselineState:
  """Bias-corrected EMA of the reward: baseline = num / den."""

  num: jax.Array
  den: jax.Array


def init_baseline(num_classes: int = 0) -> BaselineState:
  del num_classes  # One scalar baseline.
  return BaselineState(num=jnp.zeros((), jnp.float32),
                       den=jnp.zeros((), jnp.float32))


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
    raise ValueError(
        f"order must be 'reference' or 'previous', got {order!r}")
  return new_num, new_den, baseline, reward - baseline


class OuterData(NamedTuple):
  """One outer step's examples on this device.

  Attributes:
    src: source examples [N, M*B_local, ...] (N inner steps).
    tgt: target examples [N, B_local, ...].
    val: validation examples [V_local, ...].
  """

  src: Any
  tgt: Any
  val: Any


@dataclasses.dataclass(frozen=True)
class Spec:
  """What an estimator's update reads besides the state and the data.

  Attributes:
    problem: the joint problem (model, optimiser, loss settings, axis).
    options: the step's `L2TLOptions`.
    policy_tx: the policy optimiser (None for 'fixed').
    fixed_class_weights: [C_src] array when the class weights are fixed.
  """

  problem: outer.JointProblem
  options: Any
  policy_tx: optax.GradientTransformation | None
  fixed_class_weights: jax.Array | None


class Outcome(NamedTuple):
  """What an estimator's update returns.

  Attributes:
    carry: the model after the rollout the run keeps.
    policy_params: updated policy params.
    policy_opt_state: updated policy optimiser state.
    estimator_state: the estimator's new state.
    metrics: scalars 'train/...', 'val/...', 'policy/...'.
    checked: further values that must be finite for the step to count (the
      reward or objective).
  """

  carry: outer.ModelCarry
  policy_params: Any
  policy_opt_state: Any
  estimator_state: Any
  metrics: dict[str, jax.Array]
  checked: Any


def _rollout(state, data: OuterData, spec: Spec, class_w, alpha):
  carry = outer.ModelCarry(state.params, state.model_state, state.opt_state)
  return outer.rollout(
      carry, data.src, data.tgt, problem=spec.problem, class_weights=class_w,
      alpha=alpha, decay_mask=losses.decay_mask(
          state.params, spec.problem.decay_set))


def _val(carry: outer.ModelCarry, data: OuterData, spec: Spec):
  return outer.validation_stats(carry.params, carry.model_state, data.val,
                                problem=spec.problem)


def _fixed_alpha(spec: Spec) -> jax.Array:
  return jnp.asarray(spec.options.fixed_alpha, jnp.float32)


def _score(state, data: OuterData, spec: Spec, before, class_w, alpha):
  """Rollout with one action, then its reward: (carry, metrics, stats, r)."""
  carry, metrics = _rollout(state, data, spec, class_w, alpha)
  after = _val(carry, data, spec)
  reward = outer.REWARDS[spec.options.reward].fn(before, after)
  return carry, metrics, after, reward


def _before(state, data: OuterData, spec: Spec) -> outer.ValStats | None:
  """Validation stats before the rollout, when the reward needs them."""
  if not outer.REWARDS[spec.options.reward].needs_before:
    return None
  return _val(outer.ModelCarry(state.params, state.model_state, None),
              data, spec)


def _baseline(est_state: BaselineState, reward, options):
  num, den, baseline, advantage = update_baseline(
      est_state.num, est_state.den, reward,
      momentum=options.baseline_momentum, order=options.baseline_order)
  return BaselineState(num=num, den=den), baseline, advantage


def _reward_metrics(after, reward, baseline, advantage, alpha, class_w):
  return {
      "val/accuracy": after.accuracy,
      "val/loss": after.loss,
      "policy/reward": reward,
      "policy/baseline": baseline,
      "policy/advantage": advantage,
      "policy/alpha": alpha,
      "policy/mean_class_weight": jnp.mean(class_w),
  }


def fixed_update(state, data: OuterData, spec: Spec) -> Outcome:
  """No policy: the rollout with the fixed weights; the reward is logged."""
  class_w, alpha = spec.fixed_class_weights, _fixed_alpha(spec)
  before = _before(state, data, spec)
  carry, metrics, after, reward = _score(state, data, spec, before, class_w,
                                         alpha)
  est_state, baseline, advantage = _baseline(state.estimator_state, reward,
                                             spec.options)
  metrics.update(_reward_metrics(after, reward, baseline, advantage, alpha,
                                 class_w))
  return Outcome(carry, state.policy_params, state.policy_opt_state,
                 est_state, metrics, reward)


def _sample(state, options, num_samples: int | None):
  """Actions from the replicated step key: the same draw on every device."""
  rng = jax.random.fold_in(state.step_key(), 0)
  if num_samples is None:
    return policy_lib.sample(state.policy_params, rng)
  return jax.vmap(policy_lib.sample, in_axes=(None, 0))(
      state.policy_params, jax.random.split(rng, num_samples))


def _action_weights(actions, spec: Spec):
  """(class weights, alpha) of sampled actions; fixed parts stay fixed."""
  opts = spec.options
  if opts.learns_classes:
    class_w = policy_lib.class_weights(actions["class"],
                                       opts.class_weight_divisor)
  else:
    class_w = spec.fixed_class_weights
  if opts.learns_alpha:
    alpha = policy_lib.alpha_value(actions["alpha"], opts.loss_weight_scale)
  else:
    alpha = _fixed_alpha(spec)
  return class_w, alpha


def _policy_step(state, spec: Spec, actions, advantages, *, batched: bool):
  """REINFORCE update of the policy: (params, opt_state, metrics).

  Args:
    state: the train state (policy params and optimiser state).
    spec: the step's spec.
    actions: one action, or S actions along a leading axis (`batched`).
    advantages: scalar, or [S] (`batched`); the loss is their mean.
    batched: whether several samples are scored.
  """
  opts = spec.options
  if not opts.learns_classes:
    # Only alpha is sampled; the class part of the log-prob is constant.
    actions = {**actions, "class": jnp.zeros_like(actions["class"])}
  loss = lambda p, a, adv: policy_lib.reinforce_loss(
      p, a, adv, class_reduction=opts.class_reduction,
      include_alpha=opts.learns_alpha, entropy_coef=opts.entropy_coef)
  if batched:

    def policy_loss(p):
      values, aux = jax.vmap(loss, in_axes=(None, 0, 0))(p, actions,
                                                         advantages)
      return jnp.mean(values), jax.tree.map(jnp.mean, aux)
  else:
    policy_loss = lambda p: loss(p, actions, advantages)
  grads, aux = jax.grad(policy_loss, has_aux=True)(state.policy_params)
  if not opts.learns_classes:
    grads = {**grads, "class_logits": jnp.zeros_like(grads["class_logits"])}
  updates, policy_opt_state = spec.policy_tx.update(
      grads, state.policy_opt_state, state.policy_params)
  policy_params = optax.apply_updates(state.policy_params, updates)
  metrics = {"policy/entropy": aux["entropy"],
             "policy/log_prob": aux["log_prob"],
             "policy/grad_norm": optax.tree.norm(grads)}
  return policy_params, policy_opt_state, metrics


def reinforce_update(state, data: OuterData, spec: Spec) -> Outcome:
  """One sampled action, its reward, the EMA baseline, REINFORCE."""
  actions = _sample(state, spec.options, None)
  class_w, alpha = _action_weights(actions, spec)
  before = _before(state, data, spec)
  carry, metrics, after, reward = _score(state, data, spec, before, class_w,
                                         alpha)
  est_state, baseline, advantage = _baseline(state.estimator_state, reward,
                                             spec.options)
  policy_params, policy_opt_state, policy_metrics = _policy_step(
      state, spec, actions, advantage, batched=False)
  metrics.update(policy_metrics)
  metrics.update(_reward_metrics(after, reward, baseline, advantage, alpha,
                                 class_w))
  return Outcome(carry, policy_params, policy_opt_state, est_state, metrics,
                 reward)


def _score_samples(state, data, spec: Spec, before, class_w, alpha):
  """`_score` of S actions (vmapped or unrolled), stacked along axis 0."""
  opts = spec.options
  in_axes = (0 if opts.learns_classes else None,
             0 if opts.learns_alpha else None)
  score = lambda w, a: _score(state, data, spec, before, w, a)
  if opts.samples_loop == "vmap":
    return jax.vmap(score, in_axes=in_axes)(class_w, alpha)
  pick = lambda x, axis, i: x if axis is None else x[i]
  return jax.tree.map(
      lambda *xs: jnp.stack(xs),
      *[score(pick(class_w, in_axes[0], i), pick(alpha, in_axes[1], i))
        for i in range(opts.num_samples)])


def reinforce_loo_update(state, data: OuterData, spec: Spec) -> Outcome:
  """S actions from one state, leave-one-out advantages; keeps sample 0.

  The EMA baseline only tracks the mean reward, for logging.
  """
  opts = spec.options
  num_samples = opts.num_samples
  actions = _sample(state, opts, num_samples)
  class_w, alpha = _action_weights(actions, spec)
  before = _before(state, data, spec)
  carries, metrics, afters, rewards = _score_samples(
      state, data, spec, before, class_w, alpha)
  first = lambda x: x[0]
  carry, after, metrics = jax.tree.map(first, (carries, afters, metrics))
  class_w = class_w[0] if opts.learns_classes else class_w
  alpha = alpha[0] if opts.learns_alpha else alpha
  reward = jnp.mean(rewards)
  est_state, baseline, _ = _baseline(state.estimator_state, reward, opts)
  # Leave-one-out: each sample against the mean of the others.
  advantages = rewards - (jnp.sum(rewards) - rewards) / (num_samples - 1)
  metrics["policy/reward_std"] = jnp.std(rewards)
  policy_params, policy_opt_state, policy_metrics = _policy_step(
      state, spec, actions, advantages, batched=True)
  metrics.update(policy_metrics)
  metrics.update(_reward_metrics(after, reward, baseline, advantages[0],
                                 alpha, class_w))
  return Outcome(carry, policy_params, policy_opt_state, est_state, metrics,
                 reward)


def meta_gradient_update(state, data: OuterData, spec: Spec) -> Outcome:
  """The model trains with the expected weights; the policy descends the
  gradient of the validation loss after the rollout with respect to its
  logits, through the model optimiser's update (a second-order derivative).
  """
  opts = spec.options

  def objective(policy_params):
    class_w = (policy_lib.expected_class_weights(policy_params,
                                                 opts.class_weight_divisor)
               if opts.learns_classes else spec.fixed_class_weights)
    alpha = (policy_lib.expected_alpha(policy_params, opts.loss_weight_scale)
             if opts.learns_alpha else _fixed_alpha(spec))
    carry, metrics = _rollout(state, data, spec, class_w, alpha)
    after = _val(carry, data, spec)
    return after.local_loss, (carry, metrics, after, class_w, alpha)

  grads, (carry, metrics, after, class_w, alpha) = jax.grad(
      objective, has_aux=True)(state.policy_params)
  # Each device differentiated its share of the validation loss.
  grads = parallel.psum(grads, spec.problem.axis_name)
  updates, policy_opt_state = spec.policy_tx.update(
      grads, state.policy_opt_state, state.policy_params)
  policy_params = optax.apply_updates(state.policy_params, updates)
  metrics.update({
      "val/accuracy": after.accuracy,
      "val/loss": after.loss,
      # What the policy descends: the validation loss after the rollout.
      "policy/meta_objective": after.loss,
      "policy/grad_norm": optax.tree.norm(grads),
      "policy/alpha": alpha,
      "policy/mean_class_weight": jnp.mean(class_w),
  })
  return Outcome(carry, policy_params, policy_opt_state,
                 state.estimator_state, metrics, after.loss)


def _no_state(num_classes: int = 0) -> tuple[()]:
  del num_classes
  return ()


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


def _alignment_signal(state, data: OuterData, spec: Spec):
  """(weights w [N*M*B_local], their labels, the global mean score).

  w_i = max(0, s_i) / mean max(0, s) (`outer.positive_weights`) of the
  alignment scores at the state's parameters.

  Scores every source example of the outer step (all N inner slices) before
  any selection, against the validation batch, at the parameters before the
  model update.
  """
  problem, opts = spec.problem, spec.options
  src = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), data.src)
  scores = outer.alignment_scores(
      state.params, state.model_state, src, data.val, problem=problem,
      layers=opts.score_layers)
  # The global mean score, for the logs (equal shards on every device).
  mean_score = parallel.pmean(jnp.mean(scores), problem.axis_name)
  return (outer.positive_weights(scores, problem.axis_name), src["label"],
          mean_score)


def _class_sums(est: AlignmentState, weights, labels, spec: Spec):
  """This step's per-class (sum of w_i, count), global."""
  return outer.class_sums(weights, labels, est.num.shape[0],
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
  batch (`outer.positive_weights`); per class, EMAs (momentum
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
    weights, labels, mean_score = _alignment_signal(state, data, spec)
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
  alpha = _fixed_alpha(spec)
  carry, metrics = _rollout(state, data, spec, class_w, alpha)
  after = _val(carry, data, spec)
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
  actions = _sample(state, opts, None)
  class_w, alpha = _action_weights(actions, spec)
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
  carry, metrics = _rollout(state, data, spec, class_w, alpha)
  after = _val(carry, data, spec)
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
  kept_mean = outer.top_k_mean(weights, keep, spec.problem.axis_name)
  example_w = jnp.where(kept_mean > 0,
                        weights / jnp.where(kept_mean > 0, kept_mean, 1.0),
                        0.0)
  src = {**data.src, "weight": example_w.reshape(data.src["label"].shape)}
  alpha = _fixed_alpha(spec)
  ones = jnp.ones_like(est.weights)
  carry, metrics = _rollout(state, data._replace(src=src), spec, ones, alpha)
  after = _val(carry, data, spec)
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


def _check_samples(options) -> None:
  if options.num_samples != 1:
    raise ValueError(
        f"num_samples={options.num_samples}: sampling is a REINFORCE option; "
        f"the {options.estimator!r} estimator takes no samples. Set "
        "config.l2tl.num_samples=1.")


def _check_alignment(options) -> None:
  _check_samples(options)
  if options.learns_alpha:
    raise ValueError(
        f"The {options.estimator!r} estimator learns class weights only; "
        "alpha is config.l2tl.fixed_alpha (method l2tl takes it from there "
        "with this estimator). Use method l2tl or l2tl_fixed_alpha.")
  if not options.learns_classes:
    raise ValueError(
        f"The {options.estimator!r} estimator learns class weights; this "
        "method fixes them.")


def _check_l2rw(options) -> None:
  _check_alignment(options)
  if options.inner_steps != 1:
    raise ValueError(
        "The 'l2rw' estimator weights the examples of one model step; set "
        f"config.l2tl.inner_steps=1 (got {options.inner_steps}).")


def _check_loo(options) -> None:
  if options.num_samples < 2:
    raise ValueError(
        "The leave-one-out estimator needs config.l2tl.num_samples >= 2, got "
        f"{options.num_samples}.")


@dataclasses.dataclass(frozen=True)
class Estimator:
  """One entry of `ESTIMATORS`.

  Attributes:
    name: the table key (config.l2tl.estimator, except 'fixed').
    init: (number of source classes) -> the estimator's own state (carried
      in TrainState.estimator_state).
    update: (state, OuterData, Spec) -> Outcome.
    learns: whether it trains a policy (needs a policy optimiser).
    second_order: whether its update differentiates through the model's
      gradient (where operations equal in value and first derivative may
      still differ in their second derivative by rounding).
    check: raises ValueError on options it cannot run with.
    about: one line for reports and errors.
    learns_alpha: whether it can learn alpha (else alpha is fixed at
      config.l2tl.fixed_alpha whatever the method).
    class_weights: (policy params, estimator state, options) -> the learned
      class weights [C] to report (the policy's expectation, or the
      estimator's own).
  """

  name: str
  init: Callable[[], Any]
  update: Callable[[Any, OuterData, Spec], Outcome]
  learns: bool = True
  second_order: bool = False
  check: Callable[[Any], None] = lambda options: None
  about: str = ""
  learns_alpha: bool = True
  class_weights: Callable[[Any, Any, Any], jax.Array] = (
      lambda policy_params, est, options: policy_lib.expected_class_weights(
          policy_params, options.class_weight_divisor))


ESTIMATORS: dict[str, Estimator] = {
    "fixed": Estimator(
        "fixed", init_baseline, fixed_update, learns=False,
        about="fixed class weights and alpha, no policy"),
    "reinforce": Estimator(
        "reinforce", init_baseline, reinforce_update,
        about="REINFORCE with an EMA reward baseline (the reference)"),
    "reinforce_loo": Estimator(
        "reinforce_loo", init_baseline, reinforce_loo_update,
        check=_check_loo,
        about="REINFORCE over S samples with leave-one-out advantages"),
    "meta_gradient": Estimator(
        "meta_gradient", _no_state, meta_gradient_update,
        second_order=True, check=_check_samples,
        about="exact gradient of the validation loss through the update"),
    "alignment_ema": Estimator(
        "alignment_ema", init_alignment, alignment_update, learns=False,
        check=_check_alignment, learns_alpha=False,
        class_weights=lambda policy_params, est, options: est.weights,
        about="class weights from a per-class EMA of the validation-gradient"
        " alignment (positive part), mean 1, after a uniform warm-up"),
    "alignment_reinforce": Estimator(
        "alignment_reinforce", init_alignment, alignment_reinforce_update,
        check=_check_alignment, learns_alpha=False,
        about="per-class categoricals, REINFORCE with one alignment reward "
        "per class every step"),
    "l2rw": Estimator(
        "l2rw", init_alignment, l2rw_update, learns=False,
        check=_check_l2rw, learns_alpha=False,
        class_weights=lambda policy_params, est, options: est.weights,
        about="Learning to Reweight: fresh per-example weights every step"),
}
# Values config.l2tl.estimator may take ('fixed' follows from the method).
CONFIG_NAMES = tuple(n for n in ESTIMATORS if n != "fixed")


def select(options) -> Estimator:
  """The estimator that `options` ask for.

  No learned part -> 'fixed' (num_samples and estimator are then ignored:
  there is nothing to sample or differentiate). 'reinforce' with
  num_samples > 1 -> 'reinforce_loo'.

  Raises:
    ValueError: the options combine into something no estimator runs.
  """
  if not options.has_policy:
    return ESTIMATORS["fixed"]
  name = options.estimator
  if name == "reinforce" and options.num_samples > 1:
    name = "reinforce_loo"
  estimator = ESTIMATORS[name]
  estimator.check(options)
  return estimator
