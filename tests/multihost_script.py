"""One process of a (multi-process) tiny run, started by test_multihost.py.

  python tests/multihost_script.py OUT_DIR [--interrupt=P:S] METHOD [...]

The environment says how many processes and devices there are (JAX_PLATFORMS,
XLA_FLAGS, JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) and
where the data are (L2TL_TEST_DATA_DIR). Each method trains the tiny config
('mesh' parallelism, source pre-training cached in OUT_DIR/pretrain) in
OUT_DIR/METHOD, as experiments.main would; 'l2tl' in the reference mode
(REINFORCE: the policy samples from the state's key). --interrupt=P:S:
process P alone gets SIGTERM once it has logged step S (every process must
then stop at the same step). Prints one line per method, 'RESULT {json}',
and a last line 'WROTE {json}': the files this process opened for writing
under OUT_DIR outside checkpoints/ (the ones orbax writes from every
process). A RESULT holds the step the run started from ('start_step').
"""

import json
import os
import signal
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _track_writes(root: str) -> set[str]:
  """Records the files under `root` this process opens for writing or
  renames into place (an audit hook: builtins.open, os.open, os.replace)."""
  root = os.path.abspath(root) + os.sep
  written: set[str] = set()

  def hook(event, args):
    if event == "open":
      path, mode, flags = args
      writes = (any(c in mode for c in "wax+") if isinstance(mode, str)
                else bool((flags or 0) & WRITE_FLAGS))
    elif event == "os.rename":
      path, writes = args[1], True
    else:
      return
    if writes and isinstance(path, (str, bytes, os.PathLike)):
      path = os.path.abspath(os.fsdecode(path))
      if path.startswith(root):
        written.add(os.path.relpath(path, root))

  sys.addaudithook(hook)
  return written


def config_for(out_dir: str, method: str):
  from experiments.configs import tiny

  config = tiny.get_config()
  config.method = method
  config.l2tl.mode = "reference"
  config.data.data_dir = os.environ["L2TL_TEST_DATA_DIR"]
  config.pretrain_cache_dir = os.path.join(out_dir, "pretrain")
  config.parallelism = "mesh"
  config.pretrain.steps = 6
  config.pretrain.lr_boundaries = (4,)
  config.train.steps = 6
  config.train.lr_boundaries = (4,)
  config.l2tl.policy_lr_boundaries = (4,)
  config.eval.every_steps = 3
  config.log_every_steps = 3
  config.checkpoint_every_steps = 3
  config.write_plots = True
  return config


def _interrupt_after(loop, step: int) -> None:
  """Sends this process SIGTERM once it has logged `step`."""
  log_window = loop.HostLoop.log_window

  def logged(self, at):
    log_window(self, at)
    if at == step:
      os.kill(os.getpid(), signal.SIGTERM)

  loop.HostLoop.log_window = logged


def _record_starts(loop) -> dict[str, int]:
  """workdir -> the step each run started from (restored or 0)."""
  starts = {}
  restore = loop.HostLoop._restore  # pylint: disable=protected-access

  def restored(self, template):
    starts[self.workdir] = restore(self, template)
    return starts[self.workdir]

  loop.HostLoop._restore = restored  # pylint: disable=protected-access
  return starts


def main(argv):
  out_dir, methods = argv[1], argv[2:]
  interrupt = None
  if methods[0].startswith("--interrupt="):
    interrupt = tuple(map(int, methods.pop(0).split("=")[1].split(":")))
  written = _track_writes(out_dir)
  from l2tl_jax import distributed

  # As experiments.main: before anything else uses JAX.
  distributed.initialize(config_for(out_dir, methods[0]).distributed,
                         os.environ)
  import jax
  from l2tl_jax import loop
  from l2tl_jax import train

  if interrupt is not None and interrupt[0] == jax.process_index():
    _interrupt_after(loop, interrupt[1])
  starts = _record_starts(loop)
  for method in methods:
    workdir = os.path.join(out_dir, method)
    results = train.train_and_evaluate(config_for(out_dir, method), workdir)
    summary = {k: results.get(k) for k in (
        "status", "step", "signal", "method", "steps", "test_accuracy",
        "test_loss", "test_examples", "val_accuracy", "val_selected",
        "policy", "devices")}
    summary["pretrain"] = {
        k: results.get("pretrain", {}).get(k)
        for k in ("key", "final_batch_loss", "source_test_accuracy")}
    summary["start_step"] = starts.get(workdir)
    summary["process"] = [jax.process_index(), jax.process_count()]
    print("RESULT " + json.dumps(summary), flush=True)
  ours = sorted(p for p in written
                if "checkpoints" not in p.split(os.sep)[1:2])
  print("WROTE " + json.dumps(ours), flush=True)


if __name__ == "__main__":
  main(sys.argv)
