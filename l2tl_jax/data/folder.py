"""Image folders: one subfolder per class, optionally under split subfolders.

    root/<class>/*.png|jpg|jpeg                      -> one split, 'train'
    root/{train,validation,test}/<class>/*.png|...   -> those splits ('val' is
                                                       read as 'validation')

Class names are the sorted union of the class folder names. Hidden files and
folders are skipped, as are files with other extensions; images may sit in
nested folders below their class folder.
"""

import dataclasses
import hashlib
import io
import os

import numpy as np
from PIL import Image

from l2tl_jax.data.errors import DataError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
SPLIT_FOLDERS = {
    'train': 'train', 'validation': 'validation', 'val': 'validation',
    'test': 'test',
}


@dataclasses.dataclass(frozen=True)
class FolderLayout:
  """The images of a folder dataset, as found on disk.

  Attributes:
    root: absolute root folder.
    class_names: sorted class folder names; labels index this tuple.
    splits: split name -> ((path relative to root, label), ...), sorted by path.
    fingerprint: hash of the root path and every image's path, size and mtime.
  """

  root: str
  class_names: tuple[str, ...]
  splits: dict[str, tuple[tuple[str, int], ...]]
  fingerprint: str


def _visible_dirs(path: str) -> list[str]:
  return sorted(
      d for d in os.listdir(path)
      if not d.startswith('.') and os.path.isdir(os.path.join(path, d))
  )


def _class_images(class_dir: str, root: str) -> list[str]:
  paths = []
  for dirpath, dirnames, filenames in os.walk(class_dir):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    for name in sorted(filenames):
      if not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS):
        paths.append(os.path.relpath(os.path.join(dirpath, name), root))
  return paths


def scan_folder(root: str) -> FolderLayout:
  """Lists the images of a folder dataset and checks its layout.

  Args:
    root: the dataset's root folder.

  Returns:
    The FolderLayout.

  Raises:
    DataError: missing or empty root, a class folder without images.
  """
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(root):
    raise DataError(
        f'Image folder {root} does not exist. Give folder:/path/to/root, where'
        ' root holds one subfolder of PNG/JPEG images per class.'
    )
  top = _visible_dirs(root)
  if not top:
    raise DataError(
        f'Image folder {root} has no class subfolders. Put each class in its'
        ' own subfolder (root/<class>/*.png), optionally under train/,'
        ' validation/ and test/.'
    )
  if all(d.lower() in SPLIT_FOLDERS for d in top):
    split_dirs = {SPLIT_FOLDERS[d.lower()]: os.path.join(root, d) for d in top}
    if len(split_dirs) < len(top):
      raise DataError(
          f'Image folder {root} has both val/ and validation/; keep one.'
      )
  else:
    split_dirs = {'train': root}
  per_split = {}
  for split, split_dir in split_dirs.items():
    classes = _visible_dirs(split_dir)
    if not classes:
      raise DataError(
          f'{split_dir} has no class subfolders; put each class in its own'
          ' subfolder of PNG/JPEG images.'
      )
    per_split[split] = {}
    for name in classes:
      images = _class_images(os.path.join(split_dir, name), root)
      if not images:
        raise DataError(
            f'Class folder {os.path.join(split_dir, name)} holds no images'
            f' ({", ".join(IMAGE_EXTENSIONS)}); add images or remove the'
            ' folder.'
        )
      per_split[split][name] = images
  class_names = tuple(sorted({c for s in per_split.values() for c in s}))
  label_of = {name: i for i, name in enumerate(class_names)}
  h = hashlib.sha256(root.encode())
  splits = {}
  for split in sorted(per_split):
    examples = sorted(
        (path, label_of[name])
        for name, paths in per_split[split].items() for path in paths
    )
    for path, label in examples:
      st = os.stat(os.path.join(root, path))
      h.update(
          f'{split}/{path}:{label}:{st.st_size}:{st.st_mtime_ns};'.encode())
    splits[split] = tuple(examples)
  return FolderLayout(
      root=root, class_names=class_names, splits=splits,
      fingerprint=h.hexdigest()[:16],
  )


def decode_image(data: bytes, name: str = '<bytes>') -> np.ndarray:
  """Decodes PNG/JPEG bytes to uint8 [H, W, C], C = 1 (gray) or 3 (RGB).

  Palette and alpha images become RGB (alpha dropped), 16-bit gray keeps its
  high byte.

  Args:
    data: the encoded file content.
    name: the file name, for the error message.

  Returns:
    uint8 [H, W, 1] or [H, W, 3].

  Raises:
    DataError: the bytes are not a readable image.
  """
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      mode = img.mode
      if mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
        arr = np.asarray(img).astype(np.float64)
        scale = 1.0 if mode == 'F' else 1.0 / 256.0
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
      elif mode in ('1', 'L', 'LA'):
        arr = np.asarray(img.convert('L'))
      else:
        arr = np.asarray(img.convert('RGB'))
  except Exception as e:  # PIL raises many types for bad files.
    raise DataError(
        f'Cannot decode image {name} ({e}); replace or remove the file.'
    ) from e
  if arr.ndim == 2:
    arr = arr[..., None]
  return np.ascontiguousarray(arr)


def check_images(layout: FolderLayout) -> None:
  """Decodes every image of a layout once, naming the first bad file."""
  for examples in layout.splits.values():
    for path, _ in examples:
      full = os.path.join(layout.root, path)
      try:
        with open(full, 'rb') as f:
          data = f.read()
      except OSError as e:
        raise DataError(f'Cannot read image {full}: {e}') from e
      decode_image(data, full)
