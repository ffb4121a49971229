"""Settings shared by the paper-scale configs (imagenet_pets, finegrained).

Not a config itself: `imagenet_config` starts one (ImageNet as the source),
`set_target_stage` fills its model and target stage for a pretrained
ResNet-50 at 224 px, `bit_steps` counts its steps.
"""

from ml_collections import config_dict

from experiments.configs import default

# BiT-HyperRule (Kolesnikov et al. 2020): steps at batch 512 by target size.
BIT_BATCH = 512


def bit_steps(num_train: int, batch_size: int) -> int:
  """BiT's step count for `num_train` target images, at `batch_size`.

  BiT trains 500 steps at batch 512 for targets under 20k images, 10k steps
  under 500k and 20k beyond; here the same number of target examples is seen
  at `batch_size`.
  """
  if num_train < 1 or batch_size < 1:
    raise ValueError(f"num_train and batch_size must be >= 1, got "
                     f"{num_train} and {batch_size}.")
  steps = 500 if num_train < 20_000 else 10_000 if num_train < 500_000 else 20_000
  return steps * BIT_BATCH // batch_size


def imagenet_config(target: str):
  """default.get_config() for L2TL from ImageNet (TFDS imagenet2012 train,
  every class; no source test split: the weights bring the source
  classifier) to the catalog dataset `target`, all its classes."""
  config = default.get_config()
  config.method = "l2tl"
  d = config.data
  d.source = "imagenet2012"
  d.source_split = "train"
  d.source_classes = None
  d.source_test_split = None
  d.target = target
  # None keeps every class; typed so --config.data.target_classes='(0,1)'
  # can restrict them from the command line.
  d.target_classes = config_dict.placeholder(tuple)
  d.target_label_mod = None
  return config


def set_target_stage(config, *, num_train: int, batch_size: int = 64) -> None:
  """ResNet-50 from ImageNet weights at 224 px, and its target stage.

  bfloat16; Nesterov SGD 0.01 decayed x0.1 at 60, 80 and 90% of
  `bit_steps(num_train, batch_size)`; L2TL source 2 x batch -> batch kept,
  validation batch = batch; weight decay 1e-4; evaluation, logging and
  checkpoints every tenth / hundredth / tenth of the run.
  """
  steps = bit_steps(num_train, batch_size)
  config.model.encoder = "resnet50"
  config.model.init_from = config_dict.placeholder(str)
  config.model.preprocessing_from_weights = True
  config.model.dtype = "bfloat16"
  d = config.data
  d.channels = 3
  d.augment = True
  d.split_shuffle = True
  d.split_seed = 0
  t = config.train
  t.steps = steps
  t.batch_size = batch_size
  t.lr = 0.01
  t.lr_boundaries = tuple(int(steps * f) for f in (0.6, 0.8, 0.9))
  t.lr_scales = (0.1, 0.01, 0.001)
  t.weight_decay = 1e-4
  config.l2tl.val_batch_size = batch_size
  config.l2tl.policy_lr_boundaries = (int(steps * 0.8),)
  config.eval.batch_size = 128
  config.eval.every_steps = max(1, steps // 10)
  config.log_every_steps = max(1, steps // 100)
  config.checkpoint_every_steps = max(1, steps // 10)
