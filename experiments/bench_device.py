r"""Device throughput of the fine-tuning and L2TL steps on synthetic batches.

  python -m experiments.bench_device [--encoder=resnet50] [--image_size=224] \
      [--dtypes=float32,bfloat16] [--batch=32] [--steps=20]

For each dtype: the fine-tuning step (target batch B) and the L2TL step
with each estimator (REINFORCE, meta-gradient) at the batches the runs of
experiments/configs/imagenet_pets.py read (`L2TLOptions.joint_batch_sizes`:
source 2B -> B kept + target B + validation B, the config.l2tl.val_batch_size
that experiments/configs/paper.py sets), timed on the default device after
compilation. Prints images/s (train images per second: B for fine-tuning,
2B for L2TL), step time, XLA's FLOP count of the compiled step, achieved
TFLOP/s, the chip's peak measured in the same run with a large matmul in
that dtype, MFU, the memory XLA plans for the step (arguments +
temporaries), and each L2TL step's time over the fine-tuning step's next to
the work-proportional ideal (REINFORCE: (3 * 2B + B) / (3B) = 2.33,
forward+backward = 3 forwards; the meta-gradient: its XLA FLOP ratio).
--batch=0 searches the largest power-of-two batch whose steps compile and
run (accelerators).
On a CPU it runs at small sizes too (the tests use 32 px).
"""

from __future__ import annotations


import sys

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import cli
from experiments import timing
from l2tl_jax import build
from l2tl_jax import models
from l2tl_jax import optim
from l2tl_jax import parallel
from l2tl_jax import policy
from l2tl_jax import steps
from l2tl_jax import synthetic

# Its own flag set: importable beside experiments.bench, whose flags share
# names (--encoder, --steps, --repeats).
FLAGS = flags.FlagValues()
# The encoders with an activation dtype and a width (the ResNets).
ENCODERS = [n for n in models.encoder_names()
            if models.get_encoder(n).dtype
            and "width" in models.encoder_fields(n)]
DTYPES = ("float32", "bfloat16")
_ENCODER = flags.DEFINE_enum("encoder", "resnet50", ENCODERS,
                             "Registered encoder.", flag_values=FLAGS)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Square image side.",
                                   lower_bound=1, flag_values=FLAGS)
_DTYPES = flags.DEFINE_list("dtypes", list(DTYPES),
                            "Activation dtypes to measure.", flag_values=FLAGS)
_BATCH = flags.DEFINE_integer("batch", 32, "Target batch B; 0: largest.",
                              lower_bound=0, flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per measurement.",
                              lower_bound=1, flag_values=FLAGS)
_REPEATS = flags.DEFINE_integer("repeats", 2, "Measurements; the best kept.",
                                lower_bound=1, flag_values=FLAGS)
_WIDTH = flags.DEFINE_integer("width", 64, "ResNet width (64: standard).",
                              lower_bound=1, flag_values=FLAGS)
_MATMUL = flags.DEFINE_integer("matmul", 8192, "Side of the peak matmul.",
                               lower_bound=1, flag_values=FLAGS)
flags.register_validator(
    "dtypes", lambda values: bool(values) and set(values) <= set(DTYPES),
    f"--dtypes must be a comma-separated list among {', '.join(DTYPES)}",
    flag_values=FLAGS)

NUM_SRC, NUM_TGT = 1000, 37  # ImageNet -> Oxford-IIIT Pets.
ESTIMATORS = {"reinforce": {}, "meta_gradient": {
    "estimator": "meta_gradient", "src_normalization": "mean"}}


def val_batch_size(batch: int) -> int:
  """The validation batch of the runs at target batch `batch`: the batch
  itself, as experiments/configs/paper.py sets config.l2tl.val_batch_size
  for the ImageNet targets (tests/test_synthetic.py holds the two equal)."""
  return batch


def joint_batch_sizes(kind: str, batch: int) -> dict[str, int]:
  """The L2TL step's batch sizes of estimator `kind` at target batch
  `batch`, by the runs' rule (`L2TLOptions.joint_batch_sizes`)."""
  return steps.L2TLOptions(**ESTIMATORS[kind]).joint_batch_sizes(
      batch, val_batch_size(batch))


