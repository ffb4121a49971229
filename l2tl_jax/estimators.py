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
the pieces in `l2tl_jax.outer` and `l2tl_jax.estimators_common`, and add an
entry here. The three alignment estimators' updates and their state live in
`l2tl_jax.estimators_alignment`.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from l2tl_jax import estimators_alignment
from l2tl_jax import outer
from l2tl_jax import parallel
from l2tl_jax import policy as policy_lib
# The contract of an update (also read here as estimators.OuterData, .Spec,
# .Outcome) and the pieces every estimator shares.
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


def _score(state, data: OuterData, spec: Spec, before, class_w, alpha):
  """Rollout with one action, then its reward: (carry, metrics, stats, r)."""
  carry, metrics = rollout(state, data, spec, class_w, alpha)
  after = val_stats(carry, data, spec)
  reward = outer.REWARDS[spec.options.reward].fn(before, after)
  return carry, metrics, after, reward


def _before(state, data: OuterData, spec: Spec) -> outer.ValStats | None:
  """Validation stats before the rollout, when the reward needs them."""
  if not outer.REWARDS[spec.options.reward].needs_before:
    return None
  return val_stats(outer.ModelCarry(state.params, state.model_state, None),
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
  class_w, alpha = spec.fixed_class_weights, fixed_alpha(spec)
  before = _before(state, data, spec)
  carry, metrics, after, reward = _score(state, data, spec, before, class_w,
                                         alpha)
  est_state, baseline, advantage = _baseline(state.estimator_state, reward,
                                             spec.options)
  metrics.update(_reward_metrics(after, reward, baseline, advantage, alpha,
                                 class_w))
  return Outcome(carry, state.policy_params, state.policy_opt_state,
                 est_state, metrics, reward)


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
  actions = sample(state, spec.options, None)
  class_w, alpha = action_weights(actions, spec)
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
  actions = sample(state, opts, num_samples)
  class_w, alpha = action_weights(actions, spec)
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
             if opts.learns_alpha else fixed_alpha(spec))
    carry, metrics = rollout(state, data, spec, class_w, alpha)
    after = val_stats(carry, data, spec)
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
        "alignment_ema", estimators_alignment.init_alignment,
        estimators_alignment.alignment_update, learns=False,
        check=_check_alignment, learns_alpha=False,
        class_weights=lambda policy_params, est, options: est.weights,
        about="class weights from a per-class EMA of the validation-gradient"
        " alignment (positive part), mean 1, after a uniform warm-up"),
    "alignment_reinforce": Estimator(
        "alignment_reinforce", estimators_alignment.init_alignment,
        estimators_alignment.alignment_reinforce_update,
        check=_check_alignment, learns_alpha=False,
        about="per-class categoricals, REINFORCE with one alignment reward "
        "per class every step"),
    "l2rw": Estimator(
        "l2rw", estimators_alignment.init_alignment,
        estimators_alignment.l2rw_update, learns=False,
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
