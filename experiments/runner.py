"""Running a plan of runs: each (config, run_dir) trained or read back.

Completed runs are read back (train_and_evaluate returns their results), so a
plan interrupted or partly failed resumes by running it again. Used by
experiments.compare and experiments.study.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import ml_collections

from l2tl_jax import train


class RunFailedError(RuntimeError):
  """Some runs raised; `failures` maps their run dirs to the errors."""

  def __init__(self, failures: dict[str, BaseException]):
    self.failures = failures
    lines = [f"  {d}: {type(e).__name__}: {e}" for d, e in failures.items()]
    super().__init__(
        f"{len(failures)} run(s) failed; no summary was written. Fix the "
        "cause and rerun the same command (completed runs are reused; a "
        "failed run that wrote no checkpoint starts afresh). A run that "
        "diverged continues with a changed field only on purpose: "
        "experiments.main --workdir=<its run dir> --accept_changes=FIELD, or "
        "use a new --workdir. Details are in <workdir>/l2tl.log:\n"
        + "\n".join(lines))


class RunInterruptedError(RuntimeError):
  """A run stopped on SIGTERM / SIGINT after saving a checkpoint."""

  def __init__(self, run_dir: str, results: dict[str, Any]):
    self.run_dir = run_dir
    self.signal = results.get("signal")
    super().__init__(
        f"Run {run_dir} was interrupted by signal {self.signal} at step "
        f"{results.get('step')} (checkpoint saved); no summary was written. "
        "Rerun the same command to resume.")


def pretrain_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The pre-training cache of a plan: config.pretrain_cache_dir when set
  (shared with other plans), else <workdir>/pretrain."""
  return os.path.abspath(config.get("pretrain_cache_dir")
                         or os.path.join(workdir, "pretrain"))


def run_config(
    config: ml_collections.ConfigDict,
    *,
    method: str,
    seed: int,
    pretrain_dir: str,
    target_per_class: int | None = None,
) -> ml_collections.ConfigDict:
  """A copy of `config` for one run.

  Args:
    config: the base config.
    method: config.method of the run.
    seed: config.seed of the run.
    pretrain_dir: the pre-training cache shared by every run.
    target_per_class: if set, config.data.target_train_per_class.

  Returns:
    The run's config.
  """
  out = config.copy_and_resolve_references()
  out.method = method
  out.seed = seed
  out.pretrain_cache_dir = os.path.abspath(pretrain_dir)
  if target_per_class is not None:
    out.data.target_train_per_class = int(target_per_class)
  return out


def run_all(runs: Sequence[tuple[ml_collections.ConfigDict, str]]
             ) -> dict[str, dict[str, Any]]:
  """Trains (or reads back) every (config, run_dir); raises on failures."""
  results, failures = {}, {}
  for i, (config, run_dir) in enumerate(runs, 1):
    print(f"[{i}/{len(runs)}] {config.method} seed {config.seed}: {run_dir}",
          flush=True)
    try:
      out = train.train_and_evaluate(config, run_dir)
    except Exception as e:  # pylint: disable=broad-except
      print(f"error: run {run_dir} failed: {type(e).__name__}: {e}",
            file=sys.stderr, flush=True)
      failures[run_dir] = e
      continue
    if out.get("status") == "interrupted":
      raise RunInterruptedError(run_dir, out)
    results[run_dir] = out
  if failures:
    raise RunFailedError(failures)
  return results
