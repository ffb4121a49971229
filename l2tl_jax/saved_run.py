"""A trained run read back from its workdir: `load_run(workdir, params=...)`
-> `Run`, what `predict` and `export` apply and write.

    run = saved_run.load_run(workdir, params="final")  # or "val_selected"
    run.model, run.variables  # the encoder and target head, numpy arrays
    run.class_names, run.spec, run.normalization  # head order, eval images

`load_run` reads what `train.train_and_evaluate` left in a workdir: the
saved config.json (model and evaluation preprocessing), the target class
names (results.json, or the data config for an unfinished run) and the
newest intact checkpoint ('state': the final params; 'best': the
validation-selected ones). The model comes from `build.make_model`, the
construction path of training, so `predict.make_predict_fn` applies exactly
the network the run evaluated.

Nothing in the workdir is changed: a damaged checkpoint step is passed over
(with a note), not moved aside.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from l2tl_jax import build
from l2tl_jax import checkpointing
from l2tl_jax import data
from l2tl_jax import loading
from l2tl_jax import models
from l2tl_jax import spec as spec_lib
from l2tl_jax import weights
from l2tl_jax.data import preprocess
from l2tl_jax.data import tasks

PARAMS = ("final", "val_selected")
# The checkpoint item holding each choice of params.
_ITEMS = {"final": "state", "val_selected": "best"}
# Parts of the params a target prediction uses.
_PARTS = ("encoder", "tgt_head")


class RunError(weights.WeightsError):
  """A workdir holds no run whose weights can predict: none, unfinished
  without a checkpoint, damaged, or saved by another version."""


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained run, ready to predict.

  Attributes:
    workdir: the run's directory (absolute).
    config: its saved config (config.json, as read).
    model_spec: its config.model, read (`spec.model_spec`).
    class_names: target class names in head order.
    image_shape: (H, W, C) the model takes.
    spec: the evaluation geometry and channels of one image.
    normalization: the per-batch pixel scaling (preprocess.NORMALIZATIONS).
    model: the transfer model with the target head only.
    variables: {'params': {'encoder', 'tgt_head'}, **model_state}, numpy.
    params: 'final' or 'val_selected'.
    step: the training step of these params.
    notes: warnings about what was loaded (unfinished run, damaged steps
      passed over, selection equal to the final params), one sentence each.
  """

  workdir: str
  config: dict[str, Any]
  model_spec: spec_lib.ModelSpec
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  spec: preprocess.ImageSpec
  normalization: str
  model: models.TransferModel
  variables: dict[str, Any]
  params: str
  step: int
  notes: tuple[str, ...] = ()

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def checkpoint_steps(directory: str) -> list[int]:
  """The complete steps of a Checkpointer directory, newest first."""
  if not os.path.isdir(directory):
    return []
  return sorted((int(d) for d in os.listdir(directory) if d.isdigit()
                 and os.path.isdir(os.path.join(directory, d))), reverse=True)


