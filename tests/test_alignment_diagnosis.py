"""Per-class alignment statistics from hand-made per-example scores."""

import chex
import numpy as np
import pytest

from experiments import alignment_diagnosis
from experiments.configs import tiny
from l2tl_jax import data
from l2tl_jax import saved_run
from l2tl_jax import train


def test_per_class_table_hand_computed():
  # Class 0: scores 2, -1 (norms 2, 1); class 1: scores 1, 1 (norms 1, 4);
  # class 2 absent. |g| = 2.
  dots = np.array([2.0, -1.0, 1.0, 1.0])
  norms = np.array([2.0, 1.0, 1.0, 4.0])
  labels = np.array([0, 0, 1, 1])
  t = alignment_diagnosis.per_class_table(dots, norms, 2.0, labels, 3)
  np.testing.assert_allclose(t["score"], [0.5, 1.0, 0.0])
  np.testing.assert_allclose(t["pos"], [0.5, 1.0, 0.0])
  np.testing.assert_allclose(t["norm"], [1.5, 2.5, 0.0])
  # cos = s / (|grad| |g|): class 0 (0.5, -0.5), class 1 (0.5, 0.125).
  np.testing.assert_allclose(t["cosine"], [0.0, 0.3125, 0.0])
  # Positive mass per example: class 0 2/2 = 1, class 1 2/2 = 1 -> mean 1.
  np.testing.assert_allclose(t["weight"], [1.0, 1.0, 0.0])
  t = alignment_diagnosis.per_class_table(
      np.array([3.0, 1.0]), np.ones(2), 1.0, np.array([0, 1]), 2)
  np.testing.assert_allclose(t["weight"], [1.5, 0.5])


@pytest.mark.slow
def test_a_finished_runs_last_checkpoint_is_diagnosed(tmp_path):
  """--run_dir: the statistics of the run's final encoder and heads, beside
  its learned weights; a run of another seed is refused."""
  config = tiny.get_config()
  config.method = "l2tl"
  config.data.data_dir = str(tmp_path / "tfds")
  config.pretrain_cache_dir = str(tmp_path / "pretrain")
  config.write_plots = False
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)

  step, params, _ = alignment_diagnosis.final_variables(workdir, 0)
  assert step == config.train.steps
  final = saved_run.load_run(workdir, params="final")
  chex.assert_trees_all_equal(params["encoder"],
                              final.variables["params"]["encoder"])
  with pytest.raises(saved_run.RunError, match="--config.seed=0"):
    alignment_diagnosis.final_variables(workdir, 1)
  with pytest.raises(saved_run.RunError, match="no readable config.json"):
    alignment_diagnosis.final_variables(str(tmp_path), 0)

  pretrain_dir = config.pretrain_cache_dir
  names, start = alignment_diagnosis.diagnose(config, pretrain_dir, 2, 250)
  names_end, end = alignment_diagnosis.diagnose(config, pretrain_dir, 2, 250,
                                                run_dir=workdir)
  assert names_end == names == results["src_class_names"]
  for key in ("score", "norm", "cosine", "weight"):
    assert np.all(np.isfinite(end[key])), key
  # 40 target steps moved the encoder: other gradients than at the start.
  assert not np.allclose(end["norm"], start["norm"])
  # Draws of the whole validation split are the whole split's gradient.
  n_val = results["task"]["splits"]["tgt_val"]["size"]
  _, whole = alignment_diagnosis.diagnose(config, pretrain_dir, 2, 250,
                                          run_dir=workdir, val_batch=n_val,
                                          draws=2)
  np.testing.assert_allclose(whole["weight_b"], end["weight"], rtol=1e-4,
                             atol=1e-6)
  _, small = alignment_diagnosis.diagnose(config, pretrain_dir, 2, 250,
                                          run_dir=workdir, val_batch=4,
                                          draws=3)
  assert small["weight_b"].shape == end["weight"].shape
  assert not np.allclose(small["weight_b"], end["weight"])
  present = end["norm"] > 0
  np.testing.assert_allclose(small["weight_step"][present].mean(), 1.0,
                             rtol=1e-6)
  with pytest.raises(data.DataError, match="larger than the validation split"):
    alignment_diagnosis.diagnose(config, pretrain_dir, 2, 250,
                                 val_batch=n_val + 1, draws=1)
  learned = alignment_diagnosis._learned_weights(workdir, names)  # pylint: disable=protected-access
  expected = results["policy"]["expected_class_weights"]
  np.testing.assert_array_equal(learned, [expected[n] for n in names])


def test_step_weights_normalise_per_step_by_hand():
  # Two examples, classes 0 and 1, a batch of both every step: scores 3 and
  # 1 -> w = 3 / 2 = 1.5 and 1 / 2 = 0.5; a second draw with scores -1, 2 ->
  # w = 0, 2. Per class: (1.5 + 0) / 2 = 0.75 and (0.5 + 2) / 2 = 1.25, mean 1.
  dots = np.array([[3.0, -1.0], [1.0, 2.0]])
  w = alignment_diagnosis.step_weights(dots, np.array([0, 1]), 2, 2,
                                       steps_per_draw=3)
  np.testing.assert_allclose(w, [0.75, 1.25])
  # No positive score in a step: weights 0 for that step, counts still kept.
  w = alignment_diagnosis.step_weights(np.array([[-1.0], [-2.0]]),
                                       np.array([0, 1]), 3, 2,
                                       steps_per_draw=1)
  np.testing.assert_allclose(w, [0.0, 0.0, 0.0])
