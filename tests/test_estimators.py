"""The estimator table: which entry options select, their state, refusals."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import tiny
from l2tl_jax import build
from l2tl_jax import estimators
from l2tl_jax import estimators_alignment
from l2tl_jax import methods
from l2tl_jax import models
from l2tl_jax import optim
from l2tl_jax import parallel
from l2tl_jax import spec as spec_lib
from l2tl_jax import steps
from l2tl_jax import train_state

IMAGE = (4, 4, 1)


def test_select_by_options():
  select = lambda **kw: estimators.select(steps.L2TLOptions(**kw)).name
  assert select() == "reinforce"
  assert select(num_samples=3) == "reinforce_loo"
  assert select(estimator="meta_gradient") == "meta_gradient"
  uniform = dict(fixed_class_weights=(1.0, 1.0), fixed_alpha=1.0)
  assert select(**uniform) == "fixed"
  # Nothing learned: the estimator and the samples are ignored.
  assert select(**uniform, estimator="meta_gradient") == "fixed"
  assert select(**uniform, num_samples=4) == "fixed"
  assert set(estimators.CONFIG_NAMES) == {
      "reinforce", "reinforce_loo", "meta_gradient", "alignment_ema",
      "alignment_reinforce", "l2rw"}


def test_invalid_combinations_are_refused_when_built():
  with pytest.raises(ValueError, match="num_samples=2.*meta_gradient"):
    steps.L2TLOptions(estimator="meta_gradient", num_samples=2)
  with pytest.raises(ValueError, match="leave-one-out.*num_samples >= 2"):
    steps.L2TLOptions(estimator="reinforce_loo")
  with pytest.raises(ValueError, match="estimator must be one of"):
    steps.L2TLOptions(estimator="fixed")


def test_each_estimator_keeps_its_own_state():
  baseline = estimators.ESTIMATORS["reinforce"].init()
  assert isinstance(baseline, estimators.BaselineState)
  chex.assert_trees_all_equal(baseline, estimators.BaselineState(
      num=jnp.zeros(()), den=jnp.zeros(())))
  assert estimators.ESTIMATORS["meta_gradient"].init() == ()


def _model():
  return models.make_model("mlp", num_src_classes=3, num_tgt_classes=2,
                           encoder_kwargs={"hidden": (8,)})


def _batch(seed=0):
  rs = np.random.RandomState(seed)
  img = lambda n: rs.rand(n, *IMAGE).astype(np.float32)
  return {"src": {"image": img(8), "label": rs.randint(0, 3, 8).astype(np.int32)},
          "tgt": {"image": img(4), "label": rs.randint(0, 2, 4).astype(np.int32)},
          "val": {"image": img(8), "label": rs.randint(0, 2, 8).astype(np.int32)}}


def _run_fixed(**options):
  model = _model()
  params, model_state = models.init_variables(model, jax.random.key(0), IMAGE)
  state, step = build.joint_parts(
      model=model, tx=optim.momentum_sgd(0.1),
      options=steps.L2TLOptions(fixed_class_weights=(1.0, 0.5, 0.0),
                                fixed_alpha=0.5, **options),
      params=params, model_state=model_state, rng=jax.random.key(1),
      par=parallel.Parallelism())
  for seed in range(2):
    state, metrics = step(state, _batch(seed))
  return state, metrics


def test_samples_without_a_policy_are_ignored():
  # Joint training with fixed weights has nothing to sample: num_samples > 1
  # gives exactly the single-rollout step, whatever the samples loop.
  one = _run_fixed()
  for loop in ("vmap", "unroll"):
    chex.assert_trees_all_equal(_run_fixed(num_samples=4, samples_loop=loop),
                                one)


def test_fixed_estimator_tracks_the_reward_baseline():
  state, metrics = _run_fixed()
  # Two steps of the EMA (m = 0.9): den = 0.9 * 0.1 + 0.1 = 0.19.
  np.testing.assert_allclose(state.estimator_state.den, 0.19, rtol=1e-6)
  assert "policy/reward" in metrics and "policy/baseline" in metrics


def test_config_with_samples_builds_for_every_joint_method():
  config = tiny.get_config()
  config.l2tl.num_samples = 4
  config.l2tl.estimator = "reinforce"
  for name in ("joint_uniform", "datl", "joint_fixed", "l2tl_fixed_alpha",
               "l2tl"):
    config.method = name
    spec = spec_lib.from_config(config)
    weights = build.fixed_class_weights(spec.method, build.Shapes(IMAGE, 3, 2),
                                        np.ones(3), (1.0, 0.0, 1.0))
    options = spec.options(weights)
    method = spec.method
    expected = "reinforce_loo" if method.has_policy else "fixed"
    assert estimators.select(options).name == expected, name


def test_config_class_weights_need_one_per_class():
  method = methods.get("joint_fixed")
  shapes = build.Shapes(IMAGE, 3, 2)
  assert build.fixed_class_weights(method, shapes, None, (1, 0, 0.5)) == (
      1.0, 0.0, 0.5)
  with pytest.raises(ValueError, match="one weight per source class \\(3\\), "
                     "got 2"):
    build.fixed_class_weights(method, shapes, None, (1, 0))


def test_a_state_of_another_estimator_is_refused():
  model = _model()
  params, model_state = models.init_variables(model, jax.random.key(0), IMAGE)
  tx, policy_tx = optim.momentum_sgd(0.1), optim.adam(0.1)
  state = train_state.create(
      params=params, model_state=model_state, tx=tx, rng=jax.random.key(1),
      policy_params={"class_logits": jnp.zeros((3, 100)),
                     "alpha_logits": jnp.zeros((100,))},
      policy_tx=policy_tx)  # No estimator state: () is meta_gradient's.
  step = steps.make_l2tl_step(model=model, tx=tx, policy_tx=policy_tx)
  with pytest.raises(ValueError, match="'reinforce' estimator"):
    step(state, _batch())


def test_class_weight_scale_is_checked_and_divides_the_levels():
  from l2tl_jax import options as options_lib
  with pytest.raises(ValueError, match="class_weight_scale must be > 0"):
    options_lib.L2TLOptions(class_weight_scale=0.0)
  opts = options_lib.L2TLOptions(class_weight_scale=50.0)
  assert opts.class_weight_divisor == 50.0
  assert options_lib.L2TLOptions().class_weight_divisor == 100


def test_alignment_state_helpers_check_ranks():
  with pytest.raises(AssertionError):
    estimators_alignment.alignment_class_means(jnp.ones((3,)), jnp.ones((4,)))
  with pytest.raises(AssertionError):
    estimators_alignment.mean_one(jnp.ones((3, 1)))
  with pytest.raises(AssertionError):
    estimators_alignment.per_class_advantages(
        jnp.ones((3,)), jnp.ones((3,), bool), jnp.ones((3,)), jnp.ones((2,)))
  np.testing.assert_allclose(
      estimators_alignment.mean_one(jnp.array([1.0, 3.0])), [0.5, 1.5])
