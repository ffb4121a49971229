"""The input module: datasets by name, transfer tasks, batches, placement.

    task = data.build_task(config.data)
    src = data.train_iterator(task.src_train, batch_size=16, seed=0)
    tgt = data.train_iterator(task.tgt_train, batch_size=8, seed=0)
    val = data.train_iterator(task.tgt_val, batch_size=32, seed=0)
    it = data.joint_iterator({'src': src, 'tgt': tgt, 'val': val})
    batch = next(it)  # {'src': {'image', 'label'}, 'tgt': ..., 'val': ...}
    state = it.get_state()      # JSON-able; it.set_state(state) resumes exactly
    for b in data.eval_batches(task.tgt_test, batch_size=256): ...  # b['mask']

A dataset string names its kind ('folder:/dir', 'idx:/dir', 'uci_digits',
'join:...', or a TFDS catalog name): registry.py finds the kind, each kind
registers itself in its module of kinds/. Several datasets join into one
dataset string, usable wherever one is:
'join:fashion_mnist[1,3,5,7,8,9]+mnist_5k' (kinds/joined.py). Source labels
can be corrupted for studies (`source_corrupt_*` in the data config).

A data config is read once (parse.data_spec -> DataSpec); build_task builds
the task from it.

Preprocessing for pretrained weights (ImageNet or [-1, 1] normalisation,
torchvision's resize + centre crop, RandomResizedCrop) is selected in the data
config; `preprocessing_for_family('resnet50')` gives the settings a family of
weights expects, `fill_preprocessing` fills them into a config.

Target validation or test examples that are also training examples (the same
records, or copied images) are refused unless `allow_overlap` (overlap.py);
`check_workdir` keeps a run's files out of its data folders and
`check_class_relevance` fits a known answer to the source classes (checks.py).

Everything reads through TFDS data sources (array_record; no TensorFlow) and
grain. Bad input raises DataError naming the problem and the fix.
"""

# Importing kinds registers every dataset kind (registry.py).
from l2tl_jax.data import kinds  # pylint: disable=unused-import
from l2tl_jax.data.builders import Idx, ImageFolder, Mnist5k, UciDigits
from l2tl_jax.data.checks import check_class_relevance, check_workdir
from l2tl_jax.data.config import (
    fill_preprocessing,
    get_default_data_config,
    preprocessing_for_family,
)
from l2tl_jax.data.errors import DataError
from l2tl_jax.data.parse import DataSpec, data_spec
from l2tl_jax.data.pipeline import (
    JointIterator,
    TrainIterator,
    eval_batches,
    joint_iterator,
    num_eval_batches,
    train_iterator,
)
from l2tl_jax.data.prefetch import DevicePrefetchIterator, prefetch_to_device
from l2tl_jax.data.preprocess import ImageSpec
from l2tl_jax.data.registry import open_dataset
from l2tl_jax.data.sharding import (
    data_sharding,
    make_data_mesh,
    shard_batch,
    split_for_pmap,
)
from l2tl_jax.data.sources import Dataset, clear_cache
from l2tl_jax.data.tasks import (
    Split,
    TransferTask,
    build_task,
    source_class_names,
)

__all__ = [
    'DataError',
    'DataSpec',
    'Dataset',
    'DevicePrefetchIterator',
    'Idx',
    'ImageFolder',
    'ImageSpec',
    'JointIterator',
    'Mnist5k',
    'Split',
    'TrainIterator',
    'TransferTask',
    'UciDigits',
    'build_task',
    'check_class_relevance',
    'check_workdir',
    'clear_cache',
    'data_spec',
    'data_sharding',
    'eval_batches',
    'fill_preprocessing',
    'get_default_data_config',
    'joint_iterator',
    'make_data_mesh',
    'num_eval_batches',
    'open_dataset',
    'prefetch_to_device',
    'preprocessing_for_family',
    'shard_batch',
    'source_class_names',
    'split_for_pmap',
    'train_iterator',
]
