"""Image folders: one subfolder per class, optionally under split subfolders.

    root/<class>/*.png|jpg|...                       -> one split, 'train'
    root/{train,validation,test}/<class>/*.png|...   -> those splits ('val' is
                                                       read as 'validation')

Class names are the sorted union of the class folder names. Images are the
files with an extension of a format read here (IMAGE_EXTENSIONS: PNG, JPEG,
BMP, GIF, WebP, TIFF as Pillow names them, e.g. .png, .jpg, .jpeg, .bmp, .gif,
.webp, .tif, .tiff); hidden files and folders are skipped; images may sit in
nested folders below their class folder (symlinked nested folders are not
followed).

What the scan refuses (DataError naming the path and the fix):
  - fewer than two classes (a one-class classifier is always right);
  - split folders next to other folders (root/{train,test,extra}): the stray
    folder would otherwise make the split names into classes;
  - a symlinked class or split folder that points into the dataset itself
    (its images would count twice, as another class or split), at a folder
    that holds the dataset (a loop), or at a folder another one already reads;
    a symlink to a folder outside the dataset is followed;
  - a class or split folder whose name is not valid UTF-8.
What it skips, with a logged warning and a note in `FolderLayout.notes`
(carried to `Dataset.notes` and `TransferTask.summary()['notes']`):
  - broken symlinks (and symlink loops);
  - image files whose path is not valid UTF-8;
  - files of other extensions (counted by extension in one note).

Images are decoded only as PNG, JPEG, BMP, GIF, WebP or TIFF, whatever their
extension (decode.py); check_images decodes every image of a layout once.
"""

import collections
import dataclasses
import hashlib
import os

from absl import logging
import numpy as np
from PIL import features
from PIL import Image

# Also read as folder.DECODE_FORMATS and folder.decode_image (predict.py).
from l2tl_jax.data.decode import DECODE_FORMATS, decode_image
from l2tl_jax.data.errors import DataError


def _image_extensions() -> tuple[str, ...]:
  """Lower-case extensions Pillow registers for the DECODE_FORMATS it reads."""
  readable = set(DECODE_FORMATS)
  if not features.check('webp'):  # Pillow built without libwebp.
    readable.discard('WEBP')
  return tuple(sorted(ext.lower() for ext, fmt in
                      Image.registered_extensions().items()
                      if fmt in readable))


