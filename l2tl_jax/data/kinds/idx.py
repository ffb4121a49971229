"""MNIST-format IDX files in a directory: 'idx' or 'idx:/dir'.

'idx' alone reads Fashion-MNIST from Debian's dataset-fashion-mnist
(idx.DEFAULT_IDX_DIR). The directory is prepared once into the data dir per
content fingerprint (builders.Idx); copies of its older contents are removed.
"""

from l2tl_jax.data import builders
from l2tl_jax.data import idx as idx_lib
from l2tl_jax.data import registry
from l2tl_jax.data import sources


def open_idx(name: str, directory: str, data_dir: str) -> sources.Dataset:
  """Opens the IDX files of a directory as the dataset `name`.

  Args:
    name: the dataset string (also a catalog name read from IDX files).
    directory: the directory of the files.
    data_dir: TFDS data dir the prepared copy goes to.

  Returns:
    The Dataset; `resolved` is 'idx:<absolute directory>'.
  """
  config = builders.idx_config(directory)
  builder = builders.prepare(builders.Idx, data_dir=data_dir, config=config)
  builders.remove_stale_configs(
      builder, builders.config_prefix(config.files.directory))
  return sources.from_builder(name, builder, f'idx:{config.files.directory}')


def _open(name: str, argument: str, *, data_dir: str,
          download: bool) -> sources.Dataset:
  del download  # Local files.
  return open_idx(name, argument or idx_lib.DEFAULT_IDX_DIR, data_dir)


def _data_dirs(name: str, argument: str) -> list[tuple[str, str]]:
  return [(name, argument or idx_lib.DEFAULT_IDX_DIR)]


KIND = registry.register(registry.Kind(
    name='idx', open=_open, names=('idx',), prefix='idx:',
    examples=('idx', 'idx:/dir'), data_dirs=_data_dirs))
