"""Reading MNIST-format (IDX) files: MNIST, Fashion-MNIST, KMNIST, EMNIST.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of
dimensions), the big-endian int32 dimensions, then the values. Files may be
gzipped or not.
"""

import dataclasses
import gzip
import hashlib
import os
import re

import numpy as np

from l2tl_jax.data.errors import DataError

# Debian's dataset-fashion-mnist package.
DEFAULT_IDX_DIR = '/usr/share/datasets/fashion-mnist'

FASHION_MNIST_CLASS_NAMES = (
    'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
    'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
)
# sha256 of the 60000 Fashion-MNIST train label bytes (after the header):
# identifies the dataset whatever its directory or compression.
_FASHION_TRAIN_LABELS_SHA256 = (
    '657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7'
)
# Optional file beside the IDX files: one class name per line, in label order.
CLASS_NAMES_FILE = 'classes.txt'

_UBYTE = 0x08
_GZIP_MAGIC = b'\x1f\x8b'


def _open(path: str):
  with open(path, 'rb') as f:
    magic = f.read(2)
  return gzip.open(path, 'rb') if magic == _GZIP_MAGIC else open(path, 'rb')


def read_header(path: str) -> tuple[int, ...]:
  """Returns the dimensions recorded in an IDX file's header."""
  try:
    with _open(path) as f:
      magic = f.read(4)
      if len(magic) < 4 or magic[:2] != b'\x00\x00':
        raise DataError(
            f'{path} is not an IDX file (bad magic number {magic!r}); an IDX'
            ' directory holds MNIST-format files such as'
            ' train-images-idx3-ubyte(.gz).'
        )
      if magic[2] != _UBYTE:
        raise DataError(
            f'{path} holds IDX type 0x{magic[2]:02x}; only unsigned bytes'
            ' (0x08, as MNIST) are supported.'
        )
      ndim = magic[3]
      raw = f.read(4 * ndim)
      if len(raw) < 4 * ndim:
        raise DataError(f'{path} is truncated inside its IDX header.')
      return tuple(int(d) for d in np.frombuffer(raw, '>i4'))
  except (OSError, EOFError) as e:
    raise DataError(f'Cannot read IDX file {path}: {e}') from e


def read_idx(path: str) -> np.ndarray:
  """Reads a whole IDX file of unsigned bytes.

  Args:
    path: the file, gzipped or not.

  Returns:
    uint8 array shaped as the header says.
  """
  dims = read_header(path)
  try:
    with _open(path) as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f'Cannot read IDX file {path} (corrupt?): {e}') from e
  offset = 4 + 4 * len(dims)
  expected = int(np.prod(dims))
  if len(data) - offset != expected:
    raise DataError(
        f'{path} holds {len(data) - offset} values but its header promises'
        f' {dims} = {expected}; the file is truncated or corrupt.'
    )
  return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


