r"""Fashion-MNIST tops from non-tops of which three classes have noisy labels.

  python -m experiments.compare --config=experiments/configs/corrupted.py \
      --seeds=5 --workdir=runs/corrupted
  python -m experiments.main --config=experiments/configs/corrupted.py \
      --workdir=runs/corrupted_l2tl   # one L2TL run
  # Ground truth: a fixed-weight oracle on the three clean classes only.
  python -m experiments.compare --config=experiments/configs/corrupted.py \
      --seeds=5 --methods=joint_fixed --workdir=runs/corrupted_oracle \
      --config.l2tl.fixed_class_weights="(0,0,0,1,1,1)"

Protocol. As fashion_tops.py (source: the 36000 Fashion-MNIST train images
of the six non-tops classes, labels 0..5; target: the four tops, 20 per
class train and 200 per class validation from the train split, all 4000
test-split images as test), except that 80% of the train labels of three
source classes (Trouser, Dress, Sandal: 4800 of the 6000 images of each)
are replaced by a uniformly random other source class (seed 0), so about
960 of them land in each of the five other classes. With seed 0 the src_train
label counts become 3136, 3088, 3102 (corrupted classes: about 38% of each
label right) and 8931, 8910, 8833 (the others: about 67% right, 6000 own
images plus about 2900 from the corrupted classes). The source test images
(6000) stay clean, so pre-training accuracy shows the damage. The task
summary's 'source_corruption' records the classes, fraction, seed and the
changed labels per class (and where they went); src_train's
'corrupted_labels' their total.

Known answer: the labels of the three corrupted classes are mostly wrong
(about 38% right, against about 67% for the others), so a method that
selects source classes should weight them down: the L2TL policy's expected
class weights (results.json: policy.expected_class_weights, by source class
name) should be lower on Trouser, Dress and Sandal than on Sneaker, Bag and
Ankle boot.

Data: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
offline, or the TFDS catalog copy where prepared.

Measured: to be measured.
"""

from experiments.configs import fashion_tops

# Source classes whose train labels are corrupted (names, as in the dataset).
CORRUPTED = ("Trouser", "Dress", "Sandal")
# Share of each corrupted class's train labels that are replaced.
FRACTION = 0.8


def get_config():
  config = fashion_tops.get_config()
  d = config.data
  d.source_corrupt_classes = CORRUPTED
  d.source_corrupt_fraction = FRACTION
  d.source_corrupt_seed = 0
  # Known answer, in source label order (Trouser, Dress, Sandal, Sneaker,
  # Bag, Ankle boot): the corrupted classes are the harmful ones.
  config.source_class_relevance = tuple(
      int(fashion_tops.FASHION_CLASSES[c] not in CORRUPTED)
      for c in fashion_tops.NOT_TOPS)
  return config
