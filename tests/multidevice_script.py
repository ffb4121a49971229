"""Run under 8 fake CPU devices by test_parallel.py (XLA_FLAGS set there).

Trains the same L2TL, fine-tuning and eval steps with jit on one device, jit
over a device mesh and pmap, and asserts the results agree.
"""

import os
import sys

import chex
import jax
import numpy as np

from l2tl_jax import build
from l2tl_jax import estimators
from l2tl_jax import models
from l2tl_jax import optim
from l2tl_jax import parallel
from l2tl_jax import policy
from l2tl_jax import steps

IMAGE = (8, 8, 1)


def batches(num, seed=0):
  rs = np.random.RandomState(seed)
  img = lambda n: rs.rand(n, *IMAGE).astype(np.float32)
  for _ in range(num):
    yield {
        "src": {"image": img(16), "label": rs.randint(0, 6, 16).astype(np.int32)},
        "tgt": {"image": img(8), "label": rs.randint(0, 3, 8).astype(np.int32)},
        "val": {"image": img(32), "label": rs.randint(0, 3, 32).astype(np.int32)},
    }


LENET = ("lenet", {"hidden": 32, "features": 16, "conv_features": 4})
# A torchvision-layout ResNet (resnet18's blocks, one per stage, width 4;
# batch norm synchronised across devices). On 8x8 images the deeper
# resnet18 reaches 1x1 feature maps whose batch statistics amplify the
# rounding of cross-device sums past any useful tolerance.
RESNET = ("resnet_v1", {"stage_sizes": (1, 1, 1, 1), "block": "basic",
                        "width": 4})


def run_l2tl(par, encoder=LENET, **options):
  model = models.make_model(encoder[0], num_src_classes=6, num_tgt_classes=3,
                            encoder_kwargs=encoder[1],
                            axis_name=par.axis_name)
  params, model_state = models.init_variables(model, jax.random.key(0), IMAGE)
  opts = steps.L2TLOptions(num_levels=10, num_alpha_levels=10,
                           loss_weight_scale=10.0, **options)
  policy_parts = {}
  if estimators.select(opts).learns:
    policy_parts = dict(policy_tx=optim.adam(0.1),
                        policy_params=policy.init_policy_params(
                            num_src_classes=6, num_levels=10,
                            num_alpha_levels=10))
  state, step = build.joint_parts(
      model=model, tx=optim.momentum_sgd(0.05), options=opts, params=params,
      model_state=model_state, rng=jax.random.key(1), par=par,
      **policy_parts)
  history = []
  for batch in batches(4):
    state, metrics = step(state, par.put_batch(batch))
    history.append(par.metrics_to_host(metrics))
  return jax.device_get(par.unreplicate(state)), history


def run_finetune_and_eval(par):
  model = models.make_model("resnet", num_tgt_classes=3,
                            encoder_kwargs={"widths": (4, 8),
                                            "blocks_per_stage": 1,
                                            "bn_axis_name": par.axis_name})
  params, model_state = models.init_variables(model, jax.random.key(0), IMAGE)
  state, step = build.supervised_parts(
      model=model, tx=optim.momentum_sgd(0.05), head="tgt",
      weight_decay=5e-4, decay_set="kernels", params=params,
      model_state=model_state, rng=jax.random.key(1), par=par)
  for batch in batches(3, seed=5):
    state, _ = step(state, par.put_batch(batch["tgt"]))
  eval_step = steps.make_eval_step(model=model, parallelism=par)
  val = next(batches(1, seed=9))["val"]
  val["mask"] = np.ones(32, np.float32)
  val["mask"][-5:] = 0.0
  result = steps.evaluate(eval_step, state.params, state.model_state,
                          [par.put_batch(val)])
  return jax.device_get(par.unreplicate(state)), result


