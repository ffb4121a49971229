r"""ImageNet -> a fine-grained TFDS target with a pretrained ResNet-50.

  python -m experiments.compare \
      --config=experiments/configs/finegrained.py:caltech_birds2011 \
      --config.model.init_from=/path/to/resnet50.safetensors \
      --seeds=3 --workdir=runs/birds --methods=finetune,joint_uniform,l2tl

Targets (`TARGETS`, TFDS catalog names): caltech_birds2011, stanford_dogs,
oxford_flowers102, cars196, food101, dtd. Source and model as
imagenet_pets.py: TFDS imagenet2012 train read per record, ResNet-50 with
ImageNet weights (encoder and 1000-way source head from
config.model.init_from), 224 px, ImageNet mean/std, random resized crops +
flips for training, resize 256 + centre crop 224 for evaluation, bfloat16.

Protocol per target. The L2TL validation reward never uses the test split:
where the catalog has a validation split (oxford_flowers102, dtd) it is the
reward split; otherwise `val_per_class` images per class are carved from the
train split (seeded per-class draw) and the rest train. food101 has no test
split: its validation split (250 per class) is the test. Steps follow BiT's
rule in examples seen (experiments/configs/paper.py: 500 steps at batch 512
for targets under 20k training images, 10k steps under 500k), at batch 64:

| target | classes | train | L2TL validation | test | steps |
|---|---|---|---|---|---|
| caltech_birds2011 | 200 | train - 5/class (~4994) | 5/class from train | test (5794) | 4000 |
| stanford_dogs | 120 | train - 10/class (10800) | 10/class from train | test (8580) | 4000 |
| oxford_flowers102 | 102 | train (1020) | validation (1020) | test (6149) | 4000 |
| cars196 | 196 | train - 5/class (~7164) | 5/class from train | test (8041) | 4000 |
| food101 | 101 | train - 50/class (70700) | 50/class from train | validation (25250) | 80000 |
| dtd | 47 | train (1880) | validation (1880) | test (1880) | 4000 |

Needs each target prepared in the TFDS data dir (`tfds build NAME
--file_format=array_record`), imagenet2012 (manual download), and
torchvision's ResNet-50 weights. Each target is tested offline on
tfds.testing.mock_data through one real step (tests/test_paper_configs.py).

Measured: to be measured on an accelerator.
"""

import dataclasses

from experiments.configs import paper


@dataclasses.dataclass(frozen=True)
class Target:
  """How one catalog target is split.

  Attributes:
    num_train: training images the step count is computed from.
    val_split: the L2TL validation split ('train': carved from it).
    val_per_class: images per class carved from train (None: the whole
      val_split).
    test_split: the test split.
  """

  num_train: int
  val_split: str
  val_per_class: int | None
  test_split: str


TARGETS = {
    "caltech_birds2011": Target(5994 - 5 * 200, "train", 5, "test"),
    "stanford_dogs": Target(12000 - 10 * 120, "train", 10, "test"),
    "oxford_flowers102": Target(1020, "validation", None, "test"),
    "cars196": Target(8144 - 5 * 196, "train", 5, "test"),
    "food101": Target(75750 - 50 * 101, "train", 50, "validation"),
    "dtd": Target(1880, "validation", None, "test"),
}


def get_config(target: str = ""):
  """target: one of `TARGETS`."""
  if target not in TARGETS:
    raise ValueError(
        "Name the target after the config file: --config=experiments/configs/"
        f"finegrained.py:NAME with NAME one of {', '.join(TARGETS)}; got "
        f"{target!r}.")
  spec = TARGETS[target]
  config = paper.imagenet_config(target)
  d = config.data
  d.target_train_split = "train"
  d.target_train_per_class = None  # All that validation leaves.
  d.target_val_split = spec.val_split
  d.target_val_per_class = spec.val_per_class
  d.target_test_split = spec.test_split
  d.target_test_per_class = None
  paper.set_target_stage(config, num_train=spec.num_train)
  return config