@dataclasses.dataclass(frozen=True)
class IdxFiles:
  """The IDX files of one dataset directory.

  Attributes:
    directory: absolute directory.
    splits: split name ('train', 'test') -> (images file, labels file).
    image_shape: (H, W, 1).
    num_classes: number of classes (max label + 1 over the train labels).
    class_names: names in label order.
    transpose: whether images are stored transposed (EMNIST) and are flipped
      back on reading.
  """

  directory: str
  splits: dict[str, tuple[str, str]]
  image_shape: tuple[int, int, int]
  num_classes: int
  class_names: tuple[str, ...]
  transpose: bool

  def fingerprint(self) -> str:
    """Hash of the directory and its files' names, sizes and mtimes."""
    h = hashlib.sha256(self.directory.encode())
    paths = [p for pair in self.splits.values() for p in pair]
    names_file = os.path.join(self.directory, CLASS_NAMES_FILE)
    if os.path.exists(names_file):
      paths.append(names_file)
    for p in sorted(paths):
      st = os.stat(p)
      h.update(f'{os.path.basename(p)}:{st.st_size}:{st.st_mtime_ns};'.encode())
    return h.hexdigest()[:16]

  def read_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 [N, H, W, 1], labels uint8 [N]) of a split."""
    images_path, labels_path = self.splits[split]
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
      raise DataError(
          f'{images_path} / {labels_path}: expected images [N, H, W] and'
          f' labels [N], got {images.shape} and {labels.shape}.'
      )
    if len(images) != len(labels):
      raise DataError(
          f'{images_path} holds {len(images)} images but {labels_path} holds'
          f' {len(labels)} labels; the two files must belong together.'
      )
    if self.transpose:
      images = images.transpose(0, 2, 1)
    return images[..., None], labels


def _classify(name: str) -> tuple[str, str] | None:
  low = name.lower()
  if 'idx3' in low and 'images' in low:
    kind = 'images'
  elif 'idx1' in low and 'labels' in low:
    kind = 'labels'
  else:
    return None
  if re.search(r'(^|[^a-z])train', low):
    return 'train', kind
  if 't10k' in low or 'test' in low:
    return 'test', kind
  return None


def find_idx_files(directory: str) -> IdxFiles:
  """Finds and checks the IDX files of one dataset in a directory.

  Expected names follow MNIST's: `train-images-idx3-ubyte`,
  `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
  `t10k-labels-idx1-ubyte` (optionally `.gz`, optionally prefixed, as EMNIST's
  `emnist-letters-train-images-idx3-ubyte.gz`; 'test' may replace 't10k').
  A `classes.txt` beside them (one name per line) names the classes;
  Fashion-MNIST is recognised and gets its real class names.

  Args:
    directory: the directory to scan.

  Returns:
    The IdxFiles of the directory.

  Raises:
    DataError: missing directory, missing or ambiguous files, bad headers.
  """
  directory = os.path.abspath(os.path.expanduser(directory))
  if not os.path.isdir(directory):
    raise DataError(
        f'IDX directory {directory} does not exist. Pass idx:/path/to/dir with'
        ' MNIST-format files, or install the dataset-fashion-mnist package for'
        f' the default ({DEFAULT_IDX_DIR}).'
    )
  splits = _split_files(directory)
  shapes = _image_shapes(directory, splits)
  transpose = any('emnist' in os.path.basename(p).lower()
                  for p in splits['train'])
  h, w = shapes['train']
  if transpose:
    h, w = w, h
  class_names = _class_names(directory, read_idx(splits['train'][1]))
  num_classes = len(class_names)
  return IdxFiles(
      directory=directory,
      splits=splits,
      image_shape=(h, w, 1),
      num_classes=num_classes,
      class_names=class_names,
      transpose=transpose,
  )


def _split_files(directory: str) -> dict[str, tuple[str, str]]:
  """{'train': (images, labels), 'test'?: ...} of the IDX files found."""
  found: dict[tuple[str, str], list[str]] = {}
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    key = _classify(name)
    if key is not None and os.path.isfile(path):
      found.setdefault(key, []).append(path)
  for key, paths in found.items():
    if len(paths) > 1:
      raise DataError(
          f'{directory} holds several {key[0]} {key[1]} files:'
          f' {[os.path.basename(p) for p in paths]}; put one dataset per'
          ' directory.'
      )
  splits = {}
  for split in ('train', 'test'):
    images, labels = found.get((split, 'images')), found.get((split, 'labels'))
    if images and labels:
      splits[split] = (images[0], labels[0])
    elif images or labels:
      have = (images or labels)[0]
      raise DataError(
          f'{have} has no matching {"labels" if images else "images"} file in'
          f' {directory}; each split needs both an images (idx3) and a labels'
          ' (idx1) file.'
      )
  if 'train' not in splits:
    raise DataError(
        f'No MNIST-format train files in {directory}: expected'
        ' train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz].'
    )
  return splits


def _image_shapes(directory: str, splits: dict[str, tuple[str, str]]
                  ) -> dict[str, tuple[int, ...]]:
  """(H, W) per split, checked against the labels and each other."""
  shapes = {}
  for split, (images_path, labels_path) in splits.items():
    dims = read_header(images_path)
    if len(dims) != 3:
      raise DataError(f'{images_path} is not a 3-D images file (dims {dims}).')
    label_dims = read_header(labels_path)
    if len(label_dims) != 1 or label_dims[0] != dims[0]:
      raise DataError(
          f'{images_path} holds {dims[0]} images but {labels_path} has header'
          f' {label_dims}; the two files must belong together.'
      )
    shapes[split] = dims[1:]
  if len(set(shapes.values())) > 1:
    raise DataError(
        f'The IDX splits in {directory} have different image shapes {shapes};'
        ' all splits of one dataset must share one shape.'
    )
  return shapes


def _class_names(directory: str, train_labels: np.ndarray) -> tuple[str, ...]:
  """classes.txt, Fashion-MNIST's names when recognised, else '0', '1', ..."""
  num_classes = int(train_labels.max()) + 1 if len(train_labels) else 0
  names_file = os.path.join(directory, CLASS_NAMES_FILE)
  if os.path.exists(names_file):
    with open(names_file) as f:
      class_names = tuple(line.strip() for line in f if line.strip())
    if len(class_names) < num_classes:
      raise DataError(
          f'{names_file} names {len(class_names)} classes but the labels go up'
          f' to {num_classes - 1}; give one name per line for every class.'
      )
    return class_names
  if hashlib.sha256(train_labels.tobytes()).hexdigest() == (
      _FASHION_TRAIN_LABELS_SHA256
  ) or 'fashion' in directory.lower():
    return FASHION_MNIST_CLASS_NAMES
  return tuple(str(i) for i in range(num_classes))
