"""The pieces of the outer step, each on small hand-computed arrays.

With every model parameter zero the MLP's features are zero, every logit is
zero, and the only non-zero gradients are the head biases':
dCE/db = softmax(0) - onehot(y) = 1/C - onehot(y). That makes the losses and
the updates computable by hand.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from l2tl_jax import alignment
from l2tl_jax import losses
from l2tl_jax import models
from l2tl_jax import outer

IMAGE = (2, 2, 1)
SRC_LABELS = np.array([1, 0, 2, 1, 0, 2, 0, 1], np.int32)
TGT_LABELS = np.array([0, 1, 1, 1], np.int32)


def _model():
  return models.make_model("mlp", num_src_classes=3, num_tgt_classes=2,
                           encoder_kwargs={"hidden": (4,)})


def _zero_params(model):
  params, _ = models.init_variables(model, jax.random.key(0), IMAGE)
  return jax.tree.map(jnp.zeros_like, params)


def _problem(model, lr=0.5, normalization="reference", loop="unroll"):
  return outer.JointProblem(model=model, tx=optax.sgd(lr), weight_decay=0.0,
                            decay_set="all", src_normalization=normalization,
                            inner_loop=loop)


def _examples(labels, seed=0):
  rs = np.random.RandomState(seed)
  return {"image": rs.rand(len(labels), *IMAGE).astype(np.float32),
          "label": np.asarray(labels, np.int32)}


def test_split_inner_shapes():
  examples = _examples(np.arange(6) % 3)
  split = outer.split_inner(examples, 3)
  chex.assert_shape(split["image"], (3, 2, *IMAGE))
  np.testing.assert_array_equal(split["label"], [[0, 1], [2, 0], [1, 2]])


def test_select_source_reference_normalisation():
  # Weights by label: (0, 1, .5, 0, 1, .5, 1, 0); keep 4: the three 1s
  # (idx 1, 4, 6), then the first .5 (idx 2); renormalised by 4 / 3.5.
  src = _examples(SRC_LABELS)
  kept = outer.select_source(src, jnp.array([1.0, 0.0, 0.5]), keep_local=4,
                             normalization="reference", axis_name=None)
  np.testing.assert_array_equal(kept.label, SRC_LABELS[[1, 4, 6, 2]])
  np.testing.assert_allclose(kept.weight, np.array([1, 1, 1, 0.5]) * 4 / 3.5,
                             rtol=1e-6)
  np.testing.assert_array_equal(kept.image, src["image"][[1, 4, 6, 2]])
  assert float(kept.count) == 4.0  # Non-zero kept weights.


def test_select_source_mean_and_zero_weights():
  src = _examples(SRC_LABELS)
  # Only class 2 counts: its two examples (idx 2, 5), then zeros (idx 0, 1).
  kept = outer.select_source(src, jnp.array([0.0, 0.0, 0.7]), keep_local=4,
                             normalization="reference", axis_name=None)
  np.testing.assert_allclose(kept.weight, [2.0, 2.0, 0.0, 0.0])
  assert float(kept.count) == 2.0
  mean = outer.select_source(src, jnp.array([0.0, 0.0, 0.7]), keep_local=4,
                             normalization="mean", axis_name=None)
  np.testing.assert_allclose(mean.weight, [0.7, 0.7, 0.0, 0.0], rtol=1e-6)
  assert float(mean.count) == 4.0  # B, whatever the weights.


def test_joint_loss_with_zero_params():
  model = _model()
  params = _zero_params(model)
  kept = outer.select_source(_examples(SRC_LABELS), jnp.array([1.0, 0.0, 0.5]),
                             keep_local=4, normalization="reference",
                             axis_name=None)
  loss, (state, src_loss, tgt_loss, wd) = outer.joint_loss(
      params, problem=_problem(model), model_state={}, kept=kept,
      tgt=_examples(TGT_LABELS, 1), alpha=jnp.float32(0.3),
      decay_mask=losses.decay_mask(params, "all"))
  # Zero logits: CE = log 3 per source and log 2 per target example; the
  # kept weights sum to 4 over 4 non-zero ones.
  assert float(src_loss) == pytest.approx(math.log(3), rel=1e-6)
  assert float(tgt_loss) == pytest.approx(math.log(2), rel=1e-6)
  assert float(wd) == 0.0
  assert float(loss) == pytest.approx(0.3 * math.log(3) + math.log(2),
                                      rel=1e-6)
  assert state == {}


def test_inner_update_moves_only_the_head_biases_by_hand():
  model = _model()
  params = _zero_params(model)
  tx = optax.sgd(0.5)
  carry = outer.ModelCarry(params, {}, tx.init(params))
  class_w = jnp.array([1.0, 0.0, 0.5])
  carry, metrics = outer.inner_update(
      carry, _examples(SRC_LABELS), _examples(TGT_LABELS, 1),
      problem=_problem(model), class_weights=class_w, alpha=jnp.float32(0.3),
      decay_mask=losses.decay_mask(params, "all"))
  # Target: mean over labels (0, 1, 1, 1) of 1/2 - onehot = (1/4, -1/4).
  np.testing.assert_allclose(carry.params["tgt_head"]["Dense_0"]["bias"],
                             -0.5 * np.array([0.25, -0.25]), atol=1e-7)
  # Source: kept labels (0, 0, 0, 2) with weights 8/7 (x3) and 4/7, over a
  # count of 4, times alpha: sum_i w_i (1/3 - onehot(y_i)) / 4.
  w = np.array([8, 8, 8, 4]) / 7
  onehot = np.eye(3)[[0, 0, 0, 2]]
  grad = 0.3 * np.sum(w[:, None] * (1 / 3 - onehot), 0) / 4
  np.testing.assert_allclose(carry.params["src_head"]["Dense_0"]["bias"],
                             -0.5 * grad, atol=1e-7)
  for path in (("encoder",), ("tgt_head", "Dense_0", "kernel"),
               ("src_head", "Dense_0", "kernel")):
    node = carry.params
    for key in path:
      node = node[key]
    chex.assert_trees_all_equal(node, jax.tree.map(jnp.zeros_like, node))
  assert float(metrics["train/src_kept_nonzero"]) == 4.0
  assert float(metrics["train/tgt_loss"]) == pytest.approx(math.log(2))


@pytest.mark.parametrize("loop", ["unroll", "scan"])
def test_rollout_is_inner_updates_in_turn(loop):
  model = _model()
  params, _ = models.init_variables(model, jax.random.key(3), IMAGE)
  tx = optax.sgd(0.1, momentum=0.9)
  carry = outer.ModelCarry(params, {}, tx.init(params))
  src = _examples(np.concatenate([SRC_LABELS, SRC_LABELS[::-1]]), 2)
  tgt = _examples(np.concatenate([TGT_LABELS, TGT_LABELS[::-1]]), 3)
  kw = dict(class_weights=jnp.array([1.0, 0.2, 0.5]), alpha=jnp.float32(0.7),
            decay_mask=losses.decay_mask(params, "all"))
  out, metrics = outer.rollout(
      carry, outer.split_inner(src, 2), outer.split_inner(tgt, 2),
      problem=_problem(model, loop=loop), **kw)
  expected, history = carry, []
  for i in range(2):
    part = lambda x: x[i * len(x) // 2:(i + 1) * len(x) // 2]
    expected, m = outer.inner_update(
        expected, jax.tree.map(part, src), jax.tree.map(part, tgt),
        problem=_problem(model), **kw)
    history.append(m)
  chex.assert_trees_all_close(out, expected, atol=1e-6)
  assert float(metrics["train/tgt_loss"]) == pytest.approx(
      np.mean([float(m["train/tgt_loss"]) for m in history]), rel=1e-5)


def test_validation_stats_with_zero_params():
  model = _model()
  val = _examples([0, 1, 1, 0, 0], 4)
  stats = outer.validation_stats(_zero_params(model), {}, val,
                                 problem=_problem(model))
  # Zero logits: argmax picks class 0, right for 3 of 5; CE = log 2.
  assert float(stats.accuracy) == pytest.approx(0.6)
  assert float(stats.loss) == pytest.approx(math.log(2), rel=1e-6)
  assert float(stats.local_loss) == pytest.approx(math.log(2), rel=1e-6)


def test_rewards_table():
  before = outer.ValStats(jnp.float32(0.5), jnp.float32(0.9), None)
  after = outer.ValStats(jnp.float32(0.75), jnp.float32(0.6), None)
  got = {name: float(r.fn(before if r.needs_before else None, after))
         for name, r in outer.REWARDS.items()}
  assert got == pytest.approx({"accuracy": 0.75, "neg_loss": -0.6,
                               "loss_improvement": 0.3})
  assert [n for n, r in outer.REWARDS.items() if r.needs_before] == [
      "loss_improvement"]


def test_first_selection_keeps_the_first_examples_whatever_their_weights():
  labels = jnp.array([2, 0, 1, 2, 0, 1])
  src = {"image": jnp.arange(6.0).reshape(6, 1), "label": labels}
  w = jnp.array([0.0, 0.5, 1.0])
  kept = outer.select_source(src, w, keep_local=3, normalization="mean",
                             axis_name=None, selection="first")
  np.testing.assert_array_equal(kept.image[:, 0], [0.0, 1.0, 2.0])
  np.testing.assert_array_equal(kept.weight, [1.0, 0.0, 0.5])
  assert float(kept.count) == 3.0
  ref = outer.select_source(src, w, keep_local=3, normalization="reference",
                            axis_name=None, selection="first")
  np.testing.assert_allclose(ref.weight, [2.0, 0.0, 1.0])  # Sum 3.
  assert float(ref.count) == 2.0  # Non-zero kept weights.
  top = outer.select_source(src, w, keep_local=3, normalization="mean",
                            axis_name=None)
  # The reference keeps weight 1, 1, then the first 0.5.
  np.testing.assert_array_equal(top.image[:, 0], [0.0, 3.0, 2.0])


def test_alignment_helpers_check_ranks():
  # Rank checks, as losses.py and policy.py have: a [n, 1] score column or
  # labels of another length fail at trace time, not as silent broadcasts.
  with pytest.raises(AssertionError):
    alignment.positive_weights(jnp.ones((4, 1)))
  with pytest.raises(AssertionError):
    alignment.top_k_mean(jnp.ones((4, 1)), 2)
  with pytest.raises(AssertionError):
    alignment.class_sums(jnp.ones((4,)), jnp.zeros((3,), jnp.int32), 2)
  sums, counts = alignment.class_sums(jnp.array([1.0, 2.0, 4.0]),
                                      jnp.array([0, 1, 1]), 3)
  np.testing.assert_allclose(sums, [1.0, 6.0, 0.0])
  np.testing.assert_allclose(counts, [1.0, 2.0, 0.0])
