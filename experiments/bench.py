r"""Step-time benchmark: pre-training, fine-tuning and the L2TL outer steps.

  python -m experiments.bench [--steps=300] [--slow_steps=30] \
      [--encoder=lenet] [--pool=auto|flax|fast] [--windows=1,2,4,8]

Measures, on the default device, outer steps/s of L2TL and steps/s of the
fine-tuning step at the reference batch sizes (8 target, 16 -> 8 source,
32 validation; 32x32x1 images, 10 source and 5 target classes), and prints
their step-time ratio beside the ideal ratio from the work done:

  L2TL:      forward+backward on 8 kept source + 8 target images, plus a
             forward on 32 validation images (the top-k selection depends only
             on labels, so only the kept source images are forwarded);
  finetune:  forward+backward on 8 target images;
  ideal = (3 * 16 + 32) / (3 * 8) with backward = 2 forwards,

and the same ratio from XLA's own FLOP count of the compiled steps.

It then tabulates, for source pre-training (`build.source_stage` with the
default config.pretrain: batch 128, 10 classes), the fine-tuning step and the
L2TL estimators (reinforce, reinforce with 4 leave-one-out samples,
meta_gradient, and the alignment estimators: alignment_ema scoring the last
two encoder layers, the whole encoder, or every 4th step; alignment_reinforce;
l2rw, each also as a ratio to the REINFORCE step): steps/s, XLA's FLOPs per step
(`compiled.cost_analysis()['flops']`), the achieved GFLOP/s, and its share of
the device's float32 matmul rate measured in the same run (a jitted
2048^3 matmul, best of 5): the peak a step could approach. The slow rows
(pre-training, 4 samples, meta-gradient) time --slow_steps steps.
LeNet's max pool follows --pool: 'auto' (the default) builds each step as
the runs do (`build.source_stage` / `build.target_stage`): the fast pool for
the steps that take first derivatives only, flax's for the meta-gradient;
'flax' and 'fast' force one for the target-stage steps (pre-training always
runs the fast one, as source_stage builds it).

With --windows it also times the outer step for credit windows of N model
steps per action (unrolled and `lax.scan`), the meta-gradient step and the
4-sample leave-one-out REINFORCE step, each per outer step and per model
step, against the fine-tuning step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import cli
from experiments import timing
from experiments.configs import default as default_config
from l2tl_jax import build
from l2tl_jax import estimators
from l2tl_jax import models
from l2tl_jax import optim
from l2tl_jax import parallel
from l2tl_jax import policy
from l2tl_jax import spec as spec_lib
from l2tl_jax import steps
from l2tl_jax import synthetic

_STEPS = flags.DEFINE_integer("steps", 300, "Timed steps per measurement.",
                              lower_bound=1)
_SLOW_STEPS = flags.DEFINE_integer(
    "slow_steps", 30,
    "Timed steps per measurement of pre-training, 4 samples, meta-gradient.",
    lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Measurements; the best is kept.",
                                lower_bound=1)
_ENCODER = flags.DEFINE_enum("encoder", "lenet", models.encoder_names(),
                             "Registered encoder name.")
_WINDOWS = flags.DEFINE_list(
    "windows", [], "Credit windows N (model steps per action) to time.")
_MATMUL_SIZE = flags.DEFINE_integer(
    "matmul_size", 2048, "n of the n^3 float32 matmul that measures the peak.",
    lower_bound=1)
_POOL = flags.DEFINE_enum(
    "pool", "auto", ["auto", "flax", "fast"],
    "LeNet's max pool in the fine-tuning and L2TL steps: 'auto' as the runs "
    "build them (fast for first derivatives only, flax's for the "
    "meta-gradient), or one for all. Pre-training runs the fast pool.")


def _positive_ints(values: list[str]) -> bool:
  return all(v.strip().isdigit() and int(v) >= 1 for v in values)


flags.register_validator(
    "windows", _positive_ints,
    "--windows must be a comma-separated list of integers >= 1 (model steps "
    "per action)")
flags.register_multi_flags_validator(
    ["encoder", "pool"],
    lambda v: v["pool"] == "auto" or models.get_encoder(
        v["encoder"]).pool_choice,
    "--pool=flax or fast needs an encoder with a choice of max pool "
    "(pool_choice: lenet)")

# The default config's target batch (config.train.batch_size) and its
# modes' validation batch (config.l2tl.val_batch_size); the source batch
# follows each step's options (`L2TLOptions.joint_batch_sizes`).
TGT_BATCH, VAL_BATCH = 8, 32
NUM_SRC, NUM_TGT, IMAGE = 10, 5, (32, 32, 1)


def l2tl_batch_sizes(**options) -> dict[str, int]:
  """The L2TL step's batch sizes under `L2TLOptions(**options)`, as the
  runs read them at TGT_BATCH and VAL_BATCH."""
  return steps.L2TLOptions(**options).joint_batch_sizes(TGT_BATCH, VAL_BATCH)


def l2tl_batches(**options) -> str:
  """The table's batch column of an L2TL step: 'S->K src + T tgt + V val'
  (S source examples of which K are kept)."""
  sizes = l2tl_batch_sizes(**options)
  return (f"{sizes['src']}->{sizes['tgt']} src + {sizes['tgt']} tgt + "
          f"{sizes['val']} val")


L2TL_BATCHES = l2tl_batches()


class Setup(NamedTuple):
  """A step factory with its first state and a device batch."""

  make: Any  # () -> (state, step): a fresh state and a fresh compiled step.
  state: Any
  batch: Any


@dataclasses.dataclass(frozen=True)
class StepKind:
  """One row of the table: which step, at which batch sizes."""

  name: str
  batches: str
  kind: str  # 'pretrain', 'finetune' or 'l2tl'.
  options: tuple[tuple[str, Any], ...] = ()
  slow: bool = False


def _l2tl_kind(name: str, *, slow: bool = False, **options) -> StepKind:
  """An L2TL row: the step under `L2TLOptions(**options)`, at its batches."""
  return StepKind(f"l2tl {name}", l2tl_batches(**options), "l2tl",
                  tuple(options.items()), slow=slow)


STEP_KINDS = (
    StepKind("pretrain", "128 src", "pretrain", slow=True),
    StepKind("finetune", f"{TGT_BATCH} tgt", "finetune"),
    _l2tl_kind("reinforce"),
    _l2tl_kind("reinforce, 4 samples (leave-one-out)", slow=True,
               num_samples=4),
    _l2tl_kind("meta_gradient", slow=True, estimator="meta_gradient"),
) + tuple(
    _l2tl_kind(name, estimator=estimator, fixed_alpha=1.0,
               src_normalization="mean", **extra)
    for name, estimator, extra in (
        ("alignment_ema (last 2 layers)", "alignment_ema", {}),
        ("alignment_ema (exact)", "alignment_ema", {"score_layers": 0}),
        ("alignment_ema (last 2 layers, every 4th step)", "alignment_ema",
         {"score_every": 4}),
        ("alignment_reinforce", "alignment_reinforce",
         {"class_weight_scale": 50.0}),
        ("l2rw", "l2rw", {}),
    ))
# The alignment rows, compared with the REINFORCE step in the same run.
ALIGNMENT_KINDS = tuple(k.name for k in STEP_KINDS
                        if dict(k.options).get("fixed_alpha") == 1.0)


@dataclasses.dataclass(frozen=True)
class StepCost:
  """Measured speed and XLA's work of one compiled step."""

  name: str
  batches: str
  steps_per_s: float
  flops: float  # XLA's FLOPs per step.

  @property
  def gflops_per_s(self) -> float:
    return self.steps_per_s * self.flops / 1e9


