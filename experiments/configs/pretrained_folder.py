r"""Your photographs as the target, a pretrained ImageNet ResNet as the start.

  # Fine-tuning (no source data needed):
  python -m experiments.main \
      --config=experiments/configs/pretrained_folder.py:/path/to/images \
      --config.model.init_from=/path/to/resnet50.safetensors \
      --config.method=finetune --workdir=runs/mine_finetune
  # L2TL and the joint baselines train on a source as well. With ImageNet's
  # label space the pretrained 1000-way classifier is the source head (the
  # paper's setting): a prepared TFDS imagenet2012, or
  # --config.data.source=folder:/path/to/imagenet/train.
  python -m experiments.main \
      --config=experiments/configs/pretrained_folder.py:/path/to/images \
      --config.model.init_from=/path/to/resnet50.safetensors \
      --config.data.source=imagenet2012 --config.method=l2tl \
      --workdir=runs/mine_l2tl
  # BiT weights: --config.model.encoder=bit_r50x1 --config.model.init_from=
  # BiT-S-R50x1.npz (BiT-M's head is 21k-way: add
  # --config.model.dont_load="('src_head/.*',)" for a joint method).

The folder holds one subfolder of images per class (optionally inside
train/validation/test subfolders, then used as the splits; otherwise each
class gives 50 images to train, 25 to validation and the rest to test,
seeded and disjoint). The preprocessing follows the weights' family
(config.model.preprocessing_from_weights): torchvision weights get 224 px
crops, ImageNet mean/std, random resized crops + flips for training and
resize 256 + centre crop 224 for evaluation; BiT weights [-1, 1] and a
resize to 224. Any field set explicitly wins.

Target stage: 500 steps (BiT's rule for targets under 20k images) at batch
32, Nesterov SGD 0.01 decayed x0.1 at 200, 300 and 400 steps, weight decay
1e-4; L2TL: source batch 64 -> 32 kept, validation batch 64. Batch norm
'joint' (the reference); 'frozen' keeps the pretrained statistics
(--config.model.bn_mode). Use --config.model.dtype=bfloat16 on GPU/TPU.
"""

from ml_collections import config_dict

from experiments.configs import default
from experiments.configs import folder


def get_config(root: str = ""):
  config = default.get_config()
  folder.set_target_folder(config, root, train_per_class=50, val_per_class=25)
  config.method = "finetune"
  config.model.encoder = "resnet50"
  config.model.init_from = config_dict.placeholder(str)
  d = config.data
  d.source = config_dict.placeholder(str)  # Joint methods: set a source.
  d.source_classes = None
  d.source_test_split = None
  d.augment = True

  t = config.train
  t.steps = 500
  t.batch_size = 32
  t.lr = 0.01
  t.lr_boundaries = (200, 300, 400)
  t.lr_scales = (0.1, 0.01, 0.001)
  t.weight_decay = 1e-4
  config.l2tl.val_batch_size = 64
  config.l2tl.policy_lr_boundaries = (400,)
  config.eval.batch_size = 64
  config.eval.every_steps = 50
  config.log_every_steps = 10
  config.checkpoint_every_steps = 100
  return config
