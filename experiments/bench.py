r"""Step-time benchmark: the L2TL outer step against the fine-tuning step.

  python -m experiments.bench [--steps=300] [--encoder=lenet] \
      [--windows=1,2,4,8]

Measures, on the default device, outer steps/s of L2TL and steps/s of the
fine-tuning step at the reference batch sizes (8 target, 16 -> 8 source,
32 validation; 32x32x1 images, 10 source and 5 target classes), and prints
their step-time ratio beside the ideal ratio from the work done:

  L2TL:      forward+backward on 8 kept source + 8 target images, plus a
             forward on 32 validation images (the top-k selection depends only
             on labels, so only the kept source images are forwarded);
  finetune:  forward+backward on 8 target images;
  ideal = (3 * 16 + 32) / (3 * 8) with backward = 2 forwards,

and the same ratio from XLA's own FLOP count of the compiled steps. With
--windows it also times the outer step for credit windows of N model steps
per action (unrolled and `lax.scan`), the meta-gradient step and the
4-sample leave-one-out REINFORCE step, each per outer step and per model
step, against the fine-tuning step.
"""

from __future__ import annotations

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import timing
from l2tl_jax import build
from l2tl_jax import models
from l2tl_jax import optim
from l2tl_jax import parallel
from l2tl_jax import policy
from l2tl_jax import steps

_STEPS = flags.DEFINE_integer("steps", 300, "Timed steps per measurement.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Measurements; the best is kept.")
_ENCODER = flags.DEFINE_string("encoder", "lenet", "Registered encoder name.")
_WINDOWS = flags.DEFINE_list(
    "windows", [], "Credit windows N (model steps per action) to time.")

TGT_BATCH, SRC_OVERSAMPLE, VAL_BATCH = 8, 2, 32
NUM_SRC, NUM_TGT, IMAGE = 10, 5, (32, 32, 1)


def _batch(rs, n, classes):
  return {
      "image": rs.rand(n, *IMAGE).astype(np.float32),
      "label": rs.randint(0, classes, n).astype(np.int32),
  }


def _parts(*, joint: bool, **options):
  """(make, state, batch): a step factory, its state and a device batch."""
  model = models.make_model(
      _ENCODER.value, num_src_classes=NUM_SRC if joint else 0,
      num_tgt_classes=NUM_TGT)
  params, model_state = models.init_variables(model, jax.random.key(0), IMAGE)
  common = dict(model=model, tx=optim.momentum_sgd(0.005), params=params,
                model_state=model_state, rng=jax.random.key(0),
                par=parallel.Parallelism())
  rs = np.random.RandomState(0)
  if not joint:
    make = lambda: build.supervised_parts(
        head="tgt", weight_decay=5e-4, decay_set="kernels", **common)
    batch = _batch(rs, TGT_BATCH, NUM_TGT)
    return make, make()[0], jax.device_put(batch)
  opts = steps.L2TLOptions(**options)
  make = lambda: build.joint_parts(
      options=opts, policy_tx=optim.adam(0.01),
      policy_params=policy.init_policy_params(
          num_src_classes=NUM_SRC, num_levels=100, num_alpha_levels=100),
      **common)
  n = opts.inner_steps
  batch = {
      "src": _batch(rs, n * SRC_OVERSAMPLE * TGT_BATCH, NUM_SRC),
      "tgt": _batch(rs, n * TGT_BATCH, NUM_TGT),
      "val": _batch(rs, VAL_BATCH, NUM_TGT),
  }
  return make, make()[0], jax.device_put(batch)


def _l2tl_setup(**options):
  return _parts(joint=True, **options)


def _finetune_setup():
  return _parts(joint=False)


def _steps_per_second(make, state, batch) -> float:
  return timing.steps_per_second(make()[1], state, batch,
                                 num_steps=_STEPS.value,
                                 repeats=_REPEATS.value)


def _flops(make, state, batch) -> float:
  analysis = make()[1].lower(state, batch).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float((analysis or {}).get("flops", float("nan")))


def main(argv):
  del argv
  print(f"devices: {jax.devices()}")
  l2tl = _l2tl_setup()
  finetune = _finetune_setup()
  flops_ratio = _flops(*l2tl) / _flops(*finetune)
  l2tl_rate = _steps_per_second(*l2tl)
  finetune_rate = _steps_per_second(*finetune)
  measured = finetune_rate / l2tl_rate
  ideal = (3 * 2 * TGT_BATCH + VAL_BATCH) / (3 * TGT_BATCH)
  print(f"encoder: {_ENCODER.value}; batches: target {TGT_BATCH}, source "
        f"{SRC_OVERSAMPLE * TGT_BATCH} -> {TGT_BATCH}, validation {VAL_BATCH}")
  print(f"l2tl outer steps/s: {l2tl_rate:.1f}")
  print(f"finetune steps/s: {finetune_rate:.1f}")
  print(f"XLA flop ratio l2tl/finetune: {flops_ratio:.2f}")
  print(f"measured/ideal: {measured / ideal:.2f}")
  print(f"l2tl/finetune step-time ratio: measured {measured:.2f}, "
        f"ideal {ideal:.2f}")
  if not _WINDOWS.value:
    return
  print("\nouter-step time / finetune step time (per model step):")
  variants = [("meta_gradient", 1, {"estimator": "meta_gradient"}),
              ("reinforce, 4 samples (leave-one-out), vmap", 1,
               {"num_samples": 4}),
              ("reinforce, 4 samples (leave-one-out), unroll", 1,
               {"num_samples": 4, "samples_loop": "unroll"})]
  for n in map(int, _WINDOWS.value):
    for loop in ("unroll", "scan"):
      variants.append((f"reinforce, window {n}, {loop}", n,
                       {"inner_steps": n, "inner_loop": loop}))
  for name, n, options in variants:
    rate = _steps_per_second(*_l2tl_setup(**options))
    ratio = finetune_rate / rate
    print(f"  {name}: {ratio:.2f} ({ratio / n:.2f})")


if __name__ == "__main__":
  app.run(main)