def make_parts(kind: str, *, encoder: str, dtype: str, size: int, batch: int,
               width: int | None = None):
  """(step, state, device batch) of 'finetune' or an estimator name."""
  kwargs = {"dtype": getattr(jnp, dtype)}
  if width is not None and width != 64:
    kwargs["width"] = width
  joint = kind != "finetune"
  model = models.make_model(encoder, num_src_classes=NUM_SRC if joint else 0,
                            num_tgt_classes=NUM_TGT, encoder_kwargs=kwargs)
  params, model_state = models.init_variables(model, jax.random.key(0),
                                              (size, size, 3))
  common = dict(model=model, tx=optim.momentum_sgd(0.01), params=params,
                model_state=model_state, rng=jax.random.key(0),
                par=parallel.Parallelism())
  rng = np.random.default_rng(0)
  image_shape = (size, size, 3)
  if not joint:
    state, step = build.supervised_parts(head="tgt", weight_decay=1e-4,
                                         decay_set="kernels", **common)
    return step, state, jax.device_put(synthetic.examples(
        rng, batch, image_shape=image_shape, classes=NUM_TGT))
  state, step = build.joint_parts(
      options=steps.L2TLOptions(**ESTIMATORS[kind]),
      policy_tx=optim.adam(0.01),
      policy_params=policy.init_policy_params(
          num_src_classes=NUM_SRC, num_levels=100, num_alpha_levels=100),
      **common)
  examples = synthetic.joint_batch(
      rng, joint_batch_sizes(kind, batch), image_shape=image_shape,
      num_src_classes=NUM_SRC, num_tgt_classes=NUM_TGT)
  return step, state, jax.device_put(examples)


def compiled_costs(step, state, batch) -> tuple[float, float]:
  """(XLA FLOPs per step, bytes of arguments + temporaries)."""
  compiled = step.lower(state, batch).compile()
  flops = timing.compiled_flops(compiled)
  memory = compiled.memory_analysis()
  size = float("nan")
  if memory is not None:
    size = float(memory.argument_size_in_bytes + memory.temp_size_in_bytes)
  return flops, size


def measure(kind: str, *, batch: int, num_steps: int, repeats: int = 2,
            **kwargs) -> dict[str, float]:
  """Step time, images/s, FLOPs and planned memory of one step kind."""
  step, state, examples = make_parts(kind, batch=batch, **kwargs)
  flops, memory = compiled_costs(step, state, examples)
  # compiled_costs traced the step once already; allow the timed call's.
  step, state, examples = make_parts(kind, batch=batch, **kwargs)
  rate = timing.steps_per_second(step, state, examples, num_steps=num_steps,
                                 repeats=repeats)
  images = batch if kind == "finetune" else 2 * batch
  return {"step_s": 1.0 / rate, "images_per_s": images * rate,
          "flops": flops, "memory_bytes": memory}


def largest_batch(**kwargs) -> int:
  """The largest power-of-two target batch whose L2TL meta-gradient step
  (the most memory-hungry) compiles and runs."""
  batch = 8
  while True:
    try:
      measure("meta_gradient", batch=2 * batch, num_steps=1, **kwargs)
    except Exception:  # pylint: disable=broad-except  (out of memory)
      return batch
    batch *= 2
    if batch >= 1024:
      return batch


def report(dtype: str, results: dict[str, dict[str, float]], peak: float,
           batch: int) -> list[str]:
  """Printable lines for one dtype."""
  lines = [f"{dtype}: peak {peak / 1e12:.3g} TFLOP/s ({_MATMUL.value}^3 "
           f"matmul), target batch {batch}"]
  base = results["finetune"]
  for kind, r in results.items():
    achieved = r["flops"] / r["step_s"]
    line = (f"  {kind}: {r['step_s'] * 1e3:.1f} ms/step, "
            f"{r['images_per_s']:.1f} img/s, {r['flops'] / 1e9:.1f} GFLOP/step,"
            f" {achieved / 1e12:.3g} TFLOP/s, MFU {100 * achieved / peak:.1f}%,"
            f" {r['memory_bytes'] / 2**30:.2f} GiB")
    if kind != "finetune":
      ratio = r["step_s"] / base["step_s"]
      if kind == "reinforce":
        sizes = joint_batch_sizes(kind, batch)
        ideal = (3 * 2 * sizes["tgt"] + sizes["val"]) / (3 * sizes["tgt"])
      else:
        ideal = r["flops"] / base["flops"]
      line += f"; time / finetune {ratio:.2f} (ideal {ideal:.2f})"
    lines.append(line)
  return lines


def main(argv: list[str]) -> None:
  """Parses `argv` (program name first) into FLAGS and measures.

  A bad flag exits with code 2 and one 'error: ...' line.
  """
  rest = cli.parse_flags(argv, FLAGS)
  if len(rest) > 1:
    cli.usage_error(f"Unexpected arguments: {rest[1:]}.")
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"encoder {_ENCODER.value} at {_IMAGE_SIZE.value} px")
  for dtype in _DTYPES.value:
    kwargs = dict(encoder=_ENCODER.value, dtype=dtype,
                  size=_IMAGE_SIZE.value, width=_WIDTH.value)
    batch = _BATCH.value or largest_batch(**kwargs)
    results = {kind: measure(kind, batch=batch, num_steps=_STEPS.value,
                             repeats=_REPEATS.value, **kwargs)
               for kind in ("finetune", *ESTIMATORS)}
    peak = 1e9 * timing.matmul_gflops(size=_MATMUL.value,
                                      dtype=getattr(jnp, dtype))
    print("\n".join(report(dtype, results, peak, batch)), flush=True)


if __name__ == "__main__":
  main(sys.argv)
