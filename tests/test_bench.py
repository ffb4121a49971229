"""experiments.bench and experiments.timing on tiny step counts."""

import math

import pytest

from experiments import bench
from experiments import timing


@pytest.fixture(scope="module")
def costs():
  return bench.measure_steps(encoder="lenet", num_steps=2, slow_steps=1,
                             repeats=1)


def test_matmul_peak_is_positive():
  assert timing.matmul_gflops(size=128, calls=1, repeats=1) > 0


def test_every_step_is_measured_with_positive_speed_and_flops(costs):
  assert list(costs) == [k.name for k in bench.STEP_KINDS]
  for cost in costs.values():
    assert cost.steps_per_s > 0 and math.isfinite(cost.steps_per_s)
    assert cost.flops > 0 and math.isfinite(cost.flops)
    assert cost.gflops_per_s == pytest.approx(
        cost.steps_per_s * cost.flops / 1e9)


def test_flop_counts_are_ordered_by_the_work_done(costs):
  flops = {name: cost.flops for name, cost in costs.items()}
  # Batch 128 against batch 8: about 16x the work of a fine-tuning step.
  assert 10 < flops["pretrain"] / flops["finetune"] < 20
  # The reference outer step: (3 * 16 + 32) / (3 * 8) = 3.33 by hand.
  assert 3.0 < flops["l2tl reinforce"] / flops["finetune"] < 3.6
  assert flops["l2tl meta_gradient"] > flops["l2tl reinforce"]
  # Four rollouts of the reference step.
  assert 3.5 < (flops["l2tl reinforce, 4 samples (leave-one-out)"]
                / flops["l2tl reinforce"]) < 4.5


def test_table_and_ratios(costs):
  lines = bench.table(costs, peak_gflops=100.0)
  assert lines[0].split() == ["step", "batch", "steps/s", "GFLOP/step",
                              "GFLOP/s", "%", "of", "peak"]
  assert len(lines) == 1 + len(costs)
  for line, cost in zip(lines[1:], costs.values()):
    assert line.startswith(cost.name)
    percent = float(line.split()[-1])
    assert percent == pytest.approx(cost.gflops_per_s, abs=0.06)  # Peak 100.
  time_ratio, flop_ratio = bench.cost_ratio(costs, "l2tl meta_gradient")
  assert time_ratio > 0
  assert flop_ratio == pytest.approx(costs["l2tl meta_gradient"].flops
                                     / costs["finetune"].flops)


def test_unknown_step_kind_is_refused():
  with pytest.raises(ValueError, match="Unknown step kind"):
    bench.setup("distill", encoder="mlp")


@pytest.mark.parametrize("kind,pool,estimator,want", [
    ("finetune", "auto", None, {"fast_pool": True}),
    ("l2tl", "auto", None, {"fast_pool": True}),  # REINFORCE.
    ("l2tl", "auto", "meta_gradient", {"fast_pool": False}),
    ("l2tl", "fast", "meta_gradient", {"fast_pool": True}),
    ("finetune", "flax", None, {"fast_pool": False}),
    ("pretrain", "flax", None, {}),  # build.source_stage decides.
])
def test_the_max_pool_follows_how_the_runs_build_each_step(
    kind, pool, estimator, want):
  assert bench.step_encoder_kwargs(kind, "lenet", None, pool,
                                   estimator) == want
  # An explicit choice stays; encoders without the field are untouched.
  assert bench.step_encoder_kwargs(kind, "lenet", {"fast_pool": False}, pool,
                                   estimator) == {"fast_pool": False}
  assert bench.step_encoder_kwargs(kind, "mlp", None, pool, estimator) == {}


def test_l2tl_batches_follow_the_options_as_the_runs_read_them():
  assert bench.L2TL_BATCHES == "16->8 src + 8 tgt + 32 val"
  assert (bench.l2tl_batches(src_oversample=3, inner_steps=2)
          == "48->16 src + 16 tgt + 32 val")
  s = bench.setup("l2tl", encoder="mlp", src_oversample=3, inner_steps=2)
  sizes = {name: len(s.batch[name]["label"]) for name in ("src", "tgt", "val")}
  assert sizes == {"src": 48, "tgt": 16, "val": 32}
  assert s.batch["src"]["image"].shape[1:] == bench.IMAGE