# Files with these extensions (any case) are a folder's images.
IMAGE_EXTENSIONS = _image_extensions()
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
    notes: what the scan skipped and why, one sentence each.
    sizes: split name -> each image's size in bytes, in the order of `splits`.
  """

  root: str
  class_names: tuple[str, ...]
  splits: dict[str, tuple[tuple[str, int], ...]]
  fingerprint: str
  notes: tuple[str, ...] = ()
  sizes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)


def _shown(path: str) -> str:
  """A path for messages, its undecodable bytes written as \\xNN."""
  return os.fsencode(path).decode('utf-8', 'backslashreplace')


def _is_utf8(path: str) -> bool:
  try:
    path.encode('utf-8')
  except UnicodeEncodeError:  # os.listdir's surrogate escapes of bad bytes.
    return False
  return True


def _is_within(path: str, folder: str) -> bool:
  """Whether `path` is `folder` or lies below it (both real paths)."""
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _Scan:
  """State of one scan: the dataset's real root, folders read, skipped files."""

  def __init__(self, root: str):
    self.root = root
    self.real_root = os.path.realpath(root)
    self.read_folders: dict[str, str] = {}  # Real path -> folder claimed.
    self.broken_links: list[str] = []
    self.bad_names: list[str] = []
    self.other_files: list[str] = []  # Not of an image extension.

  def subfolders(self, path: str) -> list[str]:
    """Visible subfolder names of `path`: class or split folders.

    A symlinked folder must point outside the dataset and not at a folder
    holding it; broken symlinks are skipped and counted.
    """
    names = []
    for name in sorted(os.listdir(path)):
      if name.startswith('.'):
        continue
      full = os.path.join(path, name)
      if os.path.islink(full) and not os.path.exists(full):
        self.broken_links.append(full)
        continue
      if not os.path.isdir(full):
        continue  # Loose files next to class folders are not images of any.
      if not _is_utf8(name):
        raise DataError(
            f'Folder {_shown(full)} has a name that is not valid UTF-8, so it'
            ' cannot name a class; rename it (e.g. with convmv) or move it'
            ' out of the dataset.'
        )
      if os.path.islink(full):
        real = os.path.realpath(full)
        if _is_within(real, self.real_root):
          raise DataError(
              f'{full} is a symlink to {real}, inside the dataset {self.root}:'
              ' its images would be read twice, as another class or split.'
              ' Remove the symlink, or replace it with a real folder of its'
              ' own images.'
          )
        if _is_within(self.real_root, real):
          raise DataError(
              f'{full} is a symlink to {real}, which holds the dataset'
              f' {self.root} itself (a loop). Remove the symlink.'
          )
      names.append(name)
    return names

  def claim(self, folder: str, *, nested_too: bool) -> None:
    """Records a folder read as a class (or split); refuses to read it twice.

    Args:
      folder: the class or split folder.
      nested_too: also refuse a folder inside or around one already claimed
        (class folders: os.walk reads everything below them).
    """
    real = os.path.realpath(folder)
    for other_real, other in self.read_folders.items():
      if real == other_real or nested_too and (
          _is_within(real, other_real) or _is_within(other_real, real)):
        how = (f'both {real}' if real == other_real else
               f'{real} and {other_real}, one inside the other')
        raise DataError(
            f'{folder} and {other} are, through a symlink, the same images'
            f' ({how}): they would be read twice. Remove the symlink.'
        )
    self.read_folders[real] = folder

  def class_images(self, class_dir: str) -> list[str]:
    """Image paths (relative to the root) under a class folder, sorted."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
      for name in sorted(filenames):
        if name.startswith('.'):
          continue
        full = os.path.join(dirpath, name)
        if not name.lower().endswith(IMAGE_EXTENSIONS):
          self.other_files.append(full)
          continue
        if not _is_utf8(full):
          self.bad_names.append(full)
        elif os.path.islink(full) and not os.path.exists(full):
          self.broken_links.append(full)
        else:
          paths.append(os.path.relpath(full, self.root))
    return paths

  def notes(self) -> tuple[str, ...]:
    """One sentence per kind of skipped file; each is also logged."""
    notes = []
    if self.broken_links:
      notes.append(
          f'Skipped {len(self.broken_links)} broken symlink(s) under'
          f' {_shown(self.root)} (e.g. {_shown(self.broken_links[0])}); fix or'
          ' remove them.'
      )
    if self.bad_names:
      notes.append(
          f'Skipped {len(self.bad_names)} image file(s) under'
          f' {_shown(self.root)} whose path is not valid UTF-8 (e.g.'
          f' {_shown(self.bad_names[0])}); rename them to use them.'
      )
    if self.other_files:
      counts = collections.Counter(
          os.path.splitext(f)[1].lower() or '(none)' for f in self.other_files)
      shown = ', '.join(f'{ext}: {n}' for ext, n in sorted(counts.items()))
      notes.append(
          f'Skipped {len(self.other_files)} file(s) under {_shown(self.root)}'
          f' whose extension is not an image format read here ({shown}; e.g.'
          f' {_shown(self.other_files[0])}); images are'
          f' {", ".join(IMAGE_EXTENSIONS)} files.'
      )
    for note in notes:
      logging.warning('%s', note)
    return tuple(notes)


def _has_subfolders(path: str) -> bool:
  with os.scandir(path) as entries:
    return any(not e.name.startswith('.') and e.is_dir() for e in entries)


def _split_dirs(root: str, top: list[str]) -> dict[str, str]:
  """Split name -> folder; {'train': root} when root holds class folders."""
  split_named = [d for d in top if d.lower() in SPLIT_FOLDERS]
  stray = [d for d in top if d.lower() not in SPLIT_FOLDERS]
  if not split_named:
    return {'train': root}
  if stray:
    # A flat dataset may have a class named 'train' or 'test', of images;
    # a split folder holds class folders.
    if not any(_has_subfolders(os.path.join(root, d)) for d in split_named):
      return {'train': root}
    example = next((d for d in split_named if d.lower() == 'train'),
                   split_named[0])
    raise DataError(
        f'Image folder {root} mixes split folders'
        f' ({", ".join(d + "/" for d in split_named)}) with other folders:'
        f' {", ".join(os.path.join(root, d) for d in stray)}. Inside a split'
        ' layout every top folder must be train/, validation/ (or val/) or'
        f' test/: move {stray[0]}/ into the split folders as a class (e.g.'
        f' {example}/{stray[0]}/) or out of {root}. If the folder has'
        ' no splits, rename the class folders named like splits.'
    )
  split_dirs = {SPLIT_FOLDERS[d.lower()]: os.path.join(root, d) for d in top}
  if len(split_dirs) < len(top):
    raise DataError(
        f'Image folder {root} has both val/ and validation/; keep one.'
    )
  return split_dirs


def scan_folder(root: str) -> FolderLayout:
  """Lists the images of a folder dataset and checks its layout.

  Args:
    root: the dataset's root folder.

  Returns:
    The FolderLayout; its notes say what was skipped (see the module
    docstring).

  Raises:
    DataError: missing or empty root, a class folder without images, fewer
      than two classes, split folders mixed with other folders, a symlinked
      folder that points into the dataset or reads a folder twice.
  """
  root = os.path.abspath(os.path.expanduser(root))
  if not _is_utf8(root):
    raise DataError(
        f'Image folder {_shown(root)}: the path is not valid UTF-8; rename it'
        ' or link it under a UTF-8 name.'
    )
  if not os.path.isdir(root):
    raise DataError(
        f'Image folder {root} does not exist. Give folder:/path/to/root, where'
        ' root holds one subfolder of images (PNG, JPEG, ...) per class.'
    )
  scan = _Scan(root)
  top = scan.subfolders(root)
  if not top:
    raise DataError(
        f'Image folder {root} has no class subfolders. Put each class in its'
        ' own subfolder (root/<class>/*.png), optionally under train/,'
        ' validation/ and test/.'
    )
  split_dirs = _split_dirs(root, top)
  if split_dirs != {'train': root}:
    for split_dir in split_dirs.values():
      scan.claim(split_dir, nested_too=False)
    scan.read_folders = {}  # Class folders lie inside split folders.
  per_split = {}
  for split, split_dir in split_dirs.items():
    classes = scan.subfolders(split_dir) if split_dir != root else top
    if not classes:
      raise DataError(
          f'{split_dir} has no class subfolders; put each class in its own'
          ' subfolder of images (PNG, JPEG, ...).'
      )
    per_split[split] = {}
    for name in classes:
      scan.claim(os.path.join(split_dir, name), nested_too=True)
      images = scan.class_images(os.path.join(split_dir, name))
      if not images:
        raise DataError(
            f'Class folder {os.path.join(split_dir, name)} holds no images'
            f' ({", ".join(IMAGE_EXTENSIONS)}); add images or remove the'
            ' folder.'
        )
      per_split[split][name] = images
  class_names = tuple(sorted({c for s in per_split.values() for c in s}))
  if len(class_names) < 2:
    where = ('in each split folder (root/train/<class>/*.png, ...)'
             if split_dirs != {'train': root} else '(root/<class>/*.png)')
    raise DataError(
        f'Image folder {root} has a single class, {class_names[0]!r}: a'
        ' classifier needs at least two (with one, every prediction is right).'
        f' Add a subfolder of images for each other class {where}.'
    )
  label_of = {name: i for i, name in enumerate(class_names)}
  h = hashlib.sha256(root.encode())
  splits, sizes = {}, {}
  for split in sorted(per_split):
    examples = sorted(
        (path, label_of[name])
        for name, paths in per_split[split].items() for path in paths
    )
    split_sizes = []
    for path, label in examples:
      st = os.stat(os.path.join(root, path))
      h.update(
          f'{split}/{path}:{label}:{st.st_size}:{st.st_mtime_ns};'.encode())
      split_sizes.append(st.st_size)
    splits[split] = tuple(examples)
    sizes[split] = tuple(split_sizes)
  return FolderLayout(
      root=root, class_names=class_names, splits=splits,
      fingerprint=h.hexdigest()[:16], notes=scan.notes(), sizes=sizes,
  )


@dataclasses.dataclass(frozen=True, eq=False)
class SplitFiles:
  """The image files of one split of a folder; record i is file i.

  Attributes:
    root: the folder's root.
    examples: (path relative to root, label) per record.
    sizes: int64 [N], each file's size in bytes when the folder was scanned.
  """

  root: str
  examples: tuple[tuple[str, int], ...]
  sizes: np.ndarray

  def path(self, record: int) -> str:
    """The absolute path of a record's file."""
    return os.path.join(self.root, self.examples[record][0])


def split_files(layout: FolderLayout, split: str) -> SplitFiles:
  """The files of a split of a scanned folder, in record order.

  Args:
    layout: the scanned folder.
    split: a split of the layout.

  Returns:
    The SplitFiles; record i of the prepared split is its file i.
  """
  examples = layout.splits.get(split, ())
  sizes = layout.sizes.get(split)
  if sizes is None:  # A layout made without sizes.
    sizes = [os.stat(os.path.join(layout.root, path)).st_size
             for path, _ in examples]
  return SplitFiles(layout.root, examples, np.asarray(sizes, np.int64))


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
