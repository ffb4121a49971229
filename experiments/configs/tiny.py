r"""Seconds-long runs for tests: mnist_5k -> uci_digits 1..5 (mod 5), tiny.

  python -m experiments.main --config=experiments/configs/tiny.py \
      --workdir=/tmp/l2tl_tiny --config.method=l2tl

Not a benchmark: a small encoder, 30 pre-training and 40 target steps.
"""

from experiments.configs import digits


def get_config():
  config = digits.get_config()
  # A narrow LeNet so that a run takes seconds on a CPU.
  config.model.encoder_kwargs.conv_features = 8
  config.model.encoder_kwargs.hidden = 32
  config.model.encoder_kwargs.features = 16
  config.pretrain.steps = 30
  config.pretrain.batch_size = 32
  config.pretrain.lr_boundaries = (20,)
  config.pretrain.lr_scales = (0.1,)
  config.train.steps = 40
  config.train.lr = 0.02
  config.train.lr_boundaries = (30,)
  config.l2tl.policy_lr_boundaries = (30,)
  config.eval.every_steps = 10
  config.log_every_steps = 5
  config.checkpoint_every_steps = 10
  config.progress_bar = False
  return config
