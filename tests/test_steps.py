"""The outer step and the baseline steps, checked against hand-built math."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from l2tl_jax import estimators
from l2tl_jax import losses
from l2tl_jax import models
from l2tl_jax import optim
from l2tl_jax import policy
from l2tl_jax import steps
from l2tl_jax import train_state

IMAGE = (4, 4, 1)


def _model(num_src=3, num_tgt=2):
  return models.make_model(
      "mlp",
      num_src_classes=num_src,
      num_tgt_classes=num_tgt,
      encoder_kwargs={"hidden": (8,)},
  )


def _batch(seed=0, src_labels=(1, 0, 2, 1, 0, 2, 0, 1), num_tgt=2):
  rs = np.random.RandomState(seed)
  img = lambda n: rs.rand(n, *IMAGE).astype(np.float32)
  return {
      "src": {"image": img(8), "label": np.asarray(src_labels, np.int32)},
      "tgt": {"image": img(4), "label": rs.randint(0, num_tgt, 4).astype(np.int32)},
      "val": {"image": img(8), "label": rs.randint(0, num_tgt, 8).astype(np.int32)},
  }


def _state(model, tx, policy_tx=None, num_src=3, levels=4, opts=None):
  params, model_state = models.init_variables(model, jax.random.key(0), IMAGE)
  policy_params = None
  if policy_tx is not None:
    policy_params = policy.init_policy_params(
        num_src_classes=num_src, num_levels=levels, num_alpha_levels=levels
    )
  return train_state.create(
      params=params,
      model_state=model_state,
      tx=tx,
      rng=jax.random.key(7),
      policy_params=policy_params,
      policy_tx=policy_tx,
      estimator_state=steps.init_estimator_state(opts or steps.L2TLOptions()),
  )


def _copy(tree):
  return jax.tree.map(jnp.array, tree)


class BaselineTest(parameterized.TestCase):

  def _run(self, order):
    num = den = jnp.zeros(())
    out = []
    for r in (1.0, 0.0, 1.0):
      num, den, b, adv = estimators.update_baseline(
          num, den, jnp.array(r), momentum=0.9, order=order
      )
      out.append((float(b), float(adv)))
    return out

  def test_reference_order(self):
    # num: .1, .09, .181; den: .1, .19, .271; b = num / den after the update.
    expected = [(1.0, 0.0), (0.09 / 0.19, -0.09 / 0.19),
                (0.181 / 0.271, 1 - 0.181 / 0.271)]
    np.testing.assert_allclose(self._run("reference"), expected, rtol=1e-5)

  def test_previous_order(self):
    # b = the previous steps' average; b = r at the first step.
    expected = [(1.0, 0.0), (1.0, -1.0), (0.09 / 0.19, 1 - 0.09 / 0.19)]
    np.testing.assert_allclose(self._run("previous"), expected, rtol=1e-5)


class FixedWeightStepTest(absltest.TestCase):
  """With fixed weights and alpha the step is a plain SGD step on a known loss."""

  def test_matches_hand_built_loss_and_update(self):
    model = _model()
    tx = optim.momentum_sgd(0.1)
    opts = steps.L2TLOptions(
        fixed_class_weights=(1.0, 0.0, 0.5), fixed_alpha=0.7, weight_decay=1e-3
    )
    state = _state(model, tx)
    batch = _batch()
    params0 = _copy(state.params)
    step = steps.make_l2tl_step(model=model, tx=tx, policy_tx=None, options=opts)
    new_state, metrics = step(state, batch)

    # Labels (1,0,2,1,0,2,0,1) -> weights (0,1,.5,0,1,.5,1,0). Keep 4: the
    # three 1s (idx 1, 4, 6) then the first .5 (idx 2); sum 3.5 -> x 4/3.5.
    idx = np.array([1, 4, 6, 2])
    w = np.array([1, 1, 1, 0.5]) * 4 / 3.5

    def loss(p):
      feats = lambda x: models.apply_encoder(model, p, {}, x, train=True)[0]
      src_logits = models.apply_head(
          model, p, feats(batch["src"]["image"][idx]), "src")
      tgt_logits = models.apply_head(model, p, feats(batch["tgt"]["image"]), "tgt")
      src_ce = losses.cross_entropy(src_logits, batch["src"]["label"][idx])
      tgt_ce = losses.cross_entropy(tgt_logits, batch["tgt"]["label"])
      l2 = sum(jnp.sum(x**2) for x in jax.tree.leaves(p)) / 2
      return 0.7 * jnp.sum(w * src_ce) / 4 + jnp.mean(tgt_ce) + 1e-3 * l2, (
          jnp.sum(w * src_ce) / 4, jnp.mean(tgt_ce))

    grads, (src_loss, tgt_loss) = jax.grad(loss, has_aux=True)(params0)
    updates, _ = tx.update(grads, tx.init(params0), params0)
    expected_params = optax.apply_updates(params0, updates)
    chex.assert_trees_all_close(new_state.params, expected_params, atol=1e-6)
    self.assertAlmostEqual(float(metrics["train/src_loss"]), float(src_loss), 5)
    self.assertAlmostEqual(float(metrics["train/tgt_loss"]), float(tgt_loss), 5)
    self.assertAlmostEqual(float(metrics["policy/alpha"]), 0.7, 6)
    self.assertEqual(int(new_state.step), 1)

    # The reward is the validation accuracy of the UPDATED parameters.
    feats = models.apply_encoder(
        model, expected_params, {}, batch["val"]["image"], train=False)[0]
    val_logits = models.apply_head(model, expected_params, feats, "tgt")
    acc = np.mean(np.argmax(val_logits, -1) == batch["val"]["label"])
    self.assertAlmostEqual(float(metrics["policy/reward"]), acc, 6)
    self.assertAlmostEqual(float(metrics["val/accuracy"]), acc, 6)

  def test_all_zero_weights_stay_finite(self):
    model = _model()
    tx = optim.momentum_sgd(0.1)
    opts = steps.L2TLOptions(fixed_class_weights=(0.0, 0.0, 0.0), fixed_alpha=0.5)
    state = _state(model, tx)
    step = steps.make_l2tl_step(model=model, tx=tx, policy_tx=None, options=opts)
    for seed in range(3):
      state, metrics = step(state, _batch(seed))
      chex.assert_tree_all_finite((state.params, metrics))
      self.assertEqual(float(metrics["train/src_loss"]), 0.0)
      self.assertEqual(float(metrics["train/src_kept_nonzero"]), 0.0)
      self.assertEqual(float(metrics["train/nonfinite"]), 0.0)
    # The source head never receives a gradient.
    init_params, _ = models.init_variables(model, jax.random.key(0), IMAGE)
    src_head = init_params["src_head"]
    # Only weight decay moves it: every element shrinks towards 0.
    self.assertTrue(
        bool(jnp.all(jnp.abs(state.params["src_head"]["Dense_0"]["kernel"])
                     <= jnp.abs(src_head["Dense_0"]["kernel"])))
    )

  def test_policy_sampling_all_zero_levels_stays_finite(self):
    model = _model()
    tx, policy_tx = optim.momentum_sgd(0.1), optim.adam(0.01)
    state = _state(model, tx, policy_tx)
    # Make level 0 (weight 0) certain for every class.
    logits = state.policy_params["class_logits"].at[:, 0].set(1e4)
    state = state.replace(policy_params={**state.policy_params, "class_logits": logits})
    step = steps.make_l2tl_step(model=model, tx=tx, policy_tx=policy_tx)
    state, metrics = step(state, _batch())
    self.assertEqual(float(metrics["policy/mean_class_weight"]), 0.0)
    self.assertEqual(float(metrics["train/src_loss"]), 0.0)
    chex.assert_tree_all_finite((state, metrics))

  def test_nonfinite_input_is_skipped_and_reported(self):
    model = _model()
    tx = optim.momentum_sgd(0.1)
    opts = steps.L2TLOptions(fixed_class_weights=(1.0, 1.0, 1.0), fixed_alpha=1.0)
    state = _state(model, tx)
    before = _copy(state.params)
    batch = _batch()
    batch["tgt"]["image"][0, 0, 0, 0] = np.nan
    step = steps.make_l2tl_step(model=model, tx=tx, policy_tx=None, options=opts)
    state, metrics = step(state, batch)
    self.assertEqual(float(metrics["train/nonfinite"]), 1.0)
    chex.assert_trees_all_equal(state.params, before)
    self.assertEqual(int(state.step), 1)


class PolicyStepTest(absltest.TestCase):

  def _setup(self, **kw):
    model = _model()
    tx, policy_tx = optim.momentum_sgd(0.05), optim.adam(0.1)
    opts = steps.L2TLOptions(num_levels=4, num_alpha_levels=4,
                             loss_weight_scale=4.0, **kw)
    state = _state(model, tx, policy_tx)
    step = steps.make_l2tl_step(
        model=model, tx=tx, policy_tx=policy_tx, options=opts)
    return state, step, policy_tx, opts

  def test_reinforce_update_composition(self):
    state, step, policy_tx, _ = self._setup()
    state, m1 = step(state, _batch(0))
    self.assertEqual(float(m1["policy/advantage"]), 0.0)  # reference order
    self.assertEqual(float(m1["policy/grad_norm"]), 0.0)
    pp, pos = _copy(state.policy_params), _copy(state.policy_opt_state)
    actions = policy.sample(pp, jax.random.fold_in(state.step_key(), 0))
    state2, m2 = step(state, _batch(1))

    # The logged action matches the replayed sample.
    chex.assert_trees_all_close(
        m2["policy/mean_class_weight"], jnp.mean(actions["class"] / 4.0))
    self.assertAlmostEqual(float(m2["policy/alpha"]), float(actions["alpha"]) / 4, 6)
    # Advantage follows the reference EMA from the two rewards.
    r1, r2 = float(m1["policy/reward"]), float(m2["policy/reward"])
    b2 = (0.9 * 0.1 * r1 + 0.1 * r2) / 0.19
    self.assertAlmostEqual(float(m2["policy/advantage"]), r2 - b2, 5)
    # Analytic REINFORCE gradient through one Adam step.
    adv = m2["policy/advantage"]
    grads = {
        "class_logits": -adv / 3 * (jax.nn.one_hot(actions["class"], 4)
                                    - jax.nn.softmax(pp["class_logits"])),
        "alpha_logits": -adv * (jax.nn.one_hot(actions["alpha"], 4)
                                - jax.nn.softmax(pp["alpha_logits"])),
    }
    updates, _ = policy_tx.update(grads, pos, pp)
    chex.assert_trees_all_close(
        state2.policy_params, optax.apply_updates(pp, updates), atol=1e-6)

  def test_fixed_alpha_learns_classes_only(self):
    state, step, _, _ = self._setup(fixed_alpha=0.25)
    alpha0 = _copy(state.policy_params["alpha_logits"])
    for seed in range(4):
      state, metrics = step(state, _batch(seed))
      self.assertAlmostEqual(float(metrics["policy/alpha"]), 0.25, 6)
    chex.assert_trees_all_equal(state.policy_params["alpha_logits"], alpha0)

  def test_compiles_once(self):
    state, step, _, _ = self._setup()
    for seed in range(3):
      state, _ = step(state, _batch(seed))
    bigger = _batch(0)
    bigger["val"] = {"image": np.zeros((16, *IMAGE), np.float32),
                     "label": np.zeros(16, np.int32)}
    with self.assertRaisesRegex(AssertionError, "trace"):
      step(state, bigger)

  def test_jit_matches_unjitted(self):
    model = _model()
    tx, policy_tx = optim.momentum_sgd(0.05), optim.adam(0.1)
    opts = steps.L2TLOptions(num_levels=4, num_alpha_levels=4,
                             loss_weight_scale=4.0, inner_steps=2)
    fn = steps._l2tl_step_fn(model=model, tx=tx, policy_tx=policy_tx,
                             options=opts, axis_name=None)
    batch = _batch()
    batch["tgt"] = {"image": np.concatenate([batch["tgt"]["image"]] * 2),
                    "label": np.concatenate([batch["tgt"]["label"]] * 2)}
    batch["src"] = {"image": np.concatenate([batch["src"]["image"]] * 2),
                    "label": np.concatenate([batch["src"]["label"]] * 2)}
    eager = fn(_state(model, tx, policy_tx), batch)
    jitted = jax.jit(fn)(_state(model, tx, policy_tx), batch)
    chex.assert_trees_all_close(eager, jitted, atol=1e-5)

  def test_inner_loop_scan_equals_unroll(self):
    model = _model()
    tx, policy_tx = optim.momentum_sgd(0.05), optim.adam(0.1)
    batch = _batch()
    for key in ("src", "tgt"):
      batch[key] = jax.tree.map(lambda x: np.concatenate([x] * 3), batch[key])
    results = []
    for loop in ("unroll", "scan"):
      opts = steps.L2TLOptions(num_levels=4, num_alpha_levels=4,
                               loss_weight_scale=4.0, inner_steps=3,
                               inner_loop=loop)
      step = steps.make_l2tl_step(model=model, tx=tx, policy_tx=policy_tx,
                                  options=opts)
      results.append(step(_state(model, tx, policy_tx), batch))
    chex.assert_trees_all_close(results[0], results[1], atol=1e-5)
    # Three model updates, one policy update.
    self.assertEqual(int(optax.tree.get(results[0][0].opt_state, "count")), 3)
    self.assertEqual(int(results[0][0].policy_opt_state[0].count), 1)

  def test_bad_options(self):
    with self.assertRaisesRegex(ValueError, "reward"):
      steps.L2TLOptions(reward="top5")
    with self.assertRaisesRegex(ValueError, "baseline_order"):
      steps.L2TLOptions(baseline_order="later")
    with self.assertRaisesRegex(ValueError, "policy optimiser"):
      steps.make_l2tl_step(model=_model(), tx=optim.momentum_sgd(0.1),
                           policy_tx=None)
    with self.assertRaisesRegex(ValueError, "2 entries for 3 source classes"):
      steps.make_l2tl_step(
          model=_model(), tx=optim.momentum_sgd(0.1), policy_tx=None,
          options=steps.L2TLOptions(fixed_class_weights=(1.0, 1.0),
                                    fixed_alpha=1.0))
    with self.assertRaisesRegex(ValueError, "both heads"):
      steps.make_l2tl_step(
          model=_model(num_src=0), tx=optim.momentum_sgd(0.1), policy_tx=None,
          options=steps.L2TLOptions(fixed_class_weights=(1.0,),
                                    fixed_alpha=1.0))
    with self.assertRaisesRegex(ValueError, "src_oversample"):
      steps.check_l2tl_batch(
          {"src": {"label": np.zeros(6)}, "tgt": {"label": np.zeros(4)},
           "val": {"label": np.zeros(4)}}, steps.L2TLOptions())


class SupervisedStepTest(absltest.TestCase):

  def test_matches_hand_built_loss(self):
    model = _model(num_src=0)
    tx = optim.momentum_sgd(0.1)
    state = _state(model, tx)
    params0 = _copy(state.params)
    batch = _batch()["tgt"]
    step = steps.make_supervised_step(model=model, tx=tx, head="tgt",
                                      weight_decay=1e-2, decay_set="kernels")
    state, metrics = step(state, batch)

    def loss(p):
      f = models.apply_encoder(model, p, {}, batch["image"], train=True)[0]
      ce = jnp.mean(losses.cross_entropy(
          models.apply_head(model, p, f, "tgt"), batch["label"]))
      kernels = [x for path, x in jax.tree_util.tree_leaves_with_path(p)
                 if path[-1].key == "kernel"]
      return ce + 1e-2 * sum(jnp.sum(k**2) for k in kernels) / 2, ce

    grads, ce = jax.grad(loss, has_aux=True)(params0)
    updates, _ = tx.update(grads, tx.init(params0), params0)
    chex.assert_trees_all_close(
        state.params, optax.apply_updates(params0, updates), atol=1e-6)
    self.assertAlmostEqual(float(metrics["train/tgt_loss"]), float(ce), 5)

  def test_eval_counts_masked_examples_exactly(self):
    model = _model(num_src=0)
    params, model_state = models.init_variables(model, jax.random.key(0), IMAGE)
    batch = _batch()["val"]
    eval_step = steps.make_eval_step(model=model)
    f = models.apply_encoder(model, params, {}, batch["image"], train=False)[0]
    hits = np.argmax(models.apply_head(model, params, f, "tgt"), -1) == batch["label"]
    mask = np.array([1, 1, 1, 1, 1, 0, 0, 0], np.float32)
    result = steps.evaluate(
        eval_step, params, model_state, [{**batch, "mask": mask}])
    self.assertEqual(result["count"], 5.0)
    self.assertAlmostEqual(result["accuracy"], hits[:5].mean(), 6)
    # The confusion matrix counts the 5 unmasked examples, true x predicted.
    predicted = np.argmax(models.apply_head(model, params, f, "tgt"), -1)
    expected = np.zeros_like(result["confusion"])
    for t, p in zip(np.asarray(batch["label"])[:5], predicted[:5]):
      expected[t, p] += 1
    np.testing.assert_array_equal(result["confusion"], expected)
    self.assertEqual(np.trace(result["confusion"]), hits[:5].sum())

  def test_per_class_accuracy_from_the_confusion_matrix(self):
    confusion = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 2]])
    out = steps.per_class(confusion, ["a", "b", "c"])
    self.assertEqual(out["per_class_accuracy"],
                     {"a": 0.75, "b": None, "c": 0.5})
    self.assertEqual(out["confusion"], confusion.tolist())
    with self.assertRaises(AssertionError):  # chex: one name per class.
      steps.per_class(confusion, ["a", "b"])



class MultiSampleStepTest(absltest.TestCase):
  """num_samples > 1: S rollouts from one state, leave-one-out advantages."""

  def test_leave_one_out_update(self):
    model = _model()
    tx, policy_tx = optim.momentum_sgd(0.05), optax.sgd(1.0)
    opts = steps.L2TLOptions(num_levels=4, num_alpha_levels=4,
                             loss_weight_scale=4.0, num_samples=3,
                             reward="neg_loss", class_reduction="sum")
    state = _state(model, tx, policy_tx)
    pp = _copy(state.policy_params)
    step = steps.make_l2tl_step(model=model, tx=tx, policy_tx=policy_tx,
                                options=opts)
    batch = _batch()
    keys = jax.random.split(jax.random.fold_in(state.step_key(), 0), 3)
    new_state, metrics = step(state, batch)  # Donates `state`.

    actions = [policy.sample(pp, k) for k in keys]
    # Each sample is the fixed-weight step with its own action.
    rewards, outcomes = [], []
    for a in actions:
      fixed = steps.L2TLOptions(
          num_levels=4, fixed_class_weights=tuple(np.asarray(a["class"]) / 4),
          fixed_alpha=float(a["alpha"]) / 4, reward="neg_loss")
      s, m = steps.make_l2tl_step(model=model, tx=tx, policy_tx=None,
                                  options=fixed)(
                                      _state(model, tx), batch)
      rewards.append(float(m["policy/reward"]))
      outcomes.append(s)
    rewards = np.asarray(rewards)
    # The model carries on with sample 0.
    chex.assert_trees_all_close(new_state.params, outcomes[0].params,
                                atol=1e-6)
    self.assertAlmostEqual(float(metrics["policy/reward"]),
                           float(np.mean(rewards)), 5)
    # Advantage of sample s: r_s - mean of the others.
    adv = rewards - (rewards.sum() - rewards) / 2
    self.assertAlmostEqual(float(metrics["policy/advantage"]), adv[0], 5)
    # Gradient of -mean_s adv_s * log pi(a_s) (sum over classes), SGD(1).
    grads = jax.tree.map(jnp.zeros_like, pp)
    for a, d in zip(actions, adv):
      g = {
          "class_logits": -d * (jax.nn.one_hot(a["class"], 4)
                                - jax.nn.softmax(pp["class_logits"])),
          "alpha_logits": -d * (jax.nn.one_hot(a["alpha"], 4)
                                - jax.nn.softmax(pp["alpha_logits"])),
      }
      grads = jax.tree.map(lambda x, y: x + y / 3, grads, g)
    chex.assert_trees_all_close(
        new_state.policy_params, jax.tree.map(jnp.subtract, pp, grads),
        atol=1e-5)

  def test_unrolled_samples_equal_vmapped(self):
    model = _model()
    tx, policy_tx = optim.momentum_sgd(0.05), optim.adam(0.1)
    results = []
    for loop in ("vmap", "unroll"):
      opts = steps.L2TLOptions(num_levels=4, num_alpha_levels=4,
                               loss_weight_scale=4.0, num_samples=3,
                               samples_loop=loop)
      step = steps.make_l2tl_step(model=model, tx=tx, policy_tx=policy_tx,
                                  options=opts)
      state = _state(model, tx, policy_tx)
      for seed in range(2):
        state, metrics = step(state, _batch(seed))
      results.append((state, metrics))
    chex.assert_trees_all_close(results[0], results[1], atol=1e-5)

  def test_meta_gradient_rejects_samples(self):
    with self.assertRaisesRegex(ValueError, "num_samples"):
      steps.L2TLOptions(estimator="meta_gradient", num_samples=2)
    with self.assertRaisesRegex(ValueError, "estimator"):
      steps.L2TLOptions(estimator="evolution")


class MetaGradientStepTest(absltest.TestCase):
  """The meta-gradient equals its closed form for one plain SGD step.

  With weights lambda_c, alpha and SGD at rate eta, the updated parameters are
  p' = p - eta * (alpha / B * sum_i lambda_{y_i} g_i + g_tgt + g_wd), so
  dL_val(p') / dlambda_c = -eta * alpha / B * sum_{i: y_i = c} <G, g_i> and
  dL_val(p') / dalpha = -eta / B * sum_i lambda_{y_i} <G, g_i>, where
  G = grad L_val(p') and g_i = grad CE_i(p) of the kept source examples.
  """

  def test_matches_closed_form(self):
    model = _model()
    eta, levels = 0.5, 4
    tx, policy_tx = optax.sgd(eta), optax.sgd(1.0)
    opts = steps.L2TLOptions(num_levels=levels, num_alpha_levels=levels,
                             loss_weight_scale=2.0, weight_decay=0.0,
                             estimator="meta_gradient",
                             src_normalization="mean")
    state = _state(model, tx, policy_tx, levels=levels, opts=opts)
    # Distinct expected weights, so that the top-k keeps a known set.
    logits = jnp.array([[0.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0],
                        [2.0, 0.0, 0.0, 0.0]])
    pp = {**_copy(state.policy_params), "class_logits": logits}
    state = state.replace(policy_params=_copy(pp))
    params0 = _copy(state.params)
    batch = _batch()
    step = steps.make_l2tl_step(model=model, tx=tx, policy_tx=policy_tx,
                                options=opts)
    new_state, metrics = step(state, batch)

    lam = policy.expected_class_weights(pp)
    alpha = policy.expected_alpha(pp, 2.0)
    # Expected weights: class 0 > 1 > 2. Labels (1,0,2,1,0,2,0,1): keep the
    # three class-0 examples (idx 1, 4, 6), then the first class-1 (idx 0).
    idx = np.array([1, 4, 6, 0])
    labels = batch["src"]["label"][idx]
    self.assertGreater(float(lam[0]), float(lam[1]))
    self.assertGreater(float(lam[1]), float(lam[2]))

    def ce_src(p, i):
      f = models.apply_encoder(model, p, {}, batch["src"]["image"][i:i + 1],
                               train=True)[0]
      logits = models.apply_head(model, p, f, "src")
      return losses.cross_entropy(logits, batch["src"]["label"][i:i + 1])[0]

    def ce_tgt(p):
      f = models.apply_encoder(model, p, {}, batch["tgt"]["image"], train=True)[0]
      return jnp.mean(losses.cross_entropy(
          models.apply_head(model, p, f, "tgt"), batch["tgt"]["label"]))

    def val_loss(p):
      f = models.apply_encoder(model, p, {}, batch["val"]["image"],
                               train=False)[0]
      return jnp.mean(losses.cross_entropy(
          models.apply_head(model, p, f, "tgt"), batch["val"]["label"]))

    g_src = [jax.grad(ce_src)(params0, i) for i in idx]
    train_grad = jax.tree.map(
        lambda t, *gs: t + alpha / 4 * sum(lam[y] * g for y, g in zip(labels, gs)),
        jax.grad(ce_tgt)(params0), *g_src)
    params1 = jax.tree.map(lambda p, g: p - eta * g, params0, train_grad)
    chex.assert_trees_all_close(new_state.params, params1, atol=1e-6)
    big_g = jax.grad(val_loss)(params1)
    dots = np.array([float(optax.tree.vdot(big_g, g)) for g in g_src])
    d_lam = np.zeros(3)
    for y, d in zip(labels, dots):
      d_lam[y] += -eta * float(alpha) / 4 * d
    d_alpha = -eta / 4 * float(sum(lam[y] * d for y, d in zip(labels, dots)))
    self.assertAlmostEqual(float(metrics["val/loss"]), float(val_loss(params1)), 5)

    # Chain rule through the expected weights (policy SGD at rate 1).
    _, vjp_lam = jax.vjp(policy.expected_class_weights, pp)
    _, vjp_alpha = jax.vjp(lambda p: policy.expected_alpha(p, 2.0), pp)
    expected_grad = jax.tree.map(
        jnp.add, vjp_lam(jnp.asarray(d_lam, jnp.float32))[0],
        vjp_alpha(jnp.asarray(d_alpha, jnp.float32))[0])
    chex.assert_trees_all_close(
        new_state.policy_params,
        jax.tree.map(jnp.subtract, pp, expected_grad), atol=1e-6)
    # A non-zero, class-specific signal reached the logits.
    self.assertGreater(float(metrics["policy/grad_norm"]), 0.0)

  def test_meta_gradient_fixed_alpha_and_window(self):
    model = _model()
    tx, policy_tx = optim.momentum_sgd(0.1), optim.adam(0.05)
    opts = steps.L2TLOptions(num_levels=4, num_alpha_levels=4,
                             loss_weight_scale=4.0, fixed_alpha=0.5,
                             estimator="meta_gradient", inner_steps=2)
    state = _state(model, tx, policy_tx, opts=opts)
    alpha0 = _copy(state.policy_params["alpha_logits"])
    batch = _batch()
    for key in ("src", "tgt"):
      batch[key] = jax.tree.map(lambda x: np.concatenate([x] * 2), batch[key])
    step = steps.make_l2tl_step(model=model, tx=tx, policy_tx=policy_tx,
                                options=opts)
    for _ in range(3):
      state, metrics = step(state, batch)
      chex.assert_tree_all_finite((state, metrics))
      self.assertAlmostEqual(float(metrics["policy/alpha"]), 0.5, 6)
    chex.assert_trees_all_equal(state.policy_params["alpha_logits"], alpha0)
    self.assertEqual(int(optax.tree.get(state.opt_state, "count")), 6)
    self.assertFalse(np.allclose(state.policy_params["class_logits"], 0.0))


if __name__ == "__main__":
  absltest.main()
