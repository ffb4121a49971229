r"""Launcher: flags -> config -> `train_and_evaluate(config, workdir)`.

  python -m experiments.main --config=experiments/configs/fashion_tops.py \
      --workdir=runs/fashion_tops_l2tl [--config.method=finetune] \
      [--config.seed=1]

Rerunning the same command on the same workdir resumes from the last
checkpoint. SIGTERM / SIGINT save a checkpoint and exit. A run refuses a
changed config; to continue it from its last good checkpoint with changed
fields on purpose (say a lower learning rate after a divergence), name them:
--config.train.lr=0.001 --accept_changes=train.lr. Library log lines and
tracebacks go to <workdir>/l2tl.log (--log_level shows more on the console).

Several processes (hosts) run one data-parallel run when each is started
with the same flags and JAX_COORDINATOR_ADDRESS=host:port,
JAX_NUM_PROCESSES=N and its own JAX_PROCESS_ID (or --config.distributed.*;
see experiments/configs/default.py); process 0 writes the files.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import cli
from l2tl_jax import distributed
from l2tl_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (experiments/configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_ACCEPT_CHANGES = flags.DEFINE_list(
    "accept_changes", [],
    "Config fields (e.g. train.lr) that may differ from the run saved in "
    "--workdir: it continues from its last good checkpoint with the new "
    "values.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.setup_logging(None)  # A quiet console from the first line on.
  # Before anything else starts JAX's backends.
  try:
    distributed.initialize(_CONFIG.value.get("distributed"), os.environ)
  except ValueError as e:  # Settings that do not describe a run.
    cli.fail(f"distributed set-up: {e}", 2)
  # One log file per run: the other processes log to their console only.
  cli.setup_logging(_WORKDIR.value if distributed.is_primary() else None)
  results = cli.run_or_exit(train.train_and_evaluate, _CONFIG.value,
                            _WORKDIR.value,
                            accept_changes=tuple(_ACCEPT_CHANGES.value))
  if results.get("status") == "interrupted":
    print(f"Interrupted by signal {results['signal']} at step {results['step']};"
          f" checkpoint saved in {results['checkpoint']}. Rerun the same "
          "command to resume.")
    sys.exit(128 + results["signal"])
  if distributed.is_primary():
    summary = {k: results.get(k) for k in ("method", "seed", "test_accuracy",
                                           "val_accuracy")}
    print(f"done: {summary}; results in {_WORKDIR.value}/results.json")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
