"""train.selection_check: the learned class ranking against DATL's estimate."""

from absl.testing import absltest

from l2tl_jax import agreement
from l2tl_jax import train


def _results(learned, estimate):
  return {"policy": {"expected_class_weights": learned},
          "datl_estimate": estimate}


class SelectionCheckTest(absltest.TestCase):

  def test_a_reversed_ranking_that_selects_disagrees_and_warns(self):
    # Ranks 3, 2, 1 against 1, 2, 3: Spearman -1. Spread (2 - 0.5) / (3.5 /
    # 3) = 1.2857.
    results = _results({"a": 2.0, "b": 1.0, "c": 0.5},
                       {"a": 0.1, "b": 0.5, "c": 1.0})
    with self.assertLogs(level="WARNING") as logs:
      check = train.selection_check(results)
    self.assertEqual(check, {"rank_corr_with_datl": -1.0,
                             "weight_spread": 1.2857, "disagrees": True})
    self.assertIn("Spearman -1.00", logs.output[0])
    self.assertIn("--config.method=datl", logs.output[0])

  def test_an_agreeing_ranking_is_quiet(self):
    # Ranks (3, 1, 2, 4) and (2, 1, 3, 4): d^2 = 1 + 0 + 1 + 0 = 2,
    # rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    results = _results({"a": 1.5, "b": 0.2, "c": 1.0, "d": 2.0},
                       {"a": 0.5, "b": 0.1, "c": 0.7, "d": 1.0})
    with self.assertNoLogs(level="WARNING"):
      check = train.selection_check(results)
    self.assertAlmostEqual(check["rank_corr_with_datl"], 0.8)
    self.assertFalse(check["disagrees"])
    # The estimate's order of names is the one compared, not the learned
    # dict's.
    reordered = _results(dict(reversed(list(results["policy"][
        "expected_class_weights"].items()))), results["datl_estimate"])
    self.assertEqual(train.selection_check(reordered), check)

  def test_weights_that_did_not_move_apart_select_nothing(self):
    # Reversed ranking, but (0.51 - 0.49) / 0.5 = 0.04 < SELECTS.
    results = _results({"a": 0.51, "b": 0.50, "c": 0.49},
                       {"a": 0.1, "b": 0.5, "c": 1.0})
    with self.assertNoLogs(level="WARNING"):
      check = train.selection_check(results)
    self.assertEqual(check, {"rank_corr_with_datl": -1.0,
                             "weight_spread": 0.04, "disagrees": False})

  def test_constant_weights_and_missing_parts(self):
    self.assertEqual(
        train.selection_check(_results({"a": 1.0, "b": 1.0},
                                       {"a": 0.2, "b": 1.0})),
        {"rank_corr_with_datl": None, "weight_spread": 0.0,
         "disagrees": False})
    self.assertIsNone(train.selection_check(
        {"policy": {"expected_class_weights": {"a": 1.0, "b": 2.0}}}))
    self.assertIsNone(train.selection_check(
        {"datl_estimate": {"a": 1.0, "b": 2.0}}))
    self.assertIsNone(train.selection_check({}))


class AgreementTest(absltest.TestCase):

  def test_other_classes_are_refused_and_one_class_has_no_ranking(self):
    with self.assertRaisesRegex(ValueError, r"other source classes: \['c'\]"):
      agreement.agreement({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0,
                                                  "c": 3.0})
    self.assertEqual(agreement.agreement({"a": 2.0}, {"a": 1.0}), {
        "rank_corr_with_datl": None, "weight_spread": 0.0,
        "disagrees": False})

  def test_of_results_prefers_the_runs_own_estimate(self):
    learned = {"a": 2.0, "b": 1.0, "c": 0.5}
    own = {"a": 0.1, "b": 0.5, "c": 1.0}  # Reversed: Spearman -1.
    other = {"a": 1.0, "b": 0.5, "c": 0.1}  # Same order: Spearman 1.
    both = _results(learned, own)
    self.assertEqual(agreement.of_results(both, other)["rank_corr_with_datl"],
                     -1.0)
    only_learned = {"policy": {"expected_class_weights": learned}}
    self.assertEqual(
        agreement.of_results(only_learned, other)["rank_corr_with_datl"], 1.0)
    self.assertIsNone(agreement.of_results(only_learned))
    # A fallback over other classes (another task's DATL row) is not used.
    self.assertIsNone(agreement.of_results(only_learned, {"a": 1.0, "b": 2.0}))
    self.assertIsNone(agreement.of_results({"datl_estimate": own}, other))


if __name__ == "__main__":
  absltest.main()
