"""How a learned source-class ranking agrees with DATL's estimate.

DATL's class weights (P_t(c) / P_s(c) from the pre-trained source
classifier's predictions on the target train images) rank the source
classes by how target-like their images look. On the benchmarks where the
alignment estimators ranked the irrelevant classes first (label mismatch:
no target class in the source), their ranking was anti-correlated with
DATL's on every seed; where they ranked right it was positively correlated
(README, "Where selection pays"). `agreement` measures it for one run.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import scipy.stats

# Below this Spearman correlation a ranking disagrees with DATL's: on the
# two label-mismatch benchmarks, where the alignment estimators rank the
# irrelevant classes first, it was -0.67 to -0.04 on every seed; on the six
# where they rank right, 0.39 to 0.96.
DISAGREEMENT = 0.0
# Learned weights whose (max - min) / mean is below this have not moved
# apart (the reference REINFORCE's: 0.02-0.08 on every benchmark): their
# ranking is noise, not a selection, and never disagrees.
SELECTS = 0.1


def agreement(learned: Mapping[str, float],
              estimate: Mapping[str, float]) -> dict[str, Any]:
  """Spearman rank correlation of learned class weights with DATL's.

  Args:
    learned: source class -> learned weight.
    estimate: source class -> DATL's weight (the same classes; its order is
      the one compared).

  Returns:
    {'rank_corr_with_datl': float | None (None: a constant ranking),
     'weight_spread': (max - min) / mean of the learned weights,
     'disagrees': correlation below DISAGREEMENT with a spread of at least
     SELECTS}.

  Raises:
    ValueError: the two weight other classes.
  """
  if set(learned) != set(estimate):
    raise ValueError("The learned weights and DATL's estimate weight other "
                     f"source classes: {sorted(set(learned) ^ set(estimate))}.")
  names = list(estimate)
  a = np.asarray([learned[n] for n in names], np.float64)
  b = np.asarray([estimate[n] for n in names], np.float64)
  spread = float(np.ptp(a) / a.mean()) if a.mean() > 0 else 0.0
  out = {"rank_corr_with_datl": None, "weight_spread": round(spread, 4),
         "disagrees": False}
  if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
    return out
  rho = float(scipy.stats.spearmanr(a, b).statistic)
  out["rank_corr_with_datl"] = round(rho, 4)
  out["disagrees"] = rho < DISAGREEMENT and spread >= SELECTS
  return out


def of_results(results: Mapping[str, Any],
               estimate: Mapping[str, float] | None = None
               ) -> dict[str, Any] | None:
  """`agreement` for a run's results.json.

  Args:
    results: a run's results (its 'policy' 'expected_class_weights' are the
      learned weights; its 'datl_estimate' the estimate).
    estimate: the estimate to use when the run has none of its own (a DATL
      run's weights of the same seed).

  Returns:
    The agreement, or None when the run learned no class weights, there is
    no estimate, or the two weight other classes.
  """
  learned = (results.get("policy") or {}).get("expected_class_weights")
  estimate = results.get("datl_estimate") or estimate
  if not learned or not estimate or set(learned) != set(estimate):
    return None
  return agreement(learned, estimate)
