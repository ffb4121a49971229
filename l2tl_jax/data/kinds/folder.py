"""A folder of class subfolders of images: 'folder:/dir' (see folder.py).

The encoded files are prepared once into the data dir per content
fingerprint (builders.ImageFolder) and decoded per record; record i of a
split is the layout's i-th file, which overlap.py compares by bytes.
"""

import functools

from l2tl_jax.data import builders
from l2tl_jax.data import folder as folder_lib
from l2tl_jax.data import registry
from l2tl_jax.data import sources
from l2tl_jax.data.errors import DataError


def _open(name: str, argument: str, *, data_dir: str,
          download: bool) -> sources.Dataset:
  del download  # Local files.
  if not argument:
    raise DataError(
        "folder: needs a path, e.g. 'folder:/data/my_images' (one subfolder"
        ' per class).'
    )
  config = builders.image_folder_config(argument)
  builder = builders.ImageFolder(
      data_dir=data_dir, config=config, file_format='array_record'
  )
  if not builder.is_prepared():
    folder_lib.check_images(config.layout)
    builder = builders.prepare(
        builders.ImageFolder, data_dir=data_dir, config=config
    )
  builders.remove_stale_configs(
      builder, builders.config_prefix(config.layout.root))
  dataset = sources.from_builder(
      name, builder, f'folder:{config.layout.root}', encoded=True,
      notes=config.layout.notes,
  )
  # Record i of a split is the layout's i-th file (the builder keeps order).
  dataset.files = functools.partial(folder_lib.split_files, config.layout)
  return dataset


def _data_dirs(name: str, argument: str) -> list[tuple[str, str]]:
  return [(name, argument)] if argument else []


KIND = registry.register(registry.Kind(
    name='folder', open=_open, prefix='folder:', examples=('folder:/dir',),
    data_dirs=_data_dirs))
