"""End-to-end runs of every method on the tiny config, resume, and faults."""

import json
import os
import signal
import subprocess
import sys
import time

from absl.testing import absltest
import numpy as np
import pytest

from experiments.configs import tiny
from l2tl_jax import methods
from l2tl_jax import spec as spec_lib
from l2tl_jax import train
from l2tl_jax import workdir as workdir_lib

# Every test here trains end to end (ResumeTest also in subprocesses).
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TMP = None


def _tmp():
  global _TMP
  if _TMP is None:
    import tempfile
    _TMP = tempfile.mkdtemp(prefix="l2tl_train_test_")
  return _TMP


def _config(method="l2tl", **overrides):
  config = tiny.get_config()
  config.method = method
  config.data.data_dir = os.path.join(_tmp(), "tfds")
  config.pretrain_cache_dir = os.path.join(_tmp(), "pretrain")
  config.write_plots = False
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(l) for l in f if l.strip()]


def _without_timing(records):
  return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in records]


class MethodsTest(absltest.TestCase):

  def test_every_method_runs_and_shares_one_pretraining(self):
    # joint_fixed: an oracle-style weighting, digits 0-4 in, 5-9 out.
    oracle = {"l2tl.fixed_class_weights": (1.0,) * 5 + (0.0,) * 5}
    every = {}
    for method in methods.METHODS:
      workdir = os.path.join(_tmp(), "methods", method)
      results = every[method] = train.train_and_evaluate(
          _config(method, **(oracle if method == "joint_fixed" else {})),
          workdir)
      self.assertEqual(results["status"], "completed")
      self.assertEqual(results["method"], method)
      self.assertEqual(results["steps"], 40)
      self.assertEqual(results["test_examples"], 605)
      self.assertBetween(results["test_accuracy"], 0.0, 1.0)
      self.assertIn("val_selected", results)
      self.assertIn(results["val_selected"]["step"], (10, 20, 30, 40))
      # Per-class results add up to the accuracy (target: 5 classes).
      confusion = np.array(results["test_confusion"])
      self.assertEqual(confusion.shape, (5, 5))
      self.assertEqual(confusion.sum(), 605)
      self.assertAlmostEqual(np.trace(confusion) / 605,
                             results["test_accuracy"], 9)
      self.assertEqual(list(results["test_per_class_accuracy"]),
                       results["tgt_class_names"])
      sel = np.array(results["val_selected"]["test_confusion"])
      self.assertAlmostEqual(np.trace(sel) / 605,
                             results["val_selected"]["test_accuracy"], 9)
      with open(os.path.join(workdir, "results.json")) as f:
        self.assertEqual(json.load(f)["test_accuracy"], results["test_accuracy"])
      records = _read_jsonl(os.path.join(workdir, "metrics.jsonl"))
      self.assertEqual([r["step"] for r in records if "train/tgt_loss" in r],
                       [5, 10, 15, 20, 25, 30, 35, 40])
      self.assertLen([r for r in records if "eval/val_accuracy" in r], 4)
      if method == "scratch":
        self.assertNotIn("pretrain", results)
      else:
        self.assertEqual(results["pretrain"]["steps"], 30)
      if method == "l2tl":
        weights = results["policy"]["expected_class_weights"]
        self.assertEqual(list(weights), [str(d) for d in range(10)])
        self.assertIn("policy/expected_class_weights", records[0])
        self.assertLen(records[0]["policy/expected_class_weights"], 10)
      if method == "datl":
        self.assertLen(results["datl_class_weights"], 10)
        self.assertAlmostEqual(max(results["datl_class_weights"].values()), 1.0)
    # The learned-weight methods record DATL's estimate from the same
    # pre-trained source head (DATL's own weights: same seed and cache) and
    # their ranking's agreement with it; the others do not.
    datl = every["datl"]["datl_class_weights"]
    for method in ("l2tl", "l2tl_fixed_alpha"):
      estimate = every[method]["datl_estimate"]
      self.assertEqual(list(estimate), list(datl))
      np.testing.assert_allclose(list(estimate.values()),
                                 list(datl.values()), atol=1e-6)
      # 40 steps, inside the estimator's 100-step warm-up: weights all 1.
      self.assertEqual(every[method]["selection_check"], {
          "rank_corr_with_datl": None, "weight_spread": 0.0,
          "disagrees": False})
    for method in ("scratch", "finetune", "joint_uniform", "datl",
                   "joint_fixed"):
      self.assertNotIn("datl_estimate", every[method])
      self.assertNotIn("selection_check", every[method])
    # One source pre-training served every method.
    entries = [e for e in os.listdir(os.path.join(_tmp(), "pretrain"))
               if not e.startswith(".")]
    self.assertLen(entries, 1)

  def test_recommended_l2tl_without_signal_is_joint_uniform_exactly(self):
    # The recommended estimator before its warm-up ends is uniform joint
    # training's step: the same run to the last digit. After the warm-up the
    # learned class weights (mean 1) move it.
    uniform = train.train_and_evaluate(
        _config("joint_uniform", **{"l2tl.mode": "reference"}),
        os.path.join(_tmp(), "nosignal", "joint_uniform"))
    warm = train.train_and_evaluate(
        _config("l2tl", **{"l2tl.warmup_steps": 40}),
        os.path.join(_tmp(), "nosignal", "l2tl"))
    for key in ("test_accuracy", "val_accuracy", "test_loss"):
      self.assertEqual(warm[key], uniform[key], key)
    self.assertEqual(set(warm["policy"]["expected_class_weights"].values()),
                     {1.0})
    learned = train.train_and_evaluate(
        _config("l2tl", **{"l2tl.warmup_steps": 10}),
        os.path.join(_tmp(), "nosignal", "l2tl_learned"))
    weights = list(learned["policy"]["expected_class_weights"].values())
    self.assertAlmostEqual(np.mean(weights), 1.0, places=5)
    self.assertGreater(np.ptp(weights), 0.01)
    # Weights that moved are ranked against DATL's estimate.
    check = learned["selection_check"]
    self.assertEqual(check, train.selection_check(learned))
    self.assertBetween(check["rank_corr_with_datl"], -1.0, 1.0)
    self.assertAlmostEqual(check["weight_spread"],
                           np.ptp(weights) / np.mean(weights), places=3)

  def test_l2tl_starts_from_the_pretrained_source_head(self):
    workdir = os.path.join(_tmp(), "srchead")
    results = train.train_and_evaluate(_config("l2tl", **{"train.steps": 1}),
                                       workdir)
    # After one step the source loss is that of the pre-trained head on the
    # source batch, far below the log(10) of a fresh head.
    records = _read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    self.assertEqual(results["steps"], 1)
    self.assertLess(records[0]["train/src_loss"], np.log(10) - 0.005)


