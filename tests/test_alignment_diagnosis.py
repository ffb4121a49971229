"""Per-class alignment statistics from hand-made per-example scores."""

import numpy as np

from experiments import alignment_diagnosis


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