def _pretrain_config(encoder: str, encoder_kwargs: dict[str, Any]):
  config = default_config.get_config()
  config.model.encoder = encoder
  config.model.encoder_kwargs = ml_collections.ConfigDict(encoder_kwargs)
  return config


def step_encoder_kwargs(kind: str, encoder: str,
                        encoder_kwargs: dict[str, Any] | None, pool: str,
                        estimator: str | None = None) -> dict[str, Any]:
  """`encoder_kwargs` with LeNet's max pool chosen for a step of `kind`.

  'auto': the fast pool unless the step takes second derivatives (the
  meta-gradient), as `build.target_stage` builds it. Pre-training is left
  to `build.source_stage` (always fast); an explicit fast_pool stays.
  """
  kwargs = dict(encoder_kwargs or {})
  if kind == "pretrain":
    return kwargs
  if pool == "auto":  # As build.target_stage chooses.
    fast = not (kind == "l2tl" and estimators.ESTIMATORS[
        estimator or "reinforce"].second_order)
  else:
    fast = pool == "fast"
  return build.pool_kwargs(encoder, kwargs, fast=fast)


def setup(kind: str, *, encoder: str,
          encoder_kwargs: dict[str, Any] | None = None, pool: str = "auto",
          **options) -> Setup:
  """The step of `kind`, built through `l2tl_jax.build`, a state and a batch.

  Args:
    kind: 'pretrain' (`build.source_stage` with the default config.pretrain),
      'finetune' or 'l2tl' (`build.supervised_parts` / `build.joint_parts`).
    encoder: registered encoder name.
    encoder_kwargs: its constructor arguments.
    pool: LeNet's max pool outside pre-training: 'auto' (fast unless the
      estimator takes second derivatives, as `build.target_stage` builds
      it), 'flax' or 'fast'. Ignored by encoders without `fast_pool`.
    **options: `L2TLOptions` of 'l2tl'.
  """
  if kind not in ("pretrain", "finetune", "l2tl"):
    raise ValueError(f"Unknown step kind {kind!r}.")
  encoder_kwargs = step_encoder_kwargs(kind, encoder, encoder_kwargs, pool,
                                       options.get("estimator"))
  rng = np.random.default_rng(0)
  par = parallel.Parallelism()
  if kind == "pretrain":
    spec = spec_lib.from_config(_pretrain_config(encoder, encoder_kwargs))
    shapes = build.Shapes(IMAGE, NUM_SRC, NUM_TGT)

    def make_pretrain():
      parts = build.source_stage(spec, shapes, par=par)
      return parts.state, parts.train_step

    batch = synthetic.examples(rng, spec.pretrain.batch_size,
                               image_shape=IMAGE, classes=NUM_SRC)
    return Setup(make_pretrain, make_pretrain()[0], jax.device_put(batch))
  model = models.make_model(
      encoder, num_src_classes=0 if kind == "finetune" else NUM_SRC,
      num_tgt_classes=NUM_TGT, encoder_kwargs=encoder_kwargs)
  params, model_state = models.init_variables(model, jax.random.key(0), IMAGE)

  def fresh():
    # Copies: every state made is donated by its step, so none may share
    # buffers with the next.
    copy = lambda tree: jax.tree.map(jnp.copy, tree)
    return dict(model=model, params=copy(params),
                model_state=copy(model_state), rng=jax.random.key(0), par=par)

  if kind == "finetune":
    make = lambda: build.supervised_parts(
        head="tgt", tx=optim.momentum_sgd(0.005), weight_decay=5e-4,
        decay_set="kernels", **fresh())
    batch = synthetic.examples(rng, TGT_BATCH, image_shape=IMAGE,
                               classes=NUM_TGT)
  else:
    opts = steps.L2TLOptions(**options)
    policy_parts = {}
    if estimators.select(opts).learns:
      policy_parts = dict(
          policy_tx=optim.adam(0.01),
          policy_params=policy.init_policy_params(
              num_src_classes=NUM_SRC, num_levels=100, num_alpha_levels=100))
    make = lambda: build.joint_parts(
        options=opts, tx=optim.momentum_sgd(0.005), **policy_parts, **fresh())
    batch = synthetic.joint_batch(
        rng, opts.joint_batch_sizes(TGT_BATCH, VAL_BATCH), image_shape=IMAGE,
        num_src_classes=NUM_SRC, num_tgt_classes=NUM_TGT)
  return Setup(make, make()[0], jax.device_put(batch))