class WorkdirTest(absltest.TestCase):

  def test_rerun_returns_results_and_other_config_is_refused(self):
    workdir = os.path.join(_tmp(), "mismatch")
    first = train.train_and_evaluate(_config("finetune"), workdir)
    # Host-only fields may change; the finished run is returned as it is.
    again = train.train_and_evaluate(
        _config("finetune", log_every_steps=7), workdir)
    self.assertEqual(first["test_accuracy"], again["test_accuracy"])
    with self.assertRaisesRegex(train.ConfigMismatchError,
                                r"train.lr: 0.02 -> 0.1.*new --workdir"):
      train.train_and_evaluate(_config("finetune", **{"train.lr": 0.1}), workdir)

  def test_nonfinite_loss_stops_with_a_clear_error(self):
    workdir = os.path.join(_tmp(), "nonfinite")
    with self.assertRaisesRegex(
        train.NonFiniteError,
        r"Non-finite loss or gradient at step 2[6-9] of finetune.*"
        r"Last good checkpoint: step 20 in .*checkpoints"):
      # A sane rate until step 25, then one that overflows.
      train.train_and_evaluate(
          _config("finetune", **{"train.lr_boundaries": (25,),
                                 "train.lr_scales": (1e30,)}), workdir)
    self.assertFalse(os.path.exists(os.path.join(workdir, "results.json")))

  def test_without_periodic_evaluation_the_final_params_are_selected(self):
    results = train.train_and_evaluate(
        _config("scratch", **{"eval.every_steps": 0}),
        os.path.join(_tmp(), "noeval"))
    self.assertEqual(results["val_selected"],
                     {"step": 40, "val_accuracy": results["val_accuracy"],
                      "test_accuracy": results["test_accuracy"],
                      "test_per_class_accuracy":
                          results["test_per_class_accuracy"],
                      "test_confusion": results["test_confusion"]})

  def test_bad_method(self):
    with self.assertRaisesRegex(ValueError, "config.method must be one of"):
      train.train_and_evaluate(_config("magic"), os.path.join(_tmp(), "bad"))


