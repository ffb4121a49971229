"""experiments/compare.py: seeds x methods on the tiny config, summaries."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import compare
from experiments import runner
from experiments.configs import tiny
from l2tl_jax import train
from l2tl_jax import validation

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("finetune", "l2tl")
SEEDS = 2
SIZES = (3, 6)


OVERRIDES = {"train.steps": 6, "eval.every_steps": 3, "log_every_steps": 3,
             "checkpoint_every_steps": 6, "write_plots": False}


def _config(data_dir):
  config = tiny.get_config()
  config.data.data_dir = data_dir
  config.update_from_flattened_dict(OVERRIDES)
  return config


# Tests that use it run the comparison command line in a subprocess: slow.
@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
  """Runs the command line once; 8 runs share one persistent XLA cache."""
  root = tmp_path_factory.mktemp("compare")
  data_dir, workdir = str(root / "tfds"), str(root / "cmp")
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "JAX_COMPILATION_CACHE_DIR": str(root / "xla_cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  out = subprocess.run(
      [sys.executable, "-m", "experiments.compare",
       "--config=experiments/configs/tiny.py", f"--workdir={workdir}",
       f"--seeds={SEEDS}", f"--methods={','.join(METHODS)}",
       f"--target_per_class={','.join(map(str, SIZES))}", "--sweep_seeds=1",
       f"--config.data.data_dir={data_dir}",
       *[f"--config.{k}={v}" for k, v in OVERRIDES.items()]],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| l2tl (val-selected) |" in out.stdout
  summary = _read_json(os.path.join(workdir, "summary.json"))
  summary["sweep"] = _read_json(os.path.join(workdir, "sweep.json"))
  return _config(data_dir), workdir, summary


def _results(workdir, *parts):
  with open(os.path.join(workdir, *parts, "results.json")) as f:
    return json.load(f)


def _read_json(path):
  with open(path) as f:
    return json.load(f)


@pytest.mark.slow
def test_files_written(comparison):
  _, workdir, _ = comparison
  for name in ("summary.json", "summary.md", "comparison.png", "sweep.json",
               "sweep.md", "target_size_sweep.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert not [n for n in os.listdir(workdir) if n.startswith(".tmp")]


@pytest.mark.slow
def test_pretraining_ran_once(comparison):
  _, workdir, _ = comparison
  assert len([e for e in os.listdir(os.path.join(workdir, "pretrain"))
              if not e.startswith(".")]) == 1  # Entries; locks are hidden.
  keys = {_results(workdir, "runs", m, f"seed{s}")["pretrain"]["key"]
          for m in METHODS for s in range(SEEDS)}
  keys |= {_results(workdir, "sweep", f"n{k}", m, "seed0")["pretrain"]["key"]
           for k in SIZES for m in METHODS}
  assert len(keys) == 1


@pytest.mark.slow
def test_rows_are_the_per_seed_results(comparison):
  _, workdir, summary = comparison
  saved = _read_json(os.path.join(workdir, "summary.json"))
  assert list(saved["methods"]) == [
      "finetune", "finetune (val-selected)", "l2tl", "l2tl (val-selected)"]
  assert saved["std_kind"] == "sample std over seeds (ddof=1)"
  for name, row in saved["methods"].items():
    runs = [_results(workdir, "runs", row["method"], f"seed{s}")
            for s in range(SEEDS)]
    for r, s in zip(runs, range(SEEDS)):
      assert r["seed"] == s and r["method"] == row["method"]
    if name.endswith("(val-selected)"):
      test = [r["val_selected"]["test_accuracy"] for r in runs]
      val = [r["val_selected"]["val_accuracy"] for r in runs]
    else:
      test = [r["test_accuracy"] for r in runs]
      val = [r["val_accuracy"] for r in runs]
    assert row["per_seed"] == test
    assert row["seeds"] == [0, 1]
    np.testing.assert_allclose(row["mean"], (test[0] + test[1]) / 2)
    # Sample std of two values: |a - b| / sqrt(2).
    np.testing.assert_allclose(row["std"], abs(test[0] - test[1]) / np.sqrt(2))
    np.testing.assert_allclose(row["val_accuracy_mean"], np.mean(val))


@pytest.mark.slow
def test_learned_class_weights_are_averaged(comparison):
  _, workdir, summary = comparison
  runs = [_results(workdir, "runs", "l2tl", f"seed{s}") for s in range(SEEDS)]
  weights = summary["class_weights"]["l2tl"]["expected_class_weights"]["mean"]
  assert list(weights) == runs[0]["src_class_names"]
  for name, w in weights.items():
    np.testing.assert_allclose(w, np.mean(
        [r["policy"]["expected_class_weights"][name] for r in runs]))
  # The recommended estimator learns class weights only: alpha is fixed.
  assert all(r["policy"]["expected_alpha"] is None for r in runs)
  assert "expected_alpha" not in summary["class_weights"]["l2tl"]


@pytest.mark.slow
def test_markdown_and_protocol(comparison):
  config, workdir, summary = comparison
  with open(os.path.join(workdir, "summary.md")) as f:
    text = f.read()
  assert "| method | test acc mean ± std | per-seed | val acc |" in text
  assert "| finetune (val-selected) |" in text
  assert "| l2tl (val-selected) |" in text
  assert "## Protocol" in text
  assert "Nothing is selected on the test split" in text
  assert "tgt_train: 50 examples" in text  # 10 per class x 5 classes.
  # Per target class: one row per class, one column per method.
  per_class = summary["per_class"]
  assert per_class["classes"] == list(
      _results(workdir, "runs", "finetune", "seed0")["tgt_class_names"])
  assert "## Per target class" in text
  for name in per_class["classes"]:
    assert any(line.startswith(f"| {name} | ") for line in text.splitlines())
  p = summary["protocol"]
  assert p["train"]["steps"] == 6
  assert p["train"]["batch_size"] == config.train.batch_size
  assert p["splits"]["tgt_train"]["per_class"] == [10] * 5
  assert p["seeds"] == [0, 1]
  assert set(p["sees"]) == set(summary["methods"])
  assert "target train only" in p["sees"]["finetune"]


@pytest.mark.slow
def test_sweep(comparison):
  _, workdir, summary = comparison
  sweep = _read_json(os.path.join(workdir, "sweep.json"))
  assert sweep["target_per_class"] == list(SIZES)
  assert sweep["std_kind"] == "one seed: std reported as 0"
  assert set(sweep["methods"]) >= set(METHODS)
  for method in METHODS:
    points = sweep["methods"][method]
    assert [p["target_per_class"] for p in points] == list(SIZES)
    for p in points:
      r = _results(workdir, "sweep", f"n{p['target_per_class']}", method,
                   "seed0")
      assert r["task"]["splits"]["tgt_train"]["per_class"] == (
          [p["target_per_class"]] * 5)
      assert p["per_seed"] == [r["test_accuracy"]]
      assert p["mean"] == r["test_accuracy"] and p["std"] == 0.0
  assert summary["sweep"]["methods"] == sweep["methods"]
  with open(os.path.join(workdir, "sweep.md")) as f:
    assert "| method | n=3 | n=6 |" in f.read()


@pytest.mark.slow
def test_rerun_reuses_completed_runs(comparison, monkeypatch):
  config, workdir, summary = comparison
  calls = []
  original = train.train_and_evaluate

  def spy(run_config, run_dir):
    calls.append(run_dir)
    assert os.path.exists(os.path.join(run_dir, "results.json"))
    return original(run_config, run_dir)

  monkeypatch.setattr(train, "train_and_evaluate", spy)
  again = compare.run_comparison(config, workdir, seeds=SEEDS, methods=METHODS)
  assert len(calls) == SEEDS * len(METHODS)
  assert again["methods"] == summary["methods"]


def _fake_results(method, seed):
  return {"status": "completed", "method": method, "seed": seed,
          "test_accuracy": 0.5, "val_accuracy": 0.5,
          "val_selected": {"step": 1, "val_accuracy": 0.5,
                           "test_accuracy": 0.5}}


def test_a_failing_run_writes_no_summary(tmp_path, monkeypatch, capsys):
  def fake(config, run_dir):
    if config.method == "l2tl" and config.seed == 1:
      raise FloatingPointError("boom")
    return _fake_results(config.method, config.seed)

  monkeypatch.setattr(train, "train_and_evaluate", fake)
  workdir = str(tmp_path / "cmp")
  with pytest.raises(runner.RunFailedError) as info:
    compare.run_comparison(tiny.get_config(), workdir, seeds=2,
                           methods=METHODS)
  bad = os.path.join(workdir, "runs", "l2tl", "seed1")
  assert list(info.value.failures) == [bad]
  assert bad in str(info.value) and "boom" in str(info.value)
  assert bad in capsys.readouterr().err
  assert not os.path.exists(workdir) or not [
      n for n in os.listdir(workdir) if not os.path.isdir(
          os.path.join(workdir, n))]


def test_an_interrupted_run_stops_the_comparison(tmp_path, monkeypatch):
  calls = []

  def fake(config, run_dir):
    calls.append(run_dir)
    return {"status": "interrupted", "signal": 15, "step": 3,
            "checkpoint": run_dir}

  monkeypatch.setattr(train, "train_and_evaluate", fake)
  with pytest.raises(runner.RunInterruptedError, match="Rerun"):
    compare.run_comparison(tiny.get_config(), str(tmp_path), seeds=2,
                           methods=METHODS)
  assert len(calls) == 1


def test_arguments_are_checked():
  config = tiny.get_config()
  with pytest.raises(ValueError, match="Unknown"):
    compare.check_arguments(config, seeds=1, methods=["nope"])
  with pytest.raises(ValueError, match="seeds"):
    compare.check_arguments(config, seeds=0, methods=["l2tl"])
  with pytest.raises(ValueError, match="Target sizes"):
    compare.check_arguments(config, seeds=1, methods=["l2tl"],
                            target_per_class=[0])
  config.l2tl.mode = "bogus"
  with pytest.raises(ValueError, match="config.l2tl.mode must be one of "
                     "reference, meta_gradient, recommended, got 'bogus'"):
    compare.check_arguments(config, seeds=1, methods=["l2tl"])


def test_configs_no_run_can_use_are_refused_before_the_first_run(
    tmp_path, monkeypatch):
  def fake(config, run_dir):
    raise AssertionError(f"{run_dir} started")

  monkeypatch.setattr(train, "train_and_evaluate", fake)
  config = tiny.get_config()
  config.train.steps = 0
  with pytest.raises(validation.ConfigError, match="config.train.steps"):
    compare.run_comparison(config, str(tmp_path / "cmp"), seeds=1,
                           methods=METHODS)
  config.train.steps = 6
  config.l2tl.val_batch_size = 0
  with pytest.raises(validation.ConfigError, match="val_batch_size"):
    compare.run_target_size_sweep(config, str(tmp_path / "cmp"), seeds=1,
                                  target_per_class=[3])
  assert not os.path.exists(tmp_path / "cmp")
