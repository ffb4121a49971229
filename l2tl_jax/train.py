"""`train_and_evaluate(config, workdir)`: one run of one method, end to end.

Methods (config.method) are the entries of `l2tl_jax.methods.METHODS`:
scratch, finetune, joint_uniform, datl (fixed class weights P_t(c) / P_s(c)
from the pre-trained source classifier, Ngiam et al. 2018), l2tl_fixed_alpha
and l2tl. Their objects are built by `l2tl_jax.build`; loaded weights enter
through `l2tl_jax.loading`.

Every method also records a validation-selected result: the target params
with the best full-validation accuracy (evaluated every
config.eval.every_steps) and their test accuracy.

Files in workdir: config.json, checkpoints/, metrics.jsonl (one object per
log step, plus 'eval/...' objects at evaluation steps), tensorboard/,
results.json (written last, atomically) and plots/.

The run's pieces live beside this module: `l2tl_jax.run` (the objects of
one run), `l2tl_jax.loop` (the host loop), `l2tl_jax.workdir` (the saved
config, changes, finished runs, the lock).

A run of several processes (`l2tl_jax.distributed`, 'mesh' parallelism) gives
the single-process results: each process reads its rows of every batch, all
of them save and restore the checkpoints, and process 0 alone writes the
other files.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from absl import logging
import ml_collections
import numpy as np

from l2tl_jax import agreement
from l2tl_jax import atomic
from l2tl_jax import data
from l2tl_jax import distributed
from l2tl_jax import loop as loop_lib
from l2tl_jax import models
from l2tl_jax import parallel
from l2tl_jax import run as run_lib
from l2tl_jax import spec as spec_lib
from l2tl_jax import steps
from l2tl_jax import validation
from l2tl_jax import weights
from l2tl_jax import workdir as workdir_lib

# Importable from here, as before the split.
ConfigMismatchError = workdir_lib.ConfigMismatchError
NonFiniteError = loop_lib.NonFiniteError
HOST_ONLY_FIELDS = workdir_lib.HOST_ONLY_FIELDS
POLICY_ONLY_FIELDS = workdir_lib.POLICY_ONLY_FIELDS
config_changes = workdir_lib.config_changes


# The modes and their resolution live with the RunSpec; importable from here.
L2TL_MODES = spec_lib.L2TL_MODES
resolve_config = spec_lib.resolve_config


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    accept_changes: Sequence[str] = (),
) -> dict[str, Any]:
  """Trains `config.method` in `workdir` (resuming it if possible) and tests.

  One process at a time: the workdir is locked for the run's life (by
  process 0 in a run of several processes, which all call this function).

  Args:
    config: a full run config (see experiments/configs/default.py).
    workdir: output directory.
    accept_changes: config fields (e.g. 'train.lr') that may differ from the
      run saved in `workdir`; the run continues from its last good
      checkpoint with the new values (recorded in config_changes.jsonl).

  Returns:
    The results dict also written to workdir/results.json; on SIGTERM or
    SIGINT, {'status': 'interrupted', 'step': ..., 'checkpoint': ...} after a
    checkpoint was saved (results.json is not written).

  Raises:
    ConfigError: a config field of the wrong type or out of range.
    ConfigMismatchError: workdir holds a run of another config.
    NonFiniteError: a loss or gradient became non-finite.
    DataError: bad data settings, or data changed since the run started.
    LockedError: another process runs in workdir.
    DamagedError: every checkpoint of the run is damaged.
  """
  spec = spec_lib.from_config(config)  # Every field checked, at once.
  loaded = None
  if spec.model.init_from:  # Before the data and the workdir.
    loaded = weights.load(spec.model.init_from)
    _check_family(spec.model, loaded)
    spec = spec_lib.from_config(config, weights_family=loaded.family)
  if not workdir or not str(workdir).strip():
    raise validation.ConfigError(
        "The workdir is empty: name the directory the run writes to (e.g. "
        "--workdir=runs/my_run); an empty one would write into the current "
        "directory.")
  workdir = os.path.abspath(workdir)
  data.check_workdir(workdir, spec.data)  # Not inside an image folder.
  finished = workdir_lib.finished_results(spec.config, workdir)
  if finished is not None:  # Read without the lock: read-only storage works.
    return finished
  # Refused before the lock file is written (and again under the lock).
  workdir_lib.check_changes(config_changes(spec.config, workdir), workdir,
                            tuple(accept_changes))
  os.makedirs(workdir, exist_ok=True)
  with workdir_lib.lock(workdir):
    return _train_locked(spec, workdir, tuple(accept_changes), loaded)


def _train_locked(spec: spec_lib.RunSpec, workdir: str,
                  accept_changes: tuple[str, ...], loaded):
  """train_and_evaluate while holding the workdir's lock."""
  changes = config_changes(spec.config, workdir)
  workdir_lib.check_changes(changes, workdir, accept_changes)
  results_path = os.path.join(workdir, "results.json")
  # Finished while we waited.
  finished = workdir_lib.finished_results(spec.config, workdir)
  if finished is not None:
    return finished

  par = parallel.Parallelism(spec.host.parallelism)
  validation.check_batches(
      spec.device_batches(pretrains=spec.method.init == "pretrained"
                          and not spec.model.init_from),
      devices=par.size, mode=par.mode)
  task = data.build_task(spec.data)
  sizes = ", ".join(f"{k} {len(v)}" for k, v in task.splits().items())
  logging.info("Data ready: %s -> %s (%s).", spec.data.source,
               spec.data.target, sizes)
  if spec.train.batch_size > len(task.tgt_train):
    logging.warning(
        "config.train.batch_size=%d is above the %d target train examples: "
        "every batch repeats examples (an epoch is shorter than a batch).",
        spec.train.batch_size, len(task.tgt_train))
  run = run_lib.Run(spec, task, workdir, par, loaded)
  loop = loop_lib.HostLoop(run, workdir, accepted=changes)
  # Written once the run was built and its checkpoint restored, so a bad
  # start leaves the saved run as it was.
  if distributed.is_primary():
    workdir_lib.save_config(spec.config, workdir, changes)
  interrupted = loop.train()
  if interrupted is not None:
    return interrupted
  results = _final_results(run, loop.best, loop.host)
  if distributed.is_primary():
    atomic.write_json(results_path, results)
    if spec.host.write_plots:
      from l2tl_jax import plots  # matplotlib only when plotting.

      plots.plot_run(workdir)
  run.batches.close()
  return results


