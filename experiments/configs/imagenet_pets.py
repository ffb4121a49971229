r"""ImageNet -> Oxford-IIIT Pets with a pretrained ResNet-50: the authors' setting.

  # Full target (2940 train / 740 validation carved from the 3680 training
  # images, the 3669 test images as test):
  python -m experiments.compare --config=experiments/configs/imagenet_pets.py \
      --config.model.init_from=/path/to/resnet50.safetensors \
      --seeds=5 --workdir=runs/imagenet_pets \
      --methods=finetune,joint_uniform,l2tl
  # Low-data mode, k training images per class (the validation split stays
  # 20 per class):
  python -m experiments.main --config=experiments/configs/imagenet_pets.py:10 \
      --config.model.init_from=/path/to/resnet50.safetensors \
      --workdir=runs/imagenet_pets_k10

Protocol (the authors' wiring, google-research l2tl; shared/reference
SCALE.md section 1). Source: ImageNet, TFDS `imagenet2012` train (1.28M
images, 1000 classes; the reference's TF-slim labels had a 1001st
background class, TFDS and torchvision have 1000), read per record from its
array_record files (never held in memory), decoded and cropped in grain
threads. Target: TFDS `oxford_iiit_pet` (37 breeds): 20 images per class of
its train split for the L2TL validation reward (740), the remaining 2940 for
training (or k per class), and its test split (3669) as test; seeded
per-class draws. ResNet-50 (torchvision v1.5 layout) whose ImageNet weights
give the encoder and the 1000-way source head (config.model.init_from; the
reference trained ImageNet's classifier, so no source pre-training runs);
224 px, ImageNet mean/std, random resized crops + flips for training, resize
256 + centre crop 224 for evaluation (the weights family's preprocessing).

Target stage (experiments/configs/paper.py, shared with finegrained.py):
scaled to one accelerator, target batch 64, source 2 x 64 -> 64 kept,
validation 64; 4000 steps (BiT's rule: 500 steps at batch 512 for targets
under 20k images, i.e. the same 256k target examples at batch 64), Nesterov
SGD 0.01 x0.1 at 60%, 80% and 90% of the steps, weight decay 1e-4, bfloat16,
batch norm 'joint' (the reference). Policy: the recommended mode
(config.l2tl.mode).

Needs: imagenet2012 and oxford_iiit_pet prepared in the TFDS data dir
(`tfds build oxford_iiit_pet --file_format=array_record`; imagenet2012 needs
its manual download), and torchvision's ResNet-50 weights. Tested offline on
tfds.testing.mock_data (tests/test_paper_configs.py); not run at this scale
here (no accelerator and no ImageNet on the machines this was built on).

Measured: to be measured on an accelerator.
"""

from experiments.configs import paper

# The authors' carve-out of the 3680 training images: 20 per class (740).
VAL_PER_CLASS = 20
# Target train images (3680 - 740), which BiT's rule counts.
NUM_TRAIN = 2940


def get_config(k: str = ""):
  """k: training images per class (low-data mode); empty: all 2940."""
  config = paper.imagenet_config("oxford_iiit_pet")
  d = config.data
  d.target_train_split = "train"
  d.target_train_per_class = int(k) if k else None
  d.target_val_split = "train"
  d.target_val_per_class = VAL_PER_CLASS
  d.target_test_split = "test"
  d.target_test_per_class = None
  paper.set_target_stage(config, num_train=NUM_TRAIN)
  return config