def measure(s: Setup, *, num_steps: int, repeats: int) -> tuple[float, float]:
  """(steps/s, XLA FLOPs per step) of one compilation of `s`'s step."""
  compiled = s.make()[1].lower(s.state, s.batch).compile()
  flops = timing.compiled_flops(compiled)
  rate = timing.steps_per_second(compiled, s.state, s.batch,
                                 num_steps=num_steps, repeats=repeats)
  return rate, flops


def measure_steps(kinds=STEP_KINDS, *, encoder: str, num_steps: int,
                  slow_steps: int, repeats: int,
                  encoder_kwargs: dict[str, Any] | None = None,
                  pool: str = "auto") -> dict[str, StepCost]:
  """StepCost of each StepKind, by name (slow kinds time `slow_steps`)."""
  costs = {}
  for k in kinds:
    s = setup(k.kind, encoder=encoder, encoder_kwargs=encoder_kwargs,
              pool=pool, **dict(k.options))
    rate, flops = measure(s,
                          num_steps=slow_steps if k.slow else num_steps,
                          repeats=repeats)
    costs[k.name] = StepCost(k.name, k.batches, rate, flops)
  return costs


def table(costs: dict[str, StepCost], peak_gflops: float) -> list[str]:
  """The per-step lines: steps/s, GFLOP/step, GFLOP/s, % of matmul peak."""
  width = max(len(c.name) for c in costs.values())
  bwidth = max(len(c.batches) for c in costs.values())
  lines = [f"{'step':{width}s}  {'batch':{bwidth}s}  {'steps/s':>8s}  "
           f"{'GFLOP/step':>10s}  {'GFLOP/s':>8s}  {'% of peak':>9s}"]
  for c in costs.values():
    lines.append(
        f"{c.name:{width}s}  {c.batches:{bwidth}s}  {c.steps_per_s:8.1f}  "
        f"{c.flops / 1e9:10.3f}  {c.gflops_per_s:8.1f}  "
        f"{100 * c.gflops_per_s / peak_gflops:9.1f}")
  return lines


