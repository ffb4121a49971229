"""experiments.bench_torch: the PyTorch steps against the JAX ones.

torch is no dependency of this project: the tests that need it are skipped
where it is not importable (CI). Run them from an environment with torch,
as the module docstring of experiments/bench_torch.py sets up:

  PYTHONPATH=. /work/torch311/bin/python -m pytest tests/test_bench_torch.py
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import bench
from experiments import bench_torch
from l2tl_jax import alignment
from l2tl_jax import estimators
from l2tl_jax import models
from l2tl_jax import outer
from l2tl_jax import policy
from l2tl_jax import steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_torch = pytest.mark.skipif(not bench_torch.torch_available(),
                                 reason="torch is not importable")


def _flax_model(image_shape=(32, 32, 1), **encoder_kwargs):
  model = models.make_model("lenet", num_src_classes=10, num_tgt_classes=5,
                            encoder_kwargs=encoder_kwargs)
  params, model_state = models.init_variables(model, jax.random.key(0),
                                              image_shape)
  return model, jax.device_get(params), model_state


def _images(n, image_shape=(32, 32, 1), seed=0):
  return np.random.RandomState(seed).rand(n, *image_shape).astype(np.float32)


# --- Without torch (CI runs these).


def test_torch_layout_maps_flax_kernels_to_pytorch_ones():
  # 8x8 images with 3 channels: fc1 sees a 2x2x4 map (conv_features 4).
  _, params, _ = _flax_model((8, 8, 3), conv_features=4, hidden=6,
                             features=5)
  layout = bench_torch.torch_layout(params, (8, 8, 3))
  # [out, in, kh, kw]
  assert layout["encoder.conv1.weight"].shape == (4, 3, 5, 5)
  np.testing.assert_array_equal(
      layout["encoder.conv1.weight"][2, 1, 3, 0],
      params["encoder"]["conv1"]["kernel"][3, 0, 1, 2])
  assert layout["encoder.fc1.weight"].shape == (6, 16)
  assert layout["src_head.weight"].shape == (10, 5)
  # fc1 applied to a feature map [h, w, c] flattened as flax does (h, w, c)
  # equals the PyTorch layer applied to the same map flattened (c, h, w).
  fmap = np.random.RandomState(1).rand(2, 2, 4).astype(np.float32)
  flax_out = fmap.reshape(-1) @ params["encoder"]["fc1"]["kernel"]
  torch_out = layout["encoder.fc1.weight"] @ fmap.transpose(2, 0, 1).reshape(-1)
  np.testing.assert_allclose(torch_out, flax_out, rtol=1e-6)
  # Fresh writable float32 arrays (torch.from_numpy shares them).
  assert all(v.flags.writeable and v.dtype == np.float32
             for v in layout.values())


def test_interleaved_rates_keep_each_runners_best_round():
  calls = []
  durations = {"a": iter([0.5, 0.25, 1.0]), "b": iter([0.1, 0.2, 0.4])}
  clock = [0.0]

  def runner(key):
    def run(num_steps):
      calls.append((key, num_steps))
      clock[0] += next(durations[key])
    return run

  rates = bench_torch.interleaved_rates(
      {"a": runner("a"), "b": runner("b")}, num_steps=10, repeats=3,
      clocks={"fake": lambda: clock[0], "frozen": lambda: 0.0})
  assert calls == [("a", 10), ("b", 10)] * 3  # Interleaved, round by round.
  assert rates["fake"] == pytest.approx({"a": 10 / 0.25, "b": 10 / 0.1})
  # A clock that does not move gives a large finite rate, not an error.
  assert all(1e9 <= r < float("inf") for r in rates["frozen"].values())


def test_table_prints_rates_and_ratios_and_dashes_where_not_run():
  rates = {("finetune", "jax"): 300.0, ("finetune", "torch eager"): 100.0,
           ("finetune", "torch.compile"): 150.0,
           ("l2tl reinforce", "jax"): 120.0,
           ("l2tl reinforce", "torch eager"): 40.0,
           ("l2tl alignment_ema", "jax"): 60.0,
           ("l2tl alignment_ema", "torch eager"): 30.0}
  lines = bench_torch.table(rates)
  assert lines[0].split() == ["step", "batch", "JAX", "eager", "compile",
                              "JAX/eager", "JAX/compile"]
  assert lines[1].split()[-5:] == ["300.0", "100.0", "150.0", "3.00x",
                                   "2.00x"]
  assert lines[2].startswith("l2tl reinforce")
  assert lines[2].split()[-5:] == ["120.0", "40.0", "-", "3.00x", "-x"]
  assert lines[3].split()[-5:] == ["60.0", "30.0", "-", "2.00x", "-x"]


def test_without_torch_the_command_says_so_in_one_line(monkeypatch, capsys):
  monkeypatch.setattr(bench_torch, "torch", None)
  assert bench_torch.main(["bench_torch"]) is None  # app.run: exit code 0.
  out = capsys.readouterr().out
  assert out.count("\n") == 1 and "torch is not importable" in out


@pytest.mark.slow
@pytest.mark.skipif(bench_torch.torch_available(),
                    reason="torch is importable: the command would run")
def test_without_torch_the_command_exits_0():
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.bench_torch"], cwd=ROOT,
      capture_output=True, text=True, timeout=300, check=False,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.count("\n") == 1
  assert "torch is not importable" in proc.stdout


# --- With torch.


@needs_torch
@pytest.mark.parametrize("image_shape, kwargs", [
    ((32, 32, 1), {}),
    ((28, 28, 3), {"conv_features": 8, "hidden": 32, "features": 16}),
])
def test_pytorch_lenet_gives_the_flax_logits(image_shape, kwargs):
  model, params, model_state = _flax_model(image_shape, **kwargs)
  images = _images(4, image_shape)
  torch_model = bench_torch.torch_model(params, image_shape)
  torch_images = bench_torch.torch_examples(
      {"image": images, "label": np.zeros(4, np.int32)})["image"]
  features, _ = models.apply_encoder(model, params, model_state, images,
                                     train=False)
  for head in ("src", "tgt"):
    want = np.asarray(models.apply_head(model, params, features, head))
    got = torch_model(torch_images, head).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@needs_torch
@pytest.mark.parametrize("layers", [2, 0])
def test_pytorch_alignment_scores_equal_outer_alignment_scores(layers):
  model, params, model_state = _flax_model()
  rs = np.random.RandomState(0)
  src = {"image": _images(6, seed=1), "label": rs.randint(0, 10, 6)}
  val = {"image": _images(5, seed=2), "label": rs.randint(0, 5, 5)}
  problem = outer.JointProblem(model=model, tx=None)
  want = np.asarray(jax.jit(lambda p: alignment.alignment_scores(
      p, model_state, src, val, problem=problem, layers=layers))(params))
  batch = bench_torch.torch_batch(
      {"src": src, "tgt": {"image": src["image"][:3],
                           "label": np.zeros(3, np.int32)}, "val": val})
  options = steps.L2TLOptions(estimator="alignment_ema", fixed_alpha=1.0,
                              src_normalization="mean", score_layers=layers)
  step = bench_torch.AlignmentStep(
      bench_torch.torch_model(params, (32, 32, 1)), batch, options)
  got = step.scores(batch["src"]["image"], batch["src"]["label"],
                    batch["val"]["image"], batch["val"]["label"]).numpy()
  assert np.all(want != 0)
  np.testing.assert_allclose(got, want, rtol=1e-4,
                             atol=1e-6 * np.abs(want).max())


def _kind(name):
  return {k.name: k for k in bench.STEP_KINDS}[name]


def _state_dicts_close(jax_params, torch_model, atol=1e-6):
  want = bench_torch.torch_layout(jax.device_get(jax_params), bench.IMAGE)
  got = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
  assert set(got) == set(want)
  for k, v in want.items():
    np.testing.assert_allclose(got[k], v, atol=atol, err_msg=k)


@pytest.mark.slow
@needs_torch
def test_pytorch_finetune_steps_equal_the_jax_steps():
  s = bench.setup("finetune", encoder="lenet")
  step = bench_torch.torch_step(_kind("finetune"), jax.device_get(
      s.state.params), s.batch, compiled=False)
  state, jax_step = s.make()
  for _ in range(3):
    got = step()
    state, metrics = jax_step(state, s.batch)
  _state_dicts_close(state.params, step.model)
  assert float(got["loss"]) == pytest.approx(
      float(metrics["train/tgt_loss"]), rel=1e-5)
  assert float(got["accuracy"]) == float(metrics["train/tgt_accuracy"])


@pytest.mark.slow
@needs_torch
def test_pytorch_reinforce_steps_equal_the_jax_steps_for_the_same_actions():
  import torch  # pylint: disable=import-outside-toplevel
  s = bench.setup("l2tl", encoder="lenet")
  # A baseline with history, so that the advantages (and the policy's
  # updates) are not 0 from the first step.
  num, den = 0.03, 0.1
  step = bench_torch.ReinforceStep(
      bench_torch.torch_model(jax.device_get(s.state.params), bench.IMAGE),
      bench_torch.torch_batch(jax.device_get(s.batch)),
      steps.L2TLOptions(), baseline=(num, den))
  state, jax_step = s.make()
  state = state.replace(estimator_state=estimators.BaselineState(
      num=jnp.float32(num), den=jnp.float32(den)))
  advantages = []
  for _ in range(3):
    # The actions the JAX step draws (estimators_common.sample).
    actions = policy.sample(state.policy_params,
                            jax.random.fold_in(state.step_key(), 0))
    got = step({"class": torch.from_numpy(np.asarray(actions["class"],
                                                     np.int64)),
                "alpha": torch.tensor(int(actions["alpha"]))})
    state, metrics = jax_step(state, s.batch)
    for key, want in (("src_loss", "train/src_loss"),
                      ("tgt_loss", "train/tgt_loss"),
                      ("val_loss", "val/loss"), ("reward", "policy/reward"),
                      ("advantage", "policy/advantage")):
      assert float(got[key]) == pytest.approx(float(metrics[want]), rel=1e-5,
                                              abs=1e-6), key
    advantages.append(float(got["advantage"]))
  assert any(a != 0 for a in advantages)
  _state_dicts_close(state.params, step.model)
  for name, logits in (("class_logits", step.class_logits),
                       ("alpha_logits", step.alpha_logits)):
    np.testing.assert_allclose(logits.detach().numpy(),
                               np.asarray(state.policy_params[name]),
                               atol=1e-6)
  assert np.abs(np.asarray(state.policy_params["alpha_logits"])).max() > 1e-3


@pytest.mark.slow
@needs_torch
def test_pytorch_alignment_steps_equal_the_jax_steps():
  # No warm-up: the learned class weights choose the kept examples from the
  # first step.
  options = dict(_kind("l2tl alignment_ema (last 2 layers)").options,
                 warmup_steps=0)
  s = bench.setup("l2tl", encoder="lenet", **options)
  step = bench_torch.AlignmentStep(
      bench_torch.torch_model(jax.device_get(s.state.params), bench.IMAGE),
      bench_torch.torch_batch(jax.device_get(s.batch)),
      steps.L2TLOptions(**options))
  state, jax_step = s.make()
  for _ in range(3):
    got = step()
    state, metrics = jax_step(state, s.batch)
    for key, want in (("src_loss", "train/src_loss"),
                      ("tgt_loss", "train/tgt_loss"),
                      ("val_loss", "val/loss"),
                      ("mean_alignment", "policy/mean_alignment")):
      assert float(got[key]) == pytest.approx(float(metrics[want]), rel=1e-4,
                                              abs=1e-6), key
    np.testing.assert_allclose(got["class_weights"].numpy(),
                               np.asarray(state.estimator_state.weights),
                               rtol=1e-4)
  assert np.ptp(np.asarray(state.estimator_state.weights)) > 0
  _state_dicts_close(state.params, step.model)


@pytest.mark.slow
@needs_torch
def test_the_command_prints_every_row_and_ratio_on_tiny_step_counts():
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.bench_torch", "--steps=2",
       "--repeats=1"], cwd=ROOT, capture_output=True, text=True,
      timeout=1200, check=False,
      env={**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join(
               filter(None, [ROOT, os.environ.get("PYTHONPATH")]))})
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert "torch.set_num_threads(" in out and "load average" in out
  lines = out.splitlines()
  header = next(i for i, l in enumerate(lines) if l.startswith("step "))
  for line, (row, _) in zip(lines[header + 1:header + 4], bench_torch.ROWS):
    assert line.startswith(row)
    jax_rate, eager = (float(x) for x in line.split()[-5:-3])
    assert jax_rate > 0 and eager > 0
    assert line.split()[-2] != "-x"  # JAX / eager.
  # torch.compile either has its rows or says in one line why not.
  compiled = [l.split()[-3] for l in lines[header + 1:header + 4]]
  assert all(c != "-" for c in compiled) or any(
      l.startswith("torch.compile failed") for l in lines)
  assert "l2tl reinforce: jax" in out and "l2tl alignment_ema: jax" in out