def _read_json(path: str, what: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise RunError(f"{path}: the run's {what} cannot be read ({e}); it is "
                   "damaged: restore it, or train the run again.") from e


def target_class_names(data_config: ml_collections.ConfigDict
                       ) -> tuple[str, ...]:
  """The target class names a data config gives, in label order.

  Opens the target dataset (its class list only; nothing is downloaded)
  and applies config.data.target_classes / target_label_mod as
  `data.build_task` does.

  Raises:
    DataError: the dataset is not available or the classes do not fit it.
  """
  dataset = data.open_dataset(data_config.target,
                              data_dir=data_config.get("data_dir"),
                              download=False)
  classes = data_config.get("target_classes")
  if isinstance(classes, (str, int)):
    classes = (classes,)
  labels = tasks.label_map(
      dataset.class_names, None if classes is None else tuple(classes),
      data_config.get("target_label_mod"), dataset=data_config.target,
      field="target_classes")
  return tuple(labels.class_names)


def _image_shape(data_config: ml_collections.ConfigDict,
                 spec: preprocess.ImageSpec,
                 results: dict[str, Any] | None) -> tuple[int, int, int]:
  """The model's input shape: results.json's task, else from the config."""
  shape = ((results or {}).get("task") or {}).get("image_shape")
  if shape:
    return tuple(int(s) for s in shape)
  if spec.image_size is not None and spec.channels is not None:
    return (spec.image_size, spec.image_size, spec.channels)
  dataset = data.open_dataset(data_config.target,
                              data_dir=data_config.get("data_dir"),
                              download=False)
  if None in dataset.native_shape:
    raise RunError(
        f"The images of {data_config.target!r} vary in size and the run's "
        "config sets no image_size, so its input shape is unknown before "
        "results.json is written; predict once the run has finished.")
  return tuple(int(s) for s in spec.output_shape(dataset.native_shape))


def _build_model(model_spec: spec_lib.ModelSpec,
                 image_shape: tuple[int, int, int], num_classes: int,
                 workdir: str) -> models.TransferModel:
  """The run's encoder and target head, as training built them."""
  shapes = build.Shapes(image_shape, 0, num_classes)
  try:
    model = build.make_model(model_spec, heads=("tgt_head",), shapes=shapes)
    # The encoder's fast max pool where it has the choice: its values equal
    # flax's exactly (the choice training makes for first-order steps).
    kwargs = model_spec.kwargs()
    fast = build.pool_kwargs(model_spec.encoder, kwargs, fast=True)
    if fast != kwargs:
      model = model.clone(encoder=model.encoder.clone(
          fast_pool=fast["fast_pool"]))
  except (ValueError, TypeError, AttributeError, KeyError) as e:
    raise RunError(
        f"{os.path.join(workdir, 'config.json')}: its model cannot be built "
        f"by this version of l2tl_jax ({type(e).__name__}: {e}); the run was "
        "saved by another version: predict with the version that trained "
        "it, or train it again.") from e
  return model


def restore_intact(ckpt_dir: str, steps: Sequence[int]
             ) -> tuple[int, dict[str, Any], tuple[Any, Any], dict, list[str]]:
  """(step, state, best, host, notes) of the newest intact step.

  Each step's checksums are verified first; damaged steps are passed over
  (named in the notes), never moved: prediction changes nothing.
  """
  notes, damaged = [], []
  ckpt = checkpointing.Checkpointer(ckpt_dir)
  try:
    for step in steps:
      problem = checkpointing.verify(ckpt.step_dir(step))
      if problem is None:
        try:  # No templates: the arrays come back as saved (numpy).
          state, best, host = ckpt.restore(step, state=None, best=None)
        except Exception as e:  # pylint: disable=broad-except
          problem = f"it does not restore ({type(e).__name__}: {e})"
      if problem is not None:
        damaged.append(f"step {step} ({problem})")
        continue
      if damaged:
        notes.append(f"Checkpoint {', '.join(damaged)} of {ckpt_dir} is "
                     f"damaged; using step {step}.")
      return step, state, best, host, notes
  finally:
    ckpt.close()
  raise RunError(
      f"Every checkpoint in {ckpt_dir} is damaged: {'; '.join(damaged)}. "
      "Train the run again (experiments.main on a new --workdir).")


def _selected(params: str, step: int, state: Any, best: Any,
              host: dict[str, Any], config: dict[str, Any],
              workdir: str) -> tuple[Any, Any, int, list[str]]:
  """(params, model_state, their step, notes) of the chosen item."""
  if params == "final":
    if not (isinstance(state, dict) and "params" in state):
      raise RunError(f"Checkpoint step {step} of {workdir} holds no 'params' "
                     "in its 'state' item: it was saved by another version; "
                     "train the run again.")
    return state["params"], state.get("model_state") or {}, step, []
  best_step = int((host.get("best") or {}).get("step", 0))
  if best_step <= 0:
    every = config.get("eval", {}).get("every_steps")
    why = ("config.eval.every_steps=0: no periodic evaluation"
           if not every else "no validation split was evaluated"
           if (config.get("data") or {}).get("target_val_split") is None else
           f"no evaluation yet (every {every} steps) at checkpoint step "
           f"{step}")
    raise RunError(
        f"No params of the run in {workdir} were selected on validation "
        f"({why}), so there are no val_selected params; use the final ones "
        "(--params=final).")
  if not (isinstance(best, (list, tuple)) and len(best) == 2):
    raise RunError(f"Checkpoint step {step} of {workdir}: its 'best' item is "
                   "not (params, model_state): it was saved by another "
                   "version; use --params=final or train the run again.")
  notes = []
  if best_step == step:
    val = (host.get("best") or {}).get("val_accuracy")
    shown = f" ({val:.4f})" if isinstance(val, (int, float)) else ""
    notes.append(
        f"The best validation accuracy{shown} was at the last evaluation, "
        f"step {step}: the val_selected params are the final ones.")
  return best[0], best[1] or {}, best_step, notes


def _check_fit(model: models.TransferModel, variables: dict[str, Any],
               image_shape: tuple[int, int, int], step: int,
               workdir: str) -> None:
  """Raises RunError unless the restored arrays are the model's."""
  expected_params, expected_state = jax.eval_shape(
      lambda: models.init_variables(model, jax.random.key(0), image_shape))
  expected = {"params": expected_params, **expected_state}
  differences = checkpointing.shape_differences(
      checkpointing.leaf_shapes(variables),
      checkpointing.leaf_shapes(expected))
  if differences:
    raise RunError(
        f"Checkpoint step {step} of {workdir} does not fit the model its "
        f"config.json builds ({'; '.join(differences)}): the run was saved "
        "by another version of l2tl_jax. Predict with the version that "
        "trained it, or train it again.")


def load_run(workdir: str, *, params: str = "final") -> Run:
  """A finished (or checkpointed) run, ready to predict.

  Args:
    workdir: the run's --workdir (experiments.main).
    params: 'final' (the params at the last step) or 'val_selected' (the
      best full-validation accuracy's, config.eval.every_steps).

  Returns:
    The Run; `Run.notes` says what a user should know (an unfinished run, a
    damaged step passed over, a selection equal to the final params).

  Raises:
    RunError: no run in `workdir` (no results.json and no checkpoint), a
      finished run whose checkpoints are gone, every checkpoint damaged, no
      val_selected params (no periodic evaluation), or arrays that do not
      fit the model its config builds (another version).
    DataError: an unfinished run's target data, needed for its class
      names, is not available.
  """
  if params not in PARAMS:
    raise ValueError(f"params must be one of {PARAMS}, got {params!r}.")
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise RunError(f"{workdir}: no such directory; give the --workdir of a "
                   "run of experiments.main.")
  config_path = os.path.join(workdir, "config.json")
  results_path = os.path.join(workdir, "results.json")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = checkpoint_steps(ckpt_dir)
  finished = os.path.exists(results_path)
  if not steps:
    if finished:
      raise RunError(
          f"The run in {workdir} finished, but its checkpoints "
          f"({ckpt_dir}/<step>) are gone, and with them its weights; train "
          "it again.")
    raise RunError(
        f"{workdir} holds no finished run (results.json) and no checkpoint "
        "(checkpoints/<step>): train one first, python -m experiments.main "
        f"--config=... --workdir={workdir} (a run saves a checkpoint every "
        "config.checkpoint_every_steps and at its end).")
  if not os.path.exists(config_path):
    raise RunError(f"{workdir} holds checkpoints but no config.json, so its "
                   "model and preprocessing are unknown; it is not a run of "
                   "experiments.main, or it was damaged.")
  config = _read_json(config_path, "config")
  # The data block read as the data module reads configs.
  data_config = ml_collections.ConfigDict(config.get("data") or {})
  results = _read_json(results_path, "results") if finished else None
  notes = []
  if results is not None and results.get("tgt_class_names"):
    class_names = tuple(str(c) for c in results["tgt_class_names"])
  else:
    class_names = target_class_names(data_config)
  try:
    spec, _, _ = tasks.image_specs(data_config)
    model_spec = spec_lib.model_spec(config.get("model") or {})
  except (AttributeError, KeyError) as e:
    raise RunError(
        f"{config_path}: its data settings cannot be read by this version "
        f"of l2tl_jax ({type(e).__name__}: {e}); the run was saved by "
        "another version: predict with the version that trained it, or "
        "train it again.") from e
  image_shape = _image_shape(data_config, spec, results)
  # Images the config leaves in their native channels still must match the
  # model's: converted as the data module converts them.
  spec = dataclasses.replace(spec, channels=image_shape[-1])
  model = _build_model(model_spec, image_shape, len(class_names), workdir)

  step, state, best, host, restore_notes = restore_intact(ckpt_dir,
                                                          steps)
  notes += restore_notes
  chosen, model_state, params_step, select_notes = _selected(
      params, step, state, best, host, config, workdir)
  notes += select_notes
  if results is None:
    total = config.get("train", {}).get("steps")
    notes.append(f"The run in {workdir} is not finished (no results.json): "
                 f"using checkpoint step {step} of {total}.")
  elif int(results.get("steps", step)) != step:
    notes.append(f"results.json of {workdir} is of step {results['steps']}; "
                 f"its checkpoint of that step is damaged or gone: using "
                 f"step {step}.")
  chosen = dict(chosen) if isinstance(chosen, dict) else {}
  variables = {"params": {k: chosen[k] for k in _PARTS if k in chosen},
               **{k: dict(v) for k, v in dict(model_state).items()}}
  variables = jax.tree.map(np.asarray, variables)
  _check_fit(model, variables, image_shape, step, workdir)
  weights.check_values(loading.flatten(variables),
                       f"{ckpt_dir}/{step} ({_ITEMS[params]})")
  return Run(workdir=workdir, config=config, model_spec=model_spec,
             class_names=class_names, image_shape=image_shape, spec=spec,
             normalization=data_config.get("normalization", "unit"),
             model=model, variables=variables, params=params,
             step=params_step, notes=tuple(notes))
