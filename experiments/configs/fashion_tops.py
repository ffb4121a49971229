r"""Fashion-MNIST non-tops -> tops: the built-in default and offline benchmark.

  python -m experiments.compare --config=experiments/configs/fashion_tops.py \
      --seeds=5 --workdir=runs/fashion_tops
  python -m experiments.main --config=experiments/configs/fashion_tops.py \
      --workdir=runs/fashion_tops_l2tl   # one L2TL run

Protocol. Source: the Fashion-MNIST train images of the six classes that are
not tops (Trouser, Dress, Sandal, Sneaker, Bag, Ankle boot; 36000 images),
28x28 zero-padded to 32x32, gray, /255; its test images (6000) measure
pre-training. Target: the four tops classes (T-shirt/top, Pullover, Coat,
Shirt), labels 0..3 in that order; 20 per class for train and 200 per class
for validation, both drawn from the train split (disjoint, seeded draw), and
all 4000 test-split images of those classes as test. Reference
hyper-parameters and LeNet encoder: 2000 pre-training steps at batch 128,
1200 target steps at batch 8 (L2TL: 16 -> 8 source, 32 validation).

Data: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
offline, or the TFDS catalog copy where prepared.

Measured (2-core CPU, seeds 0..4, test accuracy %, mean ± sample std;
experiments/reports/fashion_tops; l2tl in --config.l2tl.mode=reference):
pre-training 96.2% on the source test
images; scratch 63.18 ± 0.60, finetune 63.58 ± 0.68, finetune
(val-selected) 63.84 ± 0.70, joint_uniform 63.37 ± 0.39, datl 64.01 ± 0.57,
l2tl 63.88 ± 0.58, l2tl (val-selected) 64.14 ± 0.79. At 5 per class (3
seeds): finetune 53.08 ± 1.25, l2tl 55.23 ± 0.90, joint_uniform
55.58 ± 0.93. Policy study (experiments/reports/study/fashion_tops): the
meta-gradient (mode meta_gradient, policy Adam 0.01) 64.06 ± 0.49.
"""

from experiments.configs import default

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
TOPS = (0, 2, 4, 6)
NOT_TOPS = (1, 3, 5, 7, 8, 9)


def get_config():
  config = default.get_config()
  d = config.data
  d.source = "fashion_mnist"
  d.source_split = "train"
  d.source_classes = NOT_TOPS
  d.source_test_split = "test"
  d.target = "fashion_mnist"
  d.target_classes = TOPS
  d.target_label_mod = None
  d.target_train_split = "train"
  d.target_train_per_class = 20
  d.target_val_split = "train"
  d.target_val_per_class = 200
  d.target_test_split = "test"
  d.target_test_per_class = None
  d.split_shuffle = True
  d.split_seed = 0
  return config
