"""The host side of a run: resume, steps, log windows, evaluation, saves.

`HostLoop` drives a `l2tl_jax.run.Run` to config.train.steps. It holds no
math: the compiled step does all of it. Metrics stay on the device until a
log window ends; then their means go to metrics.jsonl (one object per log
step, plus 'eval/...' objects at evaluation steps) and TensorBoard. SIGTERM
and SIGINT save a checkpoint and stop between steps. A non-finite step or
evaluation stops the run (`NonFiniteError`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from typing import Any

from absl import logging
import jax
import numpy as np
import tqdm

from l2tl_jax import checkpointing
from l2tl_jax import data
from l2tl_jax import distributed
from l2tl_jax import run as run_lib
from l2tl_jax import steps
from l2tl_jax import workdir as workdir_lib


class NonFiniteError(FloatingPointError):
  """Training produced a non-finite loss or gradient."""


class HostLoop:
  """The host side of a run: resume, steps, log windows, evaluation, saves.

  It holds no math: the compiled step does all of it. Metrics stay on the
  device until a log window ends (`pending`); a checkpoint also keeps the
  pending metrics of a partly filled window, so a resumed run logs the same
  window means as an uninterrupted one. With several processes every one
  runs this loop in step; only process 0 (`primary`) writes metrics,
  TensorBoard and the progress bar.
  """

  def __init__(self, run: run_lib.Run, workdir: str, accepted=None):
    self.run, self.spec = run, run.spec
    self.accepted = accepted or {}
    self.workdir = workdir
    self.primary = distributed.is_primary()
    self.ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=self.spec.host.checkpoints_to_keep)
    self.metrics_path = os.path.join(workdir, "metrics.jsonl")
    self.host = {"best": {"step": 0, "val_accuracy": -1.0},
                 "train_time_s": 0.0}
    state = run.host_state()
    self.best = jax.device_get((state.params, state.model_state))
    self.start = self._restore(state)
    if self.primary:
      truncate_jsonl(self.metrics_path, self.start)
    self.pending: list[dict] = list(self.host.get("pending", []))
    self.window_start = time.perf_counter()
    self.window_first = self.start + 1 - len(self.pending)

  def _restore(self, template) -> int:
    """Restores the newest good checkpoint, if any; returns its step.

    A damaged checkpoint is moved aside (with a warning naming it and the
    one used). The data must be what the run started with.
    """
    self.ckpt.clean_temporaries()  # The workdir lock is ours.
    try:
      restored = self.ckpt.restore_latest_good(state=template, best=self.best)
    except checkpointing.IncompatibleError as e:
      fields = (f"the accepted change(s) {', '.join(self.accepted)} alter "
                "the trained arrays" if self.accepted else
                "the config differs in a way the saved config does not show "
                "(e.g. another code version)")
      raise workdir_lib.ConfigMismatchError(
          f"The run in {self.workdir} is incompatible with the saved run: "
          f"{fields}; {e}. Nothing was changed in the workdir. Start this "
          "config in a new --workdir, or rerun without the changes.") from e
    identity = self.run.task.identity()
    if restored is None:
      self.host["task"] = identity
      return 0
    step, state, self.best, self.host = restored
    if self.host.get("task", identity) != identity:
      raise data.DataError(
          f"The data of the run in {self.workdir} changed since it started "
          f"(it was {self.host['task']}, now {identity}): resuming would mix "
          "two datasets. Restore the data, or use a new --workdir.")
    self.host["task"] = identity
    self.run.state = self.run.par.put_replicated(state)
    self.run.batches.set_state(self.host["batches"])
    logging.info("Resumed from step %d (%s)", int(state.step),
                 self.ckpt.directory)
    if int(state.step) > self.spec.train.steps:
      logging.warning(
          "The checkpoint is at step %d, past config.train.steps=%d: no step "
          "is trained and the results are those of step %d.",
          int(state.step), self.spec.train.steps, int(state.step))
    return int(state.step)

  def save(self, step: int) -> None:
    self.host["batches"] = self.run.batches.get_state()
    self.host["pending"] = _to_host(self.pending)
    self.ckpt.save(step, state=self.run.host_state(), best=self.best,
                   host=self.host)

  def train(self) -> dict[str, Any] | None:
    """Steps to config.train.steps; the interrupted result on a signal."""
    from tensorboardX import SummaryWriter  # Heavy import, only for runs.

    spec, run = self.spec, self.run
    host = spec.host
    total = spec.train.steps
    self.writer = (SummaryWriter(os.path.join(self.workdir, "tensorboard"),
                                 purge_step=self.start)
                   if self.primary else None)
    self.bar = tqdm.tqdm(total=total, initial=self.start, unit="step",
                         disable=not (host.progress_bar and self.primary),
                         dynamic_ncols=True, desc=spec.method.name)
    stop = _StopRequest()
    run_start = time.perf_counter()
    step = self.start
    try:
      with _signals_caught(stop), (open(self.metrics_path, "a")
                                   if self.primary else
                                   contextlib.nullcontext()) as self.log:
        while step < total:
          signum = self._stop_signal(stop, step)
          if signum is not None:
            self.save(step)
            logging.warning("Signal %d: saved step %d, stopping.",
                            signum, step)
            return {"status": "interrupted", "signal": signum,
                    "step": step, "checkpoint": self.ckpt.directory}
          batch = next(run.batches)
          if step == self.start and run.joint:
            steps.check_l2tl_batch(batch, run.options)
          run.state, metrics = run.train_step(run.state,
                                              run.par.put_batch(batch))
          self.pending.append(metrics)
          step += 1
          self.bar.update(1)
          last = step == total
          if step % host.log_every_steps == 0 or last:
            self.log_window(step)
          every = spec.eval.every_steps
          if every and run.task.tgt_val is not None and (
              step % every == 0 or last):
            self.evaluate(step)
          if step % host.checkpoint_every_steps == 0 or last:
            self.host["train_time_s"] += time.perf_counter() - run_start
            run_start = time.perf_counter()
            self.save(step)
    finally:
      self.bar.close()
      if self.writer is not None:
        self.writer.close()
      self.ckpt.close()
    return None

  def _stop_signal(self, stop: _StopRequest, step: int) -> int | None:
    """The signal to save and stop on before `step + 1`, if any.

    Every process must stop at the same step (saving is collective): with
    several processes they agree at each log window's first step, on the
    signal any of them got.
    """
    if jax.process_count() == 1:
      return stop.signum
    if step % self.spec.host.log_every_steps:
      return None
    return int(distributed.gather(stop.signum or 0).max()) or None

  def _write(self, record: dict[str, Any]) -> None:
    if not self.primary:
      return
    self.log.write(json.dumps(record) + "\n")
    self.log.flush()

  def _scalar(self, key: str, value: float, step: int) -> None:
    if self.writer is not None:
      self.writer.add_scalar(key, value, step)

  def log_window(self, step: int) -> None:
    """Writes the window's mean metrics; raises on a non-finite step."""
    window = _to_host(self.pending)
    bad = _first_nonfinite(window, self.window_first)
    if bad is not None:
      # Every step on disk was verified when written or restored.
      last = self.ckpt.latest_step()
      where = (f"step {last} in {self.ckpt.directory}" if last is not None
               else "none (no checkpoint was saved yet)")
      raise NonFiniteError(
          f"Non-finite loss or gradient at step {bad} of "
          f"{self.spec.method.name}; the update was not applied and the run "
          f"stopped. Last good checkpoint: {where}. To continue from it with "
          "a lower learning rate, rerun with e.g. --config.train.lr=<lower> "
          "--accept_changes=train.lr; or check the data."
      )
    elapsed = time.perf_counter() - self.window_start
    record = {"step": step, **_mean_metrics(window),
              "steps_per_s": len(self.pending) / max(elapsed, 1e-9),
              **self.run.learned_weights()}
    self._write(record)
    for k, v in record.items():
      if isinstance(v, float) and k != "step":
        self._scalar(k, v, step)
    self.bar.set_postfix({k.split("/")[-1]: f"{record[k]:.3f}" for k in
                          ("train/tgt_loss", "policy/reward") if k in record})
    self.pending = []
    self.window_start, self.window_first = time.perf_counter(), step + 1

  def evaluate(self, step: int) -> None:
    """Full-validation accuracy; keeps the best params for selection."""
    variables = self.run.host_variables()
    val = self.run.evaluate(variables, self.run.task.tgt_val)
    check_finite_eval(val, "validation", step, self.spec.method.name)
    self._write({"step": step, "eval/val_accuracy": val["accuracy"],
                 "eval/val_loss": val["loss"]})
    self._scalar("eval/val_accuracy", val["accuracy"], step)
    if val["accuracy"] > self.host["best"]["val_accuracy"]:
      self.host["best"] = {"step": step, "val_accuracy": val["accuracy"]}
      self.best = variables


