"""experiments/bench_device.py on the CPU at 32 px: every figure is there."""

import os
import re
import subprocess

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
  # REINFORCE at the runs' batches: (3 * 2B + B) / (3B), B = 2.
  assert "ideal 2.33" in out[3]


def test_costs_grow_with_the_work():
  kwargs = dict(encoder="resnet18", dtype="float32", size=32, width=8)
  finetune = bench_device.measure("finetune", batch=2, num_steps=1, **kwargs)
  reinforce = bench_device.measure("reinforce", batch=2, num_steps=1,
                                   **kwargs)
  meta = bench_device.measure("meta_gradient", batch=2, num_steps=1, **kwargs)
  assert 0 < finetune["flops"] < reinforce["flops"] < meta["flops"]
  assert finetune["memory_bytes"] > 0 and finetune["images_per_s"] > 0
  assert timing.matmul_gflops(size=128, repeats=1, dtype=jnp.bfloat16) > 0


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "device_check.sh")


def test_device_check_smoke_runs_every_step_in_both_dtypes(tmp_path):
  """The accelerator check's own path on the CPU (--smoke: no install)."""
  out = tmp_path / "out"
  proc = subprocess.run(["bash", SCRIPT, "--smoke"], capture_output=True,
                        text=True, env={**os.environ, "OUT": str(out)},
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "imports: ok" in (out / "env.txt").read_text()
  for dtype in ("bfloat16", "float32"):
    text = (out / f"bench_{dtype}.txt").read_text()
    for kind in ("finetune", "reinforce", "meta_gradient"):
      assert re.search(rf"{kind}: [\d.]+ ms/step", text), text


@pytest.mark.parametrize("args", [[], ["--bogus"]])
def test_device_check_without_wheels_or_with_bad_flags_says_what_to_do(
    tmp_path, args):
  proc = subprocess.run(
      ["bash", SCRIPT, *args], capture_output=True, text=True, check=False,
      env={**os.environ, "WHEELS": str(tmp_path / "none"),
           "OUT": str(tmp_path / "out")}, timeout=60)
  assert proc.returncode != 0
  if args:
    assert "usage: bash experiments/device_check.sh" in proc.stderr
  else:
    assert "bash experiments/device_check.sh --prepare" in proc.stderr
  assert not (tmp_path / "out").exists()  # Nothing half-written.


@pytest.mark.parametrize("flag,message", [
    ("--dtypes=float16", "--dtypes must be a comma-separated list among "
     "float32, bfloat16"),
    ("--encoder=lenet", "flag --encoder=lenet: value should be one of"),
    ("--steps=0", "0 is not a positive integer"),
    ("--batch=-1", "-1 is not a non-negative integer"),
])
def test_bad_flags_stop_before_any_work_in_one_line(capsys, flag, message):
  with pytest.raises(SystemExit) as info:
    bench_device.main(["bench_device", flag])
  assert info.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.startswith("error: ") and message in captured.err
  assert captured.err.count("\n") == 1
