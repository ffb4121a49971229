r"""Your own images as the target: `--config=experiments/configs/folder.py:/path`.

  python -m experiments.main --config=experiments/configs/folder.py:/path/to/images \
      --workdir=runs/mine --config.method=l2tl
  python -m experiments.compare --config=experiments/configs/folder.py:/path/to/images \
      --seeds=3 --workdir=runs/mine_compare

The folder holds one subfolder of PNG/JPEG images per class (optionally inside
train/validation/test subfolders, which are then used as the splits). Without
split subfolders, each class gives 20 images to train, 20 to validation and
the rest to test (seeded, disjoint). Images are resized to 32x32 RGB. The
source defaults to all of Fashion-MNIST (offline); on a machine with prepared
TFDS data a closer source is better, e.g. --config.data.source=cifar10.
Reference hyper-parameters and LeNet encoder otherwise.
"""

import os

from experiments.configs import default


def set_target_folder(config, root: str, *, train_per_class: int,
                      val_per_class: int) -> None:
  """config.data's target: the image folder `root`, its split subfolders
  when it has them, else seeded per-class draws for train and validation
  and the rest for test."""
  if not root:
    raise ValueError(
        "Name the image folder after the config file: "
        "--config=experiments/configs/<config>.py:/path/to/images")
  d = config.data
  d.target = "folder:" + os.path.abspath(os.path.expanduser(root))
  d.target_classes = None
  d.target_label_mod = None
  has_splits = os.path.isdir(os.path.join(root, "train"))
  d.target_train_split = "train"
  d.target_train_per_class = None if has_splits else train_per_class
  d.target_val_split = "validation" if has_splits else "train"
  d.target_val_per_class = None if has_splits else val_per_class
  d.target_test_split = "test" if has_splits else "train"
  d.target_test_per_class = None
  d.split_shuffle = True
  d.channels = 3


def get_config(root: str = ""):
  config = default.get_config()
  set_target_folder(config, root, train_per_class=20, val_per_class=20)
  d = config.data
  d.source = "fashion_mnist"
  d.source_classes = None
  d.source_test_split = "test"
  d.image_size = 32
  return config