def cost_ratio(costs: dict[str, StepCost], name: str,
               base: str = "finetune") -> tuple[float, float]:
  """(measured step-time ratio, XLA FLOP ratio) of step `name` to `base`."""
  step, ref = costs[name], costs[base]
  return ref.steps_per_s / step.steps_per_s, step.flops / ref.flops


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"Unexpected arguments: {argv[1:]}.")
  print(f"devices: {jax.devices()}")
  peak = timing.matmul_gflops(size=_MATMUL_SIZE.value)
  n = _MATMUL_SIZE.value
  print(f"matmul peak (float32 {n}^3, jit, best of 5): {peak:.1f} GFLOP/s")
  pool = _POOL.value
  costs = measure_steps(encoder=_ENCODER.value, num_steps=_STEPS.value,
                        slow_steps=_SLOW_STEPS.value, repeats=_REPEATS.value,
                        pool=pool)
  l2tl, finetune = costs["l2tl reinforce"], costs["finetune"]
  measured, flops_ratio = cost_ratio(costs, "l2tl reinforce")
  sizes = l2tl_batch_sizes()
  ideal = (3 * 2 * sizes["tgt"] + sizes["val"]) / (3 * sizes["tgt"])
  print(f"encoder: {_ENCODER.value} (max pool: {pool}); batches: target "
        f"{sizes['tgt']}, source {sizes['src']} -> {sizes['tgt']}, "
        f"validation {sizes['val']}")
  print(f"l2tl outer steps/s: {l2tl.steps_per_s:.1f}")
  print(f"finetune steps/s: {finetune.steps_per_s:.1f}")
  print(f"XLA flop ratio l2tl/finetune: {flops_ratio:.2f}")
  print(f"measured/ideal: {measured / ideal:.2f}")
  print(f"l2tl/finetune step-time ratio: measured {measured:.2f}, "
        f"ideal {ideal:.2f}")
  print()
  print("\n".join(table(costs, peak)))
  meta_time, meta_flops = cost_ratio(costs, "l2tl meta_gradient")
  print(f"meta_gradient/finetune: measured step-time ratio {meta_time:.2f}, "
        f"XLA flop ratio {meta_flops:.2f}")
  print("\nstep time / REINFORCE step time (/ fine-tuning step time):")
  for name in ALIGNMENT_KINDS:
    vs_reinforce, _ = cost_ratio(costs, name, "l2tl reinforce")
    vs_finetune, _ = cost_ratio(costs, name)
    print(f"  {name}: {vs_reinforce:.2f} ({vs_finetune:.2f})")
  if not _WINDOWS.value:
    return
  print("\nouter-step time / finetune step time (per model step):")
  known = {"meta_gradient": costs["l2tl meta_gradient"],
           "reinforce, 4 samples (leave-one-out), vmap":
               costs["l2tl reinforce, 4 samples (leave-one-out)"]}
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
    if name in known:
      rate = known[name].steps_per_s
    else:
      rate, _ = measure(setup("l2tl", encoder=_ENCODER.value, pool=pool,
                              **options),
                        num_steps=_STEPS.value, repeats=_REPEATS.value)
    ratio = finetune.steps_per_s / rate
    print(f"  {name}: {ratio:.2f} ({ratio / n:.2f})")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