def _check_family(model: spec_lib.ModelSpec, loaded) -> None:
  """The weights must be of config.model's architecture (before the data)."""
  if loaded.family is None:
    return
  kwargs = model.kwargs()
  defaults = models.encoder_defaults(loaded.family)
  differ = {k: v for k, v in loaded.encoder_kwargs.items()
            if tuple(np.atleast_1d(kwargs.get(k, defaults.get(k))))
            != tuple(np.atleast_1d(v))
            } if loaded.family == model.encoder else {}
  if loaded.family != model.encoder or differ:
    raise weights.WeightsError(
        f"{model.init_from} holds {loaded.family} weights"
        + (f" with {differ}" if differ else "") + " but config.model is "
        f"{model.encoder!r} with encoder_kwargs {kwargs}: set "
        f"config.model.encoder={loaded.family!r} and encoder_kwargs "
        f"{loaded.encoder_kwargs or '{}'} (python -m "
        "experiments.inspect_weights FILE shows the architecture).")


def _prefixed(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
  return {prefix + k: v for k, v in d.items()}


def selection_check(results: dict[str, Any]) -> dict[str, Any] | None:
  """`agreement.agreement` of a run's learned class weights with DATL's
  estimate (results' 'policy' and 'datl_estimate'); warns when they
  disagree. None without both."""
  check = agreement.of_results(results)
  if check is None:
    return None
  if check["disagrees"]:
    logging.warning(
        "The learned source class weights rank the classes against DATL's "
        "estimate from the pre-trained source classifier (Spearman %.2f). "
        "Where the two disagreed on the benchmarks (label mismatch: no "
        "target class in the source), the learned ranking was the wrong "
        "one: compare with --config.method=datl and joint_uniform before "
        "trusting it (README: Where selection pays).",
        check["rank_corr_with_datl"])
  return check


def _final_results(run: run_lib.Run, best, host) -> dict[str, Any]:
  """results.json: final and validation-selected accuracies, what was
  learned, the task and the config."""
  spec, task = run.spec, run.task
  state = run.host_state()
  results: dict[str, Any] = {
      "status": "completed",
      "method": spec.method.name,
      "seed": spec.seed,
      "steps": int(state.step),
      "train_time_s": host["train_time_s"],
  }
  if task.tgt_test is not None:
    test = run.evaluate((state.params, state.model_state), task.tgt_test)
    loop_lib.check_finite_eval(test, "test", int(state.step),
                               spec.method.name)
    results["test_accuracy"] = test["accuracy"]
    results["test_loss"] = test["loss"]
    results["test_examples"] = int(test["count"])
    results.update(_prefixed("test_", steps.per_class(
        test["confusion"], task.tgt_class_names)))
  if task.tgt_val is not None:
    val = run.evaluate((state.params, state.model_state), task.tgt_val)
    loop_lib.check_finite_eval(val, "validation", int(state.step),
                               spec.method.name)
    results["val_accuracy"] = val["accuracy"]
    if host["best"]["step"] > 0:
      selected = {"step": host["best"]["step"],
                  "val_accuracy": host["best"]["val_accuracy"]}
      if task.tgt_test is not None:
        sel_test = run.evaluate(best, task.tgt_test)
        selected["test_accuracy"] = sel_test["accuracy"]
        selected.update(_prefixed("test_", steps.per_class(
            sel_test["confusion"], task.tgt_class_names)))
    else:  # No periodic evaluation: the final params are the only candidate.
      selected = {"step": results["steps"], "val_accuracy": val["accuracy"]}
      for key in ("test_accuracy", "test_per_class_accuracy",
                  "test_confusion"):
        if key in results:
          selected[key] = results[key]
    results["val_selected"] = selected
  learned = run.expected_weights(state.policy_params, state.estimator_state)
  if learned:
    results["policy"] = {
        "expected_class_weights": dict(zip(
            task.src_class_names,
            learned.get("policy/expected_class_weights", []))),
        "expected_alpha": learned.get("policy/expected_alpha"),
    }
  results.update(run.info)
  check = selection_check(results)
  if check is not None:
    results["selection_check"] = check
  results["task"] = task.summary()
  results["src_class_names"] = list(task.src_class_names)
  results["tgt_class_names"] = list(task.tgt_class_names)
  results["config"] = spec.config
  results["devices"] = [str(d) for d in run.par.devices]
  return results
