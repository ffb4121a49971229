"""A synthetic task with a known answer: the policy must find it.

Two target classes, each a prototype vector plus a random nuisance pattern
and noise. Four source classes: classes 0 and 1 are the target's prototypes
with consistent labels; classes 2 and 3 show a random prototype and carry a
label that only names the nuisance pattern (shuffled with respect to the
target task), which pulls the small shared encoder towards the nuisance.
Trained with these fixed weights, consistent-only source data beats uniform
joint training, which beats harmful-only: the policy has something to find.
"""

from absl.testing import absltest
import pytest
import jax
import numpy as np

from l2tl_jax import build
from l2tl_jax import models
from l2tl_jax import optim
from l2tl_jax import parallel
from l2tl_jax import policy
from l2tl_jax import steps

# Trains 600 steps per seed and setting.
pytestmark = pytest.mark.slow

DIM, NUM_TGT, NUM_SRC = 16, 2, 4
SIGMA, NUISANCE = 3.0, 4.0
STEPS = 600
SEEDS = (0, 1, 2)
CONSISTENT, HARMFUL = [0, 1], [2, 3]

_rs = np.random.RandomState(0)
PROTOTYPES = _rs.randn(NUM_TGT, DIM).astype(np.float32)
NUISANCES = NUISANCE * _rs.randn(NUM_TGT, DIM).astype(np.float32)


def _images(proto_idx, nuisance_idx, rs):
  noise = SIGMA * rs.randn(len(proto_idx), DIM)
  return (PROTOTYPES[proto_idx] + NUISANCES[nuisance_idx] + noise).astype(np.float32)


def target_split(n, seed):
  rs = np.random.RandomState(seed)
  labels = rs.randint(0, NUM_TGT, n)
  images = _images(labels, rs.randint(0, NUM_TGT, n), rs)
  return {"image": images, "label": labels.astype(np.int32)}


def source_batch(n, rs):
  labels = rs.randint(0, NUM_SRC, n)
  consistent = labels < NUM_TGT
  protos = np.where(consistent, labels, rs.randint(0, NUM_TGT, n))
  nuisance = np.where(consistent, rs.randint(0, NUM_TGT, n), labels - NUM_TGT)
  return {"image": _images(protos, nuisance, rs), "label": labels.astype(np.int32)}


TGT_TRAIN = target_split(8, seed=1)
TGT_VAL = target_split(256, seed=3)
TGT_TEST = target_split(4000, seed=2)


def train(seed, *, learn_policy, estimator="reinforce"):
  model = models.make_model(
      "mlp", num_src_classes=NUM_SRC, num_tgt_classes=NUM_TGT,
      encoder_kwargs={"hidden": (32, 8)})
  params, model_state = models.init_variables(model, jax.random.key(seed), (DIM,))
  tx = optim.momentum_sgd(0.05, momentum=0.0)
  common = dict(fixed_alpha=1.0, src_normalization="mean")
  if learn_policy:
    policy_tx = optim.adam(0.05)
    policy_params = policy.init_policy_params(
        num_src_classes=NUM_SRC, num_levels=4, num_alpha_levels=4)
    options = steps.L2TLOptions(
        num_levels=4, num_alpha_levels=4, loss_weight_scale=4.0,
        reward="loss_improvement", class_reduction="sum",
        baseline_order="previous", estimator=estimator, **common)
  else:
    policy_tx = policy_params = None
    options = steps.L2TLOptions(fixed_class_weights=(1.0,) * NUM_SRC, **common)
  state, step = build.joint_parts(
      model=model, tx=tx, options=options, params=params,
      model_state=model_state, rng=jax.random.key(seed),
      par=parallel.Parallelism(), policy_tx=policy_tx,
      policy_params=policy_params)
  rs = np.random.RandomState(100 + seed)
  for _ in range(STEPS):
    state, _ = step(state, {"src": source_batch(16, rs), "tgt": TGT_TRAIN,
                            "val": TGT_VAL})
  accuracy = steps.evaluate(
      steps.make_eval_step(model=model), state.params, state.model_state,
      [TGT_TEST])["accuracy"]
  weights = (np.asarray(policy.expected_class_weights(state.policy_params))
             if learn_policy else None)
  return accuracy, weights


class LearningTest(absltest.TestCase):

  def test_policy_prefers_consistent_classes_and_beats_uniform(self):
    l2tl = [train(seed, learn_policy=True) for seed in SEEDS]
    uniform = [train(seed, learn_policy=False)[0] for seed in SEEDS]
    weights = np.stack([w for _, w in l2tl])  # [seeds, NUM_SRC]
    consistent = weights[:, CONSISTENT].mean()
    harmful = weights[:, HARMFUL].mean()
    l2tl_acc = np.mean([a for a, _ in l2tl])
    report = (f"expected weights per seed {np.round(weights, 3).tolist()}; "
              f"L2TL acc {l2tl_acc:.3f}, uniform acc {np.mean(uniform):.3f}")
    # Uniform start: every class at 0.375 (levels 0..3 of 4).
    self.assertGreater(consistent - harmful, 0.15, report)
    self.assertLess(harmful, 0.3, report)
    self.assertGreater(l2tl_acc, np.mean(uniform) + 0.005, report)

  def test_meta_gradient_suppresses_harmful_classes(self):
    # Measured: every seed drives both harmful classes to ~0.00 and one
    # consistent class to ~0.74 (the top level is 0.75), but also the other
    # consistent class to ~0: the one-step lookahead is greedy, and test
    # accuracy (0.64 averaged over seeds) is below uniform joint training.
    runs = [train(seed, learn_policy=True, estimator="meta_gradient")
            for seed in SEEDS]
    weights = np.stack([w for _, w in runs])
    report = (f"expected weights per seed {np.round(weights, 3).tolist()}; "
              f"acc {np.mean([a for a, _ in runs]):.3f}")
    self.assertLess(weights[:, HARMFUL].max(), 0.05, report)
    self.assertGreater(weights[:, CONSISTENT].max(axis=1).min(), 0.6, report)


if __name__ == "__main__":
  absltest.main()
