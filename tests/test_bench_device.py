"""experiments/bench_device.py on the CPU at 32 px: every figure is there."""

import re

import jax.numpy as jnp
import pytest

from experiments import bench_device
from experiments import timing

# Builds and times ResNet steps: a benchmark run, not an edit-loop test.
pytestmark = pytest.mark.slow


def test_reports_every_step_kind(capsys):
  bench_device.main(["bench_device", "--encoder=resnet18", "--image_size=32",
                     "--width=8", "--batch=2", "--steps=1",
                     "--dtypes=float32", "--matmul=256"])
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith("device: ")
  assert re.match(r"float32: peak [\d.e+-]+ TFLOP/s \(256\^3 matmul\), target "
                  r"batch 2", out[1])
  kinds = [line.split(":")[0].strip() for line in out[2:]]
  assert kinds == ["finetune", "reinforce", "meta_gradient"]
  for line in out[2:]:
    assert re.search(r"[\d.]+ ms/step, [\d.]+ img/s, [\d.]+ GFLOP/step, "
                     r"[\d.e+-]+ TFLOP/s, MFU [\d.]+%, [\d.]+ GiB", line), line
  assert "ideal 2.67" in out[3]  # REINFORCE: (3 * 2B + 2B) / (3B), B = 2.


def test_costs_grow_with_the_work():
  kwargs = dict(encoder="resnet18", dtype="float32", size=32, width=8)
  finetune = bench_device.measure("finetune", batch=2, num_steps=1, **kwargs)
  reinforce = bench_device.measure("reinforce", batch=2, num_steps=1,
                                   **kwargs)
  meta = bench_device.measure("meta_gradient", batch=2, num_steps=1, **kwargs)
  assert 0 < finetune["flops"] < reinforce["flops"] < meta["flops"]
  assert finetune["memory_bytes"] > 0 and finetune["images_per_s"] > 0
  assert timing.matmul_gflops(size=128, repeats=1, dtype=jnp.bfloat16) > 0
