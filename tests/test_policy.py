"""Policy sampling, log-probs and the REINFORCE gradient."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from l2tl_jax import policy


def _params(seed=0, classes=3, levels=4, alpha_levels=5):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {
      "class_logits": jax.random.normal(k1, (classes, levels)),
      "alpha_logits": jax.random.normal(k2, (alpha_levels,)),
  }


class PolicyTest(parameterized.TestCase):

  def test_init_is_zero_and_uniform(self):
    params = policy.init_policy_params(
        num_src_classes=10, num_levels=100, num_alpha_levels=100
    )
    chex.assert_shape(params["class_logits"], (10, 100))
    chex.assert_shape(params["alpha_logits"], (100,))
    self.assertEqual(float(jnp.abs(params["class_logits"]).sum()), 0.0)
    # Entropy at uniform: log K per class (mean) + log K for alpha.
    self.assertAlmostEqual(
        float(policy.entropy(params)), 2 * math.log(100), places=4
    )
    # E[a/K] for uniform a in 0..K-1 is (K-1)/(2K) = 0.495.
    chex.assert_trees_all_close(
        policy.expected_class_weights(params), jnp.full((10,), 0.495), atol=1e-6
    )
    self.assertAlmostEqual(
        float(policy.expected_alpha(params, 100.0)), 0.495, places=5
    )
    # class_weight_scale = K/2: the same levels weigh twice as much.
    chex.assert_trees_all_close(
        policy.expected_class_weights(params, 50.0), jnp.full((10,), 0.99),
        atol=1e-6)
    np.testing.assert_allclose(
        policy.class_weights(jnp.array([0, 3, 99]), 50.0), [0.0, 0.06, 1.98],
        rtol=1e-6)

  def test_sample_shapes_and_frequencies(self):
    params = {
        "class_logits": jnp.log(jnp.array([[0.7, 0.2, 0.1]])),
        "alpha_logits": jnp.log(jnp.array([0.25, 0.75])),
    }
    keys = jax.random.split(jax.random.key(0), 20000)
    actions = jax.vmap(lambda k: policy.sample(params, k))(keys)
    chex.assert_shape(actions["class"], (20000, 1))
    chex.assert_shape(actions["alpha"], (20000,))
    freq = np.bincount(np.asarray(actions["class"][:, 0]), minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.015)
    self.assertAlmostEqual(float(actions["alpha"].mean()), 0.75, delta=0.015)

  def test_weights_and_alpha_values(self):
    chex.assert_trees_all_close(
        policy.class_weights(jnp.array([0, 50, 99]), 100),
        jnp.array([0.0, 0.5, 0.99]),
    )
    self.assertAlmostEqual(
        float(policy.alpha_value(jnp.array(30), 100.0)), 0.3, places=6
    )

  def test_log_prob_hand_computed(self):
    params = {
        "class_logits": jnp.log(jnp.array([[0.5, 0.5], [0.2, 0.8]])),
        "alpha_logits": jnp.log(jnp.array([0.1, 0.9])),
    }
    actions = {"class": jnp.array([0, 1]), "alpha": jnp.array(1)}
    mean = (math.log(0.5) + math.log(0.8)) / 2 + math.log(0.9)
    total = math.log(0.5) + math.log(0.8) + math.log(0.9)
    self.assertAlmostEqual(float(policy.log_prob(params, actions)), mean, 5)
    self.assertAlmostEqual(
        float(policy.log_prob(params, actions, class_reduction="sum")), total, 5
    )
    self.assertAlmostEqual(
        float(policy.log_prob(params, actions, include_alpha=False)),
        (math.log(0.5) + math.log(0.8)) / 2,
        5,
    )

  @parameterized.parameters("mean", "sum")
  def test_reinforce_gradient_is_analytic(self, reduction):
    params = _params()
    actions = {"class": jnp.array([0, 3, 1]), "alpha": jnp.array(2)}
    advantage = jnp.array(0.37)
    grads, _ = jax.grad(policy.reinforce_loss, has_aux=True)(
        params, actions, advantage, class_reduction=reduction
    )
    scale = 1 / 3 if reduction == "mean" else 1.0
    expected_class = -0.37 * scale * (
        jax.nn.one_hot(actions["class"], 4)
        - jax.nn.softmax(params["class_logits"])
    )
    expected_alpha = -0.37 * (
        jax.nn.one_hot(2, 5) - jax.nn.softmax(params["alpha_logits"])
    )
    chex.assert_trees_all_close(
        grads,
        {"class_logits": expected_class, "alpha_logits": expected_alpha},
        atol=1e-6,
    )

  def test_advantage_carries_no_gradient(self):
    params = _params()
    actions = {"class": jnp.array([0, 1, 2]), "alpha": jnp.array(0)}
    grad_adv = jax.grad(
        lambda a: policy.reinforce_loss(params, actions, a)[0]
    )(jnp.array(0.5))
    self.assertEqual(float(grad_adv), 0.0)

  def test_entropy_bonus_gradient(self):
    params = _params()
    actions = {"class": jnp.array([0, 1, 2]), "alpha": jnp.array(0)}
    g0, _ = jax.grad(policy.reinforce_loss, has_aux=True)(
        params, actions, jnp.array(0.0), entropy_coef=0.1
    )
    g_ent = jax.grad(lambda p: -0.1 * policy.entropy(p))(params)
    chex.assert_trees_all_close(g0, g_ent, atol=1e-6)

  def test_rank_checks(self):
    params = _params()
    with self.assertRaises(AssertionError):
      policy.log_prob(params, {"class": jnp.array(0), "alpha": jnp.array(0)})
    with self.assertRaisesRegex(ValueError, "class_reduction"):
      policy.log_prob(
          params,
          {"class": jnp.array([0, 0, 0]), "alpha": jnp.array(0)},
          class_reduction="max",
      )


if __name__ == "__main__":
  absltest.main()