def check_train_and_evaluate(data_dir):
  """The whole trainer under each parallelism gives the same results."""
  from experiments.configs import tiny
  from l2tl_jax import train

  results = {}
  for mode in ("jit", "mesh", "pmap"):
    config = tiny.get_config()
    config.data.data_dir = data_dir
    config.parallelism = mode
    config.train.steps = 20
    config.write_plots = False
    config.pretrain_cache_dir = os.path.join(data_dir, "pretrain_" + mode)
    results[mode] = train.train_and_evaluate(
        config, os.path.join(data_dir, "run_" + mode))
  for mode in ("mesh", "pmap"):
    for key in ("test_accuracy", "val_accuracy"):
      np.testing.assert_allclose(results[mode][key], results["jit"][key],
                                 atol=2 / 605)
    np.testing.assert_allclose(
        list(results[mode]["policy"]["expected_class_weights"].values()),
        list(results["jit"]["policy"]["expected_class_weights"].values()),
        atol=1e-4)
    print(f"train_and_evaluate {mode}: matches single device")


def main():
  assert jax.local_device_count() == 8, jax.devices()
  single = parallel.Parallelism("jit")
  mesh = parallel.Parallelism("mesh")
  pmap = parallel.Parallelism("pmap")

  # The multi-sample variant uses the accuracy reward: leave-one-out
  # advantages of loss rewards are differences of nearly equal numbers, where
  # the rounding of a partitioned sum can flip a sign that Adam's
  # normalisation then turns into a full step.
  variants = {
      "reinforce": {},
      "reinforce, 3 samples": {"num_samples": 3},
      "meta_gradient": {"estimator": "meta_gradient",
                        "src_normalization": "mean"},
  }
  # The alignment estimators (scores against the psum of the devices'
  # validation gradients; class sums and the positive mass summed across
  # devices), with the class weights in use from the second step.
  alignment = {"fixed_alpha": 1.0, "src_normalization": "mean",
               "warmup_steps": 1}
  variants.update({
      "alignment_ema": {"estimator": "alignment_ema", **alignment},
      "alignment_ema, whole encoder": {"estimator": "alignment_ema",
                                       "score_layers": 0, **alignment},
      "alignment_reinforce": {"estimator": "alignment_reinforce",
                              "class_weight_scale": 5.0, **alignment},
      "l2rw": {"estimator": "l2rw", **alignment},
      "resnet_v1 alignment_ema": {"encoder": RESNET,
                                  "estimator": "alignment_ema", **alignment},
  })
  variants.update({
      "resnet_v1 reinforce": {"encoder": RESNET},
      "resnet_v1 meta_gradient": {"encoder": RESNET,
                                  "estimator": "meta_gradient",
                                  "src_normalization": "mean"},
  })
  for name, options in variants.items():
    # Batch statistics summed across devices in another order.
    tol = 1e-4 if "resnet" in name else 2e-5
    ref_state, ref_hist = run_l2tl(single, **options)
    for par in (mesh, pmap):
      state, hist = run_l2tl(par, **options)
      sampled = options.get("estimator") in (None, "alignment_reinforce")
      for h_ref, h in zip(ref_hist, hist):
        if sampled:  # The same draw everywhere: the same action and alpha.
          np.testing.assert_array_equal(h["policy/alpha"],
                                        h_ref["policy/alpha"])
          np.testing.assert_array_equal(h["policy/mean_class_weight"],
                                        h_ref["policy/mean_class_weight"])
        chex.assert_trees_all_close(h, h_ref, atol=tol, rtol=tol)
      chex.assert_trees_all_close(state, ref_state, atol=tol, rtol=tol)
      print(f"l2tl {name} {par.mode}: matches single device")

  ref_state, ref_eval = run_finetune_and_eval(single)
  assert ref_eval["count"] == 27.0, ref_eval
  for par in (mesh, pmap):
    state, result = run_finetune_and_eval(par)
    chex.assert_trees_all_close(state, ref_state, atol=2e-5, rtol=2e-5)
    chex.assert_trees_all_close(result, ref_eval, atol=1e-5)
    print(f"finetune+eval with batch norm {par.mode}: matches single device")
  data_dir = os.environ.get("L2TL_TEST_DATA_DIR")
  if data_dir:
    check_train_and_evaluate(data_dir)
  print("OK")


if __name__ == "__main__":
  sys.exit(main())
