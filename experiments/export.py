r"""A trained run's encoder and target head as files for other code.

  python -m experiments.export --workdir=RUN [--format=safetensors|orbax] \
      [--params=final|val_selected] [--output=DIR] [--overwrite]

Writes into DIR (default <workdir>/export) the model, labels.json (the target
class names in head order) and preprocessing.json (size, channels, resize,
mean/std of pixels / 255) that l2tl_jax.export documents:

  safetensors  model.safetensors. For the torchvision-layout ResNets
               (resnet18/34/50, resnet_v1) torchvision's own state dict with
               the target head as `fc`:
                 model = torchvision.models.resnet50(num_classes=C)
                 model.load_state_dict(safetensors.torch.load_file(
                     "DIR/model.safetensors"))
               For the other encoders this project's variables flattened
               ('params/encoder/conv1/kernel', ...; l2tl_jax.export.read_flat).
  orbax        DIR/orbax, readable by l2tl_jax.weights.load and so by
               --config.model.init_from=DIR/orbax.

Nothing is replaced without --overwrite; each file is written to a
temporary name and renamed. Exit codes as experiments.main
(experiments/cli.py): a user error (no run or no checkpoint in --workdir, a
run saved by another version, files in the way, --params=val_selected
where nothing was selected) is one line 'error: ...' on stderr and exit
code 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import os
import sys
from typing import Any

from absl import flags

from experiments import cli
from l2tl_jax import export
from l2tl_jax import saved_run

# Its own flag set, as experiments.predict's.
FLAGS = flags.FlagValues()
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The run's --workdir (experiments.main).",
    flag_values=FLAGS)
_FORMAT = flags.DEFINE_enum(
    "format", "safetensors", list(export.FORMATS),
    "'safetensors' (torchvision's layout for the torchvision ResNets) or "
    "'orbax' (this project's loader).", flag_values=FLAGS)
_PARAMS = flags.DEFINE_enum(
    "params", "final", list(saved_run.PARAMS),
    "'final': the params at the run's last step; 'val_selected': those of "
    "its best validation accuracy.", flag_values=FLAGS)
_OUTPUT = flags.DEFINE_string(
    "output", None, "Directory of the export; default <workdir>/export.",
    flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False, "Replace the files of an earlier export.",
    flag_values=FLAGS)

_TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50")


def how_to_load(run: saved_run.Run, paths: dict[str, str], fmt: str) -> str:
  """One line saying how the written model is read back."""
  encoder = run.model_spec.encoder
  model = paths["model"]
  if fmt == "orbax":
    return (f"load: l2tl_jax.weights.load({model!r}), or train from it with "
            f"--config.model.init_from={model}")
  if export.layout(encoder) == "torchvision":
    build = (f"torchvision.models.{encoder}(num_classes={run.num_classes})"
             if encoder in _TORCHVISION_MODELS else
             "torchvision.models.resnet.ResNet(<block>, <layers>, "
             f"num_classes={run.num_classes}) of the run's encoder_kwargs")
    return (f"load in PyTorch: model = {build}; model.load_state_dict("
            f"safetensors.torch.load_file({model!r})) (NCHW inputs); or "
            f"l2tl_jax.weights.load({model!r})")
  return (f"load: l2tl_jax.weights.load({model!r}), or train from it with "
          f"--config.model.init_from={model}; or l2tl_jax.export.read_flat("
          f"{model!r}) -> (params, model_state, metadata), this project's "
          "layout (NHWC inputs)")


def run_export(workdir: str, *, fmt: str = "safetensors",
               params: str = "final", output: str | None = None,
               overwrite: bool = False,
               emit: Callable[[str], Any] = print,
               warn: Callable[[str], Any] | None = None) -> dict[str, str]:
  """Loads the run, exports it and prints what was written.

  Returns:
    export.export_run's paths.

  Raises:
    RunError: no usable run in `workdir` (saved_run.load_run).
    ExportError: files in the way (without `overwrite`).
  """
  warn = warn or (lambda line: print(f"warning: {line}", file=sys.stderr,
                                     flush=True))
  out_dir = output or os.path.join(workdir, "export")
  run = saved_run.load_run(workdir, params=params)
  for note in run.notes:
    warn(note)
  paths = export.export_run(run, out_dir, fmt=fmt, overwrite=overwrite)
  kind = "orbax" if fmt == "orbax" else export.layout(run.model_spec.encoder)
  emit(f"exported the {run.params} params of {run.workdir} (step {run.step}, "
       f"{run.model_spec.encoder}, {run.num_classes} classes) in the "
       f"{kind} layout:")
  for path in paths.values():
    emit(f"  {path}")
  emit(how_to_load(run, paths, fmt))
  return paths


def _check_args(rest: Sequence[str]) -> str:
  """The output directory; every argument checked before any work."""
  if len(rest) > 0:
    cli.usage_error(f"Unexpected arguments: {list(rest)}.")
  if not _WORKDIR.value:
    cli.usage_error("--workdir is required: the run's --workdir.")
  if not os.path.isdir(_WORKDIR.value):
    cli.usage_error(f"--workdir={_WORKDIR.value}: no such directory.")
  out_dir = _OUTPUT.value or os.path.join(_WORKDIR.value, "export")
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    cli.usage_error(f"--output={out_dir} is a file; give a directory.")
  found = export.existing(out_dir, _FORMAT.value)
  if found and not _OVERWRITE.value:
    cli.usage_error(f"{', '.join(found)} already exist(s); pass --overwrite "
                    "to replace them, or choose another --output.")
  return out_dir


def main(argv: Sequence[str]) -> None:
  """Parses `argv` (program name first) into FLAGS and exports."""
  rest = cli.start_command(argv, FLAGS, __doc__)
  if rest is None:  # --help
    return
  out_dir = _check_args(rest[1:])
  cli.run_or_exit(run_export, _WORKDIR.value, fmt=_FORMAT.value,
                  params=_PARAMS.value, output=out_dir,
                  overwrite=_OVERWRITE.value)


if __name__ == "__main__":
  main(sys.argv)
