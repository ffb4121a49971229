r"""Launcher: flags -> config -> `train_and_evaluate(config, workdir)`.

  python -m experiments.main --config=experiments/configs/fashion_tops.py \
      --workdir=runs/fashion_tops_l2tl [--config.method=finetune] \
      [--config.seed=1]

Rerunning the same command on the same workdir resumes from the last
checkpoint. SIGTERM / SIGINT save a checkpoint and exit.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import cli
from l2tl_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (experiments/configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  results = cli.run_or_exit(train.train_and_evaluate, _CONFIG.value,
                            _WORKDIR.value)
  if results.get("status") == "interrupted":
    print(f"Interrupted by signal {results['signal']} at step {results['step']};"
          f" checkpoint saved in {results['checkpoint']}. Rerun the same "
          "command to resume.")
    sys.exit(128 + results["signal"])
  summary = {k: results.get(k) for k in ("method", "seed", "test_accuracy",
                                         "val_accuracy")}
  print(f"done: {summary}; results in {_WORKDIR.value}/results.json")


if __name__ == "__main__":
  app.run(main)
