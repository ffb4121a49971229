"""TFDS catalog names: the fallback kind, for any string no other kind takes.

A catalog name ('mnist', 'svhn_cropped', 'emnist/letters', ...) is read from
the data dir when prepared as array_record, else prepared there (which needs
TensorFlow and network access). 'mnist' and 'fashion_mnist' fall back to
local IDX files when not prepared, and, without TensorFlow, to their IDX
files fetched from TFDS's own URLs (checked against TFDS's records).
"""

import difflib
import hashlib
import importlib.util
import os
import socket
import urllib.error
import urllib.request

import tensorflow_datasets as tfds

from l2tl_jax import atomic
from l2tl_jax.data import builders
from l2tl_jax.data import registry
from l2tl_jax.data import sources
from l2tl_jax.data.errors import DataError
from l2tl_jax.data.kinds import idx as idx_kind

# Local IDX copies used for these catalog names when they are not prepared.
IDX_FALLBACK_DIRS = {
    'fashion_mnist': ('/usr/share/datasets/fashion-mnist',),
    'mnist': ('/usr/share/datasets/mnist',),
}
# Catalog datasets whose raw files are MNIST-format IDX files: online and
# without TensorFlow (a Colab TPU runtime) they are fetched from TFDS's own
# URLs, checked against TFDS's recorded sizes and SHA-256, and read by the
# built-in `idx` builder.
IDX_DOWNLOADABLE = ('fashion_mnist', 'mnist')
def idx_urls(base: str) -> list[tuple[str, int, str]]:
  """(url, size, sha256) of `base`'s four IDX files, from TFDS's records."""
  path = os.path.join(os.path.dirname(tfds.__file__), 'url_checksums',
                      f'{base}.txt')
  rows = []
  with open(path) as f:
    for line in f:
      if line.strip():
        url, size, sha256 = line.split('\t')[:3]
        rows.append((url, int(size), sha256))
  return rows


def download_idx(base: str, data_dir: str) -> str:
  """Fetches `base`'s IDX files into data_dir/downloads/idx/<base>.

  Each file is written to a temporary name, checked (size and SHA-256 as
  TFDS records them) and only then renamed into place (atomic.writer, with
  the umask); files already there and intact are kept. Returns the directory.

  Raises:
    DataError: a file could not be fetched, or its bytes are not the
      recorded ones (nothing is left behind under its name).
  """
  directory = os.path.join(data_dir, 'downloads', 'idx', base)
  os.makedirs(directory, exist_ok=True)
  for url, size, sha256 in idx_urls(base):
    target = os.path.join(directory, url.rsplit('/', 1)[-1])
    if os.path.exists(target) and _sha256(target) == sha256:
      continue
    try:
      with atomic.writer(target, 'wb', prefix='.part-') as out, \
          urllib.request.urlopen(url, timeout=60) as response:
        digest, got_size = hashlib.sha256(), 0
        while chunk := response.read(1 << 20):
          out.write(chunk)
          digest.update(chunk)
          got_size += len(chunk)
        got_sha = digest.hexdigest()
        if (got_size, got_sha) != (size, sha256):
          # Raised inside the writer: the temporary file is removed.
          raise DataError(
              f'{url} gave {got_size} bytes with SHA-256 {got_sha[:12]}...,'
              f' not the {size} bytes {sha256[:12]}... TFDS records; nothing'
              ' was kept. Retry, or prepare the dataset elsewhere.')
    except (urllib.error.URLError, OSError) as e:
      raise DataError(
          f'Fetching {url} for {base!r} failed: {e}. Check network access,'
          f' or put the four IDX files in {directory}.') from e
  return directory


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


def _tensorflow_available() -> bool:
  return importlib.util.find_spec('tensorflow') is not None


def _network_reachable(host: str = 'storage.googleapis.com') -> bool:
  try:
    with socket.create_connection((host, 443), timeout=3):
      return True
  except OSError:
    return False


def _open(name: str, argument: str, *, data_dir: str,
          download: bool) -> sources.Dataset:
  del argument  # The whole name.
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    close = difflib.get_close_matches(
        name, list(tfds.list_builders(with_community_datasets=False))
        + [n for k in registry.kinds() for n in k.names], n=3,
    )
    hint = f' Did you mean {close}?' if close else ''
    raise DataError(
        f'Unknown dataset {name!r}: not a TFDS catalog name nor a built-in'
        f' ({", ".join(registry.examples())}).{hint}'
    ) from e
  except Exception as e:
    raise DataError(f'Cannot open TFDS dataset {name!r}: {e}') from e

  base = name.split(':')[0].split('/')[0]
  idx_fallback = [
      d for d in IDX_FALLBACK_DIRS.get(base, ()) if os.path.isdir(d)]

  if builder.is_prepared():
    formats = builder.info.available_file_formats()
    random_access = set(tfds.core.file_adapters.FileFormat.with_random_access())
    if formats & random_access:
      return sources.from_builder(name, builder, f'tfds:{builder.data_dir}')
    if idx_fallback:
      return idx_kind.open_idx(name, idx_fallback[0], data_dir)
    raise DataError(
        f'TFDS dataset {name!r} is prepared in {builder.data_dir} as'
        f' {sorted(str(f) for f in formats)}, but reading without TensorFlow'
        ' needs array_record. Rebuild it with `tfds build'
        f' {name} --file_format=array_record --data_dir=...` (needs'
        ' TensorFlow) or point data_dir at an array_record copy.'
    )

  # A builder that reads without being prepared (tfds.testing.mock_data) is
  # used as it is.
  try:
    builder.as_data_source(split='train')
  except Exception:  # Not prepared: fall through to the alternatives.
    pass
  else:
    return sources.from_builder(name, builder, f'tfds:{name} (unprepared)',
                            cache=False)

  if idx_fallback:
    return idx_kind.open_idx(name, idx_fallback[0], data_dir)

  where = f'in {builder.data_dir}'
  if not download:
    raise DataError(
        f'TFDS dataset {name!r} is not prepared {where} and download=False.'
        ' Set download=True on a machine with TensorFlow and network access,'
        f' or run `tfds build {name} --file_format=array_record'
        f' --data_dir={data_dir}`, or use an offline dataset'
        f' ({", ".join(registry.examples())}).'
    )
  if not _tensorflow_available() and base in IDX_DOWNLOADABLE:
    # Without TensorFlow TFDS cannot prepare it, but its raw files are IDX.
    return idx_kind.open_idx(name, download_idx(base, data_dir), data_dir)
  if not _tensorflow_available():
    raise DataError(
        f'TFDS dataset {name!r} is not prepared {where}, and preparing it'
        ' needs TensorFlow, which is not installed (and network access).'
        f' Prepare it elsewhere with `tfds build {name}'
        ' --file_format=array_record` and copy it into the data dir, or use an'
        f' offline dataset ({", ".join(registry.examples())}).'
    )
  if not _network_reachable():
    raise DataError(
        f'TFDS dataset {name!r} is not prepared {where} and there is no'
        ' network to download it. Copy a prepared array_record copy into the'
        ' data dir, or use an offline dataset'
        f' ({", ".join(registry.examples())}).'
    )
  try:
    with builders.quiet_preparation(name):
      builder.download_and_prepare(file_format='array_record')
  except Exception as e:
    raise DataError(
        f'Preparing TFDS dataset {name!r} {where} failed: {e}. Check network'
        ' access and any manual download the dataset needs.'
    ) from e
  builder = tfds.builder(name, data_dir=data_dir)
  return sources.from_builder(name, builder, f'tfds:{builder.data_dir}')


KIND = registry.register(registry.Kind(name='catalog', open=_open))
