"""Losses against hand-computed numbers."""

import math

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from l2tl_jax import losses


class SelectTopKTest(absltest.TestCase):

  def test_ties_go_to_earlier_index_and_renormalise_to_k(self):
    weights = jnp.array([0.2, 0.6, 0.2, 0.2, 0.0])
    idx, kept = losses.select_top_k(weights, 3)
    np.testing.assert_array_equal(idx, [1, 0, 2])
    # [0.6, 0.2, 0.2] sum to 1.0 and are scaled to sum to 3.
    chex.assert_trees_all_close(kept, jnp.array([1.8, 0.6, 0.6]), atol=1e-6)
    self.assertAlmostEqual(float(jnp.sum(kept)), 3.0, places=5)

  def test_zero_weights_among_kept(self):
    idx, kept = losses.select_top_k(jnp.array([0.0, 0.5, 0.0, 0.0]), 2)
    np.testing.assert_array_equal(idx, [1, 0])
    chex.assert_trees_all_close(kept, jnp.array([2.0, 0.0]))

  def test_all_zero_weights_give_exact_zeros(self):
    idx, kept = losses.select_top_k(jnp.zeros(4), 2)
    np.testing.assert_array_equal(idx, [0, 1])
    np.testing.assert_array_equal(kept, [0.0, 0.0])

  def test_too_few_examples(self):
    with self.assertRaisesRegex(ValueError, "Cannot keep 3 of 2"):
      losses.select_top_k(jnp.ones(2), 3)


class WeightedCrossEntropyTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    # CE of row 0 (label 0) = log 2; CE of row 1 (label 0) = log(4/3).
    self.logits = jnp.array([[0.0, 0.0], [math.log(3.0), 0.0]])
    self.labels = jnp.array([0, 0])

  def test_normalised_by_nonzero_count_not_batch(self):
    loss = losses.weighted_cross_entropy(
        self.logits, self.labels, jnp.array([2.0, 0.0])
    )
    self.assertAlmostEqual(float(loss), 2 * math.log(2.0), places=5)

  def test_uniform_weights_give_mean(self):
    loss = losses.weighted_cross_entropy(
        self.logits, self.labels, jnp.array([1.0, 1.0])
    )
    self.assertAlmostEqual(
        float(loss), (math.log(2.0) + math.log(4 / 3)) / 2, places=5
    )

  def test_top_k_then_loss_end_to_end(self):
    # Labels select class weights; keep 2 of 4; renormalise; normalise by 2.
    class_w = jnp.array([0.3, 0.1])
    labels = jnp.array([1, 0, 1, 0])
    idx, kept = losses.select_top_k(class_w[labels], 2)
    np.testing.assert_array_equal(idx, [1, 3])
    chex.assert_trees_all_close(kept, jnp.array([1.0, 1.0]))

  def test_all_zero_weights_are_finite_with_finite_gradient(self):
    def f(logits):
      return losses.weighted_cross_entropy(logits, self.labels, jnp.zeros(2))

    value, grad = jax.value_and_grad(f)(self.logits)
    self.assertEqual(float(value), 0.0)
    chex.assert_tree_all_finite(grad)
    np.testing.assert_array_equal(grad, jnp.zeros_like(self.logits))

  def test_gradient_through_weights(self):
    # d/dw_i sum_j w_j CE_j / #(w != 0) = CE_i / 2; the count is constant.
    grad = jax.grad(
        lambda w: losses.weighted_cross_entropy(self.logits, self.labels, w)
    )(jnp.array([1.0, 0.5]))
    np.testing.assert_allclose(
        grad, losses.cross_entropy(self.logits, self.labels) / 2, rtol=1e-6)


class WeightDecayTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.params = {
        "dense": {"kernel": jnp.array([1.0, 2.0]), "bias": jnp.array([3.0])},
        "head": {"kernel": jnp.array([[1.0]])},
    }

  def test_all(self):
    mask = losses.decay_mask(self.params, "all")
    self.assertAlmostEqual(
        float(losses.weight_decay(self.params, mask)), (1 + 4 + 9 + 1) / 2
    )

  def test_kernels_only(self):
    mask = losses.decay_mask(self.params, "kernels")
    self.assertEqual(
        mask, {"dense": {"kernel": True, "bias": False}, "head": {"kernel": True}}
    )
    self.assertAlmostEqual(
        float(losses.weight_decay(self.params, mask)), (1 + 4 + 1) / 2
    )

  def test_none_and_unknown(self):
    mask = losses.decay_mask(self.params, "none")
    self.assertEqual(float(losses.weight_decay(self.params, mask)), 0.0)
    with self.assertRaisesRegex(ValueError, "weight decay set"):
      losses.decay_mask(self.params, "biases")


if __name__ == "__main__":
  absltest.main()