class ResumeTest(absltest.TestCase):
  """Interrupted runs resume to bit-identical final metrics."""

  STEPS = 300

  def _overrides(self):
    return {"train.steps": self.STEPS, "checkpoint_every_steps": 40,
            "eval.every_steps": 60, "log_every_steps": 10}

  def _launch(self, workdir):
    args = [sys.executable, "-m", "experiments.main",
            "--config=experiments/configs/tiny.py", f"--workdir={workdir}",
            "--config.method=l2tl",
            f"--config.data.data_dir={os.path.join(_tmp(), 'tfds')}",
            f"--config.pretrain_cache_dir={os.path.join(_tmp(), 'pretrain')}",
            "--config.write_plots=False"]
    args += [f"--config.{k}={v}" for k, v in self._overrides().items()]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

  def _wait_for_step(self, proc, workdir, step, timeout=120):
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
      if os.path.exists(path):
        steps = [r["step"] for r in _read_jsonl(path)]
        if steps and max(steps) >= step:
          return
      if proc.poll() is not None:
        self.fail(f"run ended before step {step}: {proc.stdout.read()}")
      time.sleep(0.02)
    self.fail(f"no step {step} within {timeout}s")

  def test_kill_and_sigterm_then_resume_is_bit_identical(self):
    reference_dir = os.path.join(_tmp(), "resume_reference")
    reference = train.train_and_evaluate(
        _config("l2tl", **self._overrides()), reference_dir)

    workdir = os.path.join(_tmp(), "resume_interrupted")
    # 1. SIGTERM: a checkpoint at the current step, a clean exit.
    proc = self._launch(workdir)
    self._wait_for_step(proc, workdir, 50)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    self.assertEqual(proc.returncode, 128 + signal.SIGTERM, out)
    self.assertIn("Rerun the same command to resume", out)
    self.assertFalse(os.path.exists(os.path.join(workdir, "results.json")))
    saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                   if d.isdigit())
    self.assertGreaterEqual(saved[-1], 50)

    # 2. SIGKILL at an arbitrary later step: only periodic checkpoints remain.
    proc = self._launch(workdir)
    self._wait_for_step(proc, workdir, saved[-1] + 70)
    proc.kill()
    proc.wait(timeout=60)
    self.assertFalse(os.path.exists(os.path.join(workdir, "results.json")))

    # 3. Resume to the end.
    resumed = train.train_and_evaluate(
        _config("l2tl", **self._overrides()), workdir)
    for key in ("test_accuracy", "test_loss", "val_accuracy", "val_selected",
                "policy", "steps"):
      self.assertEqual(resumed[key], reference[key], key)
    self.assertEqual(
        _without_timing(_read_jsonl(os.path.join(workdir, "metrics.jsonl"))),
        _without_timing(_read_jsonl(os.path.join(reference_dir, "metrics.jsonl"))))

  def test_partial_checkpoint_is_ignored(self):
    workdir = os.path.join(_tmp(), "partial")
    config = _config("finetune")
    reference = train.train_and_evaluate(config, os.path.join(_tmp(), "partial_ref"))
    # A run that stopped at step 20, then a save of step 30 that crashed
    # half-way (orbax's temporary directory, never committed).
    train.train_and_evaluate(_config("finetune", **{"train.steps": 20}),
                             os.path.join(_tmp(), "partial_src"))
    os.makedirs(os.path.join(workdir, "checkpoints"))
    os.rename(os.path.join(_tmp(), "partial_src", "checkpoints", "20"),
              os.path.join(workdir, "checkpoints", "20"))
    partial = os.path.join(workdir, "checkpoints",
                           "30.orbax-checkpoint-tmp-1700000000000000")
    os.makedirs(os.path.join(partial, "state"))
    with open(os.path.join(partial, "state", "garbage"), "w") as f:
      f.write("half-written")
    resumed = train.train_and_evaluate(config, workdir)
    self.assertEqual(resumed["test_accuracy"], reference["test_accuracy"])
    self.assertEqual(resumed["val_selected"], reference["val_selected"])


if __name__ == "__main__":
  absltest.main()


def test_reader_threads_may_change_on_resume(tmp_path):
  from experiments.configs import tiny
  config = tiny.get_config()
  saved = lambda: spec_lib.from_config(config).config
  workdir_lib.save_config(saved(), str(tmp_path), {})
  config.data.read_threads = 4
  assert train.config_changes(saved(), str(tmp_path)) == {}
  config.data.image_size = 16  # A data field that is not host-only.
  assert list(train.config_changes(saved(), str(tmp_path))) == [
      "data.image_size"]


def test_a_field_the_saved_run_predates_is_unchanged_at_its_default(tmp_path):
  import json
  from experiments.configs import tiny
  config = tiny.get_config()
  current = lambda: spec_lib.from_config(config).config
  workdir_lib.save_config(current(), str(tmp_path), {})
  path = tmp_path / "config.json"
  saved = json.loads(path.read_text())
  del saved["l2tl"]["src_selection"]  # As written before the field existed.
  del saved["data"]["source_corrupt_to"]
  path.write_text(json.dumps(saved))
  assert train.config_changes(current(), str(tmp_path)) == {}
  config.l2tl.src_selection = "first"  # Not the behaviour the run had.
  assert train.config_changes(current(), str(tmp_path)) == {
      "l2tl.src_selection": ("<unset>", "first")}


def test_policy_fields_are_no_change_for_methods_without_a_policy(tmp_path):
  # A finished baseline stays readable when the default mode changes what
  # only a learned policy reads; a field its step reads is still a change.
  from experiments.configs import tiny
  for method, unread, read in (
      ("joint_uniform", "estimator", "src_normalization"),
      ("finetune", "src_normalization", None),
      ("l2tl", None, "estimator")):
    workdir = tmp_path / method
    workdir.mkdir()
    config = train.resolve_config(tiny.get_config())
    config.method = method
    saved = lambda: spec_lib.from_config(config).config
    workdir_lib.save_config(saved(), str(workdir), {})
    if unread:
      config.l2tl[unread] = "reinforce" if unread == "estimator" else "mean"
      config.l2tl.policy_lr = 0.5
      assert train.config_changes(saved(), str(workdir)) == {}, method
    if read:
      config.l2tl[read] = ("reinforce" if read == "estimator" else
                           "reference")
      assert list(train.config_changes(saved(), str(workdir))) == [
          f"l2tl.{read}"], method
