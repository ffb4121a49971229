"""The alignment score and the estimators built on it.

The score s_i = <grad CE_src_i, grad L_val> is checked against explicit
per-example gradients and against Learning to Reweight's finite difference;
the estimators' pieces on hand-computed numbers; the recommended step
against uniform joint training, to the last bit.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs import tiny
from l2tl_jax import alignment
from l2tl_jax import build
from l2tl_jax import estimators
from l2tl_jax import estimators_alignment
from l2tl_jax import losses
from l2tl_jax import models
from l2tl_jax import optim
from l2tl_jax import outer
from l2tl_jax import parallel
from l2tl_jax import spec as spec_lib
from l2tl_jax import steps

IMAGE = (4, 4, 1)


def _model():
  return models.make_model("mlp", num_src_classes=3, num_tgt_classes=2,
                           encoder_kwargs={"hidden": (8, 6)})


def _params(model, seed=0):
  params, model_state = models.init_variables(model, jax.random.key(seed),
                                              IMAGE)
  return params, model_state


def _examples(n, classes, seed):
  rs = np.random.RandomState(seed)
  return {"image": rs.rand(n, *IMAGE).astype(np.float32),
          "label": rs.randint(0, classes, n).astype(np.int32)}


def _problem(model):
  return outer.JointProblem(model=model, tx=optax.sgd(0.1), weight_decay=0.0,
                            src_normalization="mean")


def _src_ce(model, params, example):
  features, _ = models.apply_encoder(model, params, {}, example["image"][None],
                                     train=False)
  return losses.cross_entropy(models.apply_head(model, params, features,
                                                "src"), example["label"][None])[0]


def _val_loss(model, params, val):
  return outer.validation_stats(params, {}, val, problem=_problem(model)).loss


def _dot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a),
                                            jax.tree.leaves(b)))


@pytest.mark.parametrize("layers", [0, 1])
def test_scores_equal_explicit_per_example_gradient_dot_products(layers):
  model = _model()
  params, model_state = _params(model)
  src, val = _examples(6, 3, 1), _examples(5, 2, 2)
  scores = alignment.alignment_scores(params, model_state, src, val,
                                      problem=_problem(model), layers=layers)
  chex.assert_shape(scores, (6,))
  names = ("Dense_0", "Dense_1") if layers == 0 else ("Dense_1",)
  assert outer.scored_layers(params["encoder"], layers) == names
  part = lambda g: {k: g["encoder"][k] for k in names}
  g_val = part(jax.grad(lambda p: _val_loss(model, p, val))(params))
  for i in range(6):
    example = jax.tree.map(lambda x: x[i], src)
    g_i = part(jax.grad(lambda p: _src_ce(model, p, example))(params))
    np.testing.assert_allclose(scores[i], _dot(g_i, g_val), rtol=1e-4,
                               atol=1e-7)


def test_scores_are_learning_to_reweight_finite_differences():
  # s_i = -(1/lr) d L_val(theta - lr * eps * grad CE_i) / d eps at eps = 0.
  # In float64, so that the difference quotient resolves the derivative.
  with jax.enable_x64(True):
    model = _model()
    params, model_state = _params(model, seed=3)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
    src, val = _examples(4, 3, 4), _examples(8, 2, 5)
    src["image"], val["image"] = (src["image"].astype(np.float64),
                                  val["image"].astype(np.float64))
    scores = alignment.alignment_scores(params, model_state, src, val,
                                        problem=_problem(model), layers=0)
    lr, eps = 0.1, 1e-4
    for i in range(4):
      example = jax.tree.map(lambda x: x[i], src)
      g_i = jax.grad(lambda p: _src_ce(model, p, example))(params)
      g_i = {**jax.tree.map(jnp.zeros_like, g_i), "encoder": g_i["encoder"]}
      moved = lambda e: jax.tree.map(lambda p, g: p - lr * e * g, params, g_i)
      fd = -(_val_loss(model, moved(eps), val)
             - _val_loss(model, moved(-eps), val)) / (2 * eps * lr)
      np.testing.assert_allclose(scores[i], fd, rtol=1e-5)


def test_positive_weights_and_class_sums_by_hand():
  scores = jnp.array([2.0, -1.0, 0.0, 6.0])
  # Positive parts 2, 0, 0, 6; their mean 2 -> weights 1, 0, 0, 3.
  np.testing.assert_allclose(alignment.positive_weights(scores), [1, 0, 0, 3])
  np.testing.assert_allclose(alignment.positive_weights(-scores ** 2),
                             [0] * 4)
  sums, counts = alignment.class_sums(jnp.array([1.0, 0.0, 0.0, 3.0]),
                                      jnp.array([2, 0, 2, 1]), 4)
  np.testing.assert_allclose(sums, [0, 3, 1, 0])
  np.testing.assert_allclose(counts, [1, 1, 2, 0])


def test_class_means_and_mean_one_by_hand():
  means = estimators_alignment.alignment_class_means(
      jnp.array([0.2, 0.0, 0.3]), jnp.array([0.1, 0.0, 0.6]))
  np.testing.assert_allclose(means, [2.0, 0.0, 0.5])
  # Mean 1 over the three classes: 3 * [2, 0, 0.5] / 2.5.
  np.testing.assert_allclose(estimators_alignment.mean_one(means),
                             [2.4, 0.0, 0.6], rtol=1e-6)
  np.testing.assert_allclose(estimators_alignment.mean_one(jnp.zeros(3)),
                             [1, 1, 1])


def test_per_class_advantages_by_hand():
  # r = [2, 0.5, -, 0.5] with class 2 absent: r_bar = 1; advantages
  # (lambda - E lambda) * (r - 1).
  adv = estimators_alignment.per_class_advantages(
      jnp.array([2.0, 0.5, 0.0, 0.5]), jnp.array([True, True, False, True]),
      jnp.array([1.5, 0.2, 1.9, 1.0]), jnp.array([1.0, 1.0, 1.0, 1.0]))
  np.testing.assert_allclose(adv, [0.5, 0.4, 0.0, 0.0], atol=1e-7)


def _batch(seed):
  rs = np.random.RandomState(seed)
  img = lambda n: rs.rand(n, *IMAGE).astype(np.float32)
  return {"src": {"image": img(8), "label": rs.randint(0, 3, 8).astype(np.int32)},
          "tgt": {"image": img(4), "label": rs.randint(0, 2, 4).astype(np.int32)},
          "val": {"image": img(6), "label": rs.randint(0, 2, 6).astype(np.int32)}}


def _run(options, steps_to_take, policy=False):
  model = _model()
  params, model_state = _params(model)
  kwargs = {}
  if policy:
    kwargs = dict(policy_tx=optim.adam(0.01), policy_params=(
        estimators.policy_lib.init_policy_params(
            num_src_classes=3, num_levels=options.num_levels,
            num_alpha_levels=options.num_alpha_levels)))
  state, step = build.joint_parts(
      model=model, tx=optim.momentum_sgd(0.1), options=options, params=params,
      model_state=model_state, rng=jax.random.key(1),
      par=parallel.Parallelism(), **kwargs)
  metrics = None
  for seed in range(steps_to_take):
    state, metrics = step(state, _batch(seed))
  return state, metrics


ALIGNMENT = dict(estimator="alignment_ema", fixed_alpha=1.0,
                 src_normalization="mean")


def test_during_the_warm_up_the_recommended_step_is_uniform_joint_training():
  uniform = steps.L2TLOptions(fixed_class_weights=(1.0,) * 3, fixed_alpha=1.0,
                              src_normalization="reference")
  ju, _ = _run(uniform, 4)
  al, metrics = _run(steps.L2TLOptions(warmup_steps=4, **ALIGNMENT), 4)
  chex.assert_trees_all_equal((al.params, al.opt_state),
                              (ju.params, ju.opt_state))
  np.testing.assert_array_equal(al.estimator_state.weights, np.ones(3))
  assert int(al.estimator_state.count) == 4
  assert float(metrics["policy/mean_class_weight"]) == 1.0


def test_alignment_ema_state_after_one_step_by_hand():
  model = _model()
  params, model_state = _params(model)
  batch = _batch(0)
  options = steps.L2TLOptions(warmup_steps=0, alignment_momentum=0.9,
                              score_layers=1, **ALIGNMENT)
  state, _ = _run(options, 1)
  scores = alignment.alignment_scores(params, model_state, batch["src"],
                                      batch["val"], problem=_problem(model),
                                      layers=1)
  w = np.asarray(alignment.positive_weights(scores))
  labels = batch["src"]["label"]
  sums = np.array([w[labels == c].sum() for c in range(3)])
  counts = np.array([(labels == c).sum() for c in range(3)], np.float32)
  est = state.estimator_state
  np.testing.assert_allclose(est.num, 0.1 * sums, rtol=1e-5)
  np.testing.assert_allclose(est.den, 0.1 * counts, rtol=1e-6)
  means = np.where(counts > 0, sums / np.maximum(counts, 1), 0)
  np.testing.assert_allclose(est.weights, 3 * means / means.sum(), rtol=1e-5)
  np.testing.assert_allclose(np.mean(est.weights), 1.0, rtol=1e-6)


def test_alignment_ema_normalized_over_the_run_by_hand():
  # 'run': w_i = max(0, s_i), not divided by the step's mean; two steps.
  model = _model()
  params, model_state = _params(model)
  options = steps.L2TLOptions(warmup_steps=0, alignment_momentum=0.9,
                              score_layers=1, alignment_normalize="run",
                              **ALIGNMENT)
  state, _ = _run(options, 2)
  # The second step scores at the parameters after the first.
  first, _ = _run(options, 1)
  num, den = np.zeros(3), np.zeros(3)
  for seed, p, s in ((0, params, model_state),
                     (1, first.params, first.model_state)):
    batch = _batch(seed)
    scores = np.asarray(alignment.alignment_scores(
        p, s, batch["src"], batch["val"], problem=_problem(model), layers=1))
    w = np.maximum(scores, 0.0)
    labels = batch["src"]["label"]
    num = 0.9 * num + 0.1 * np.array([w[labels == c].sum() for c in range(3)])
    den = 0.9 * den + 0.1 * np.array([(labels == c).sum() for c in range(3)])
  est = state.estimator_state
  np.testing.assert_allclose(est.num, num, rtol=1e-5)
  np.testing.assert_allclose(est.den, den, rtol=1e-6)
  means = np.where(den > 0, num / np.maximum(den, 1e-30), 0)
  np.testing.assert_allclose(est.weights, 3 * means / means.sum(), rtol=1e-5)
  # The step's normalisation is what differs from 'step'.
  step_state, _ = _run(dataclasses.replace(options, alignment_normalize="step"),
                       1)
  assert not np.allclose(step_state.estimator_state.num, first.estimator_state.num)
  with pytest.raises(ValueError, match="alignment_normalize must be one of"):
    steps.L2TLOptions(alignment_normalize="batch", **ALIGNMENT)


def test_score_every_k_leaves_the_ema_alone_in_between():
  options = steps.L2TLOptions(warmup_steps=0, score_every=2, **ALIGNMENT)
  state, _ = _run(options, 3)
  assert int(state.estimator_state.count) == 2  # Steps 0 and 2 scored.


def test_l2rw_and_alignment_reinforce_run_and_report_class_weights():
  state, metrics = _run(steps.L2TLOptions(estimator="l2rw", fixed_alpha=1.0,
                                          src_normalization="mean"), 3)
  chex.assert_tree_all_finite(state.params)
  assert float(metrics["train/nonfinite"]) == 0.0
  np.testing.assert_allclose(np.mean(state.estimator_state.weights), 1.0,
                             rtol=1e-6)
  options = steps.L2TLOptions(estimator="alignment_reinforce", fixed_alpha=1.0,
                              src_normalization="mean",
                              class_weight_scale=50.0)
  state, metrics = _run(options, 3, policy=True)
  assert float(metrics["train/nonfinite"]) == 0.0
  # The policy moved, and what reports show is its expectation.
  assert float(jnp.abs(state.policy_params["class_logits"]).max()) > 0
  np.testing.assert_allclose(
      estimators.ESTIMATORS["alignment_reinforce"].class_weights(
          state.policy_params, state.estimator_state, options),
      state.estimator_state.weights, rtol=1e-6)


def test_l2rw_step_uses_the_per_example_weights():
  # With all weights moved onto one example, only it feeds the source loss.
  src = {"image": np.ones((4, *IMAGE), np.float32),
         "label": np.array([0, 1, 2, 0], np.int32)}
  kept = outer.select_source(src, jnp.ones(3), keep_local=2,
                             normalization="mean", axis_name=None,
                             example_weights=jnp.array([0.0, 0.0, 4.0, 0.0]))
  np.testing.assert_array_equal(kept.label, [2, 0])
  np.testing.assert_array_equal(kept.weight, [4.0, 0.0])
  assert float(kept.count) == 2.0


def test_alignment_estimators_refuse_a_learned_alpha():
  with pytest.raises(ValueError, match="learns class weights only"):
    steps.L2TLOptions(estimator="alignment_ema")
  with pytest.raises(ValueError, match="score_every"):
    steps.L2TLOptions(score_every=0, **ALIGNMENT)


def test_recommended_mode_builds_the_alignment_estimator_with_fixed_alpha():
  config = tiny.get_config()
  config.method = "l2tl"
  resolved = spec_lib.resolve_config(config)
  assert resolved.l2tl.estimator == "alignment_ema"
  assert resolved.l2tl.src_normalization == "mean"
  options = spec_lib.from_config(config).options(None)
  assert estimators.select(options).name == "alignment_ema"
  assert options.fixed_alpha == 1.0 and options.learns_classes
  config.l2tl.mode = "reference"
  config.l2tl.estimator = config.l2tl.src_normalization = None
  options = spec_lib.from_config(config).options(None)
  assert estimators.select(options).name == "reinforce"
  assert options.learns_alpha and options.src_normalization == "reference"


def test_l2rw_kept_weights_average_to_one():
  # Kept: the B = 4 largest of 8 weights, rescaled to mean 1 over them; the
  # source loss is then the weighted average of the kept losses.
  options = steps.L2TLOptions(estimator="l2rw", fixed_alpha=1.0,
                              src_normalization="mean")
  np.testing.assert_allclose(
      alignment.top_k_mean(
          jnp.array([0.0, 3.0, 1.0, 0.0, 2.0, 0.5, 0.0, 1.5]), 4), 1.875)
  _, metrics = _run(options, 2)
  assert float(metrics["train/nonfinite"]) == 0.0
  with pytest.raises(ValueError, match="inner_steps=1"):
    dataclasses.replace(options, inner_steps=2)