def check_finite_eval(metrics: dict[str, float], split: str, step: int,
                      method: str) -> None:
  """A non-finite evaluation loss stops the run like a non-finite step."""
  if np.isfinite(metrics["loss"]):
    return
  raise NonFiniteError(
      f"The {split} loss of {method} is {metrics['loss']} at step {step} "
      f"(accuracy {metrics['accuracy']:.3f}): the model's outputs are not "
      "finite in evaluation mode, so no result is written. A loaded weights "
      "file with damaged batch-norm statistics, or a divergence the "
      "training loss did not show, does this; check config.model.init_from "
      "and the learning rate.")


class _StopRequest:
  """Records SIGTERM / SIGINT so the loop can save and stop between steps."""

  def __init__(self):
    self.signum = None

  def __call__(self, signum, frame):
    del frame
    self.signum = signum


@contextlib.contextmanager
def _signals_caught(stop: _StopRequest):
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def truncate_jsonl(path: str, last_step: int) -> None:
  """Drops records after `last_step` (a resumed run rewrites them).

  A torn last line (a kill while appending) is dropped too; a damaged line
  elsewhere is an error.
  """
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip()]
  records = []
  for i, line in enumerate(lines):
    try:
      records.append((json.loads(line), line))
    except ValueError as e:
      if i < len(lines) - 1:
        raise data.DataError(
            f"{path} line {i + 1} is damaged ({e}); it holds the run's "
            "metrics. Remove that line, or use a new --workdir.") from e
      logging.warning("Dropped the torn last line of %s.", path)
  kept = [line if line.endswith("\n") else line + "\n"
          for record, line in records if record["step"] <= last_step]
  checkpointing.write_text_atomic(path, "".join(kept))


def _to_host(pending: list[dict]) -> list[dict[str, float]]:
  """Per-step metrics as Python floats, in one transfer.

  Floats (float64) of the float32 values: restored windows (JSON floats) and
  fresh ones then average identically.
  """
  return [{k: float(np.asarray(v).reshape(-1)[0]) for k, v in m.items()}
          for m in jax.device_get(pending)]


def _mean_metrics(window: list[dict[str, float]]) -> dict[str, float]:
  return {k: float(np.mean([m[k] for m in window])) for k in window[0]}


def _first_nonfinite(
    window: list[dict[str, float]], first_step: int
) -> int | None:
  for i, m in enumerate(window):
    if m["train/nonfinite"]:
      return first_step + i
  return None
