r"""Measures the input path: images/s of the joint L2TL iterator, or of a
folder of JPEG photographs decoded and cropped at 224 px.

    python -m experiments.bench_input --outer_steps_per_s=100
    python -m experiments.bench_input --jpegs=800 [--jpeg_threads=1,2,8] \
        [--consumption=2000]

Builds a Fashion-MNIST task from local IDX files (source: all of train;
target: five classes of train with a validation split carved from test), then
times the joint iterator at the reference batch sizes (16 source, 8 target,
32 validation) on the host, with every batch placed on the devices in the
calling thread (shard_batch), and placed ahead in a thread (prefetch_to_device).
An L2TL outer step consumes one joint batch, so the host rate divided by
(outer_steps_per_s * images per step) says how many times faster than the
step the input path is.

With --jpegs=N it instead writes N photograph-like 500x375 JPEGs (smooth
random colour fields plus grain, quality 90, about 40 KB each; 10 classes)
to a temporary folder and times the ImageNet-scale path on it: a `folder:`
source read per record (never held in memory), each JPEG decoded and
resized to 256 on its shorter side (centre 256x256 stored), then a random
resized crop + flip to 224 and ImageNet normalisation, batches of
--jpeg_batch, with the decode/crop work in --jpeg_threads grain threads
(each count timed). One thread is one core's rate; the number of cores an
accelerator step needs is --consumption images/s over it.
"""

import os
import shutil
import sys
import tempfile
import time

from absl import flags
import jax
import numpy as np

from experiments import cli
from l2tl_jax import data

# Its own flag set: importable beside experiments.bench, whose flags share
# names (--steps).
FLAGS = flags.FlagValues()

_DATASET = flags.DEFINE_string('dataset', 'idx', 'Dataset string to read.',
                               flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'TFDS data dir (None: the TFDS default).',
    flag_values=FLAGS)
_SRC_BATCH = flags.DEFINE_integer('src_batch', 16, 'Source batch size.',
                                  lower_bound=1, flag_values=FLAGS)
_TGT_BATCH = flags.DEFINE_integer('tgt_batch', 8, 'Target batch size.',
                                  lower_bound=1, flag_values=FLAGS)
_VAL_BATCH = flags.DEFINE_integer('val_batch', 32, 'Validation batch size.',
                                  lower_bound=1, flag_values=FLAGS)
_STEPS = flags.DEFINE_integer('steps', 20000, 'Joint batches to time.',
                              lower_bound=1, flag_values=FLAGS)
_AUGMENT = flags.DEFINE_bool('augment', False, 'Augment the train streams.',
                             flag_values=FLAGS)
_JPEGS = flags.DEFINE_integer(
    'jpegs', 0, 'Time the 224 px JPEG path on this many generated photos '
    '(0: time the joint iterator instead).', lower_bound=0,
    flag_values=FLAGS)
_JPEG_THREADS = flags.DEFINE_list(
    'jpeg_threads', ['1', '2', '4'], 'Grain thread counts to time.',
    flag_values=FLAGS)
_JPEG_BATCH = flags.DEFINE_integer('jpeg_batch', 64, 'JPEG batch size.',
                                   lower_bound=1, flag_values=FLAGS)
_JPEG_BATCHES = flags.DEFINE_integer(
    'jpeg_batches', 10, 'JPEG batches timed per thread count.',
    lower_bound=1, flag_values=FLAGS)
_CONSUMPTION = flags.DEFINE_float(
    'consumption', 2000.0,
    'Images/s an accelerator step consumes (default: the flax ResNet-50 '
    'example on one TPU v3 chip, ~2,000 img/s).', flag_values=FLAGS)
_OUTER_STEPS_PER_S = flags.DEFINE_float(
    'outer_steps_per_s', 100.0,
    'Outer L2TL steps per second the trainer runs at.', flag_values=FLAGS)
flags.register_validator(
    'jpeg_threads',
    lambda values: bool(values) and all(
        v.strip().isdigit() and int(v) >= 1 for v in values),
    '--jpeg_threads must be a comma-separated list of integers >= 1',
    flag_values=FLAGS)
flags.register_validator('consumption', lambda value: value > 0,
                         '--consumption must be > 0', flag_values=FLAGS)
flags.register_validator('outer_steps_per_s', lambda value: value > 0,
                         '--outer_steps_per_s must be > 0', flag_values=FLAGS)


def _time_steps(step_fn, steps: int) -> float:
  for _ in range(100):  # Warm-up: first permutations, first placements.
    step_fn()
  start = time.perf_counter()
  for _ in range(steps):
    step_fn()
  return time.perf_counter() - start


def write_jpegs(root: str, count: int, *, classes: int = 10,
                size: tuple[int, int] = (500, 375), seed: int = 0) -> int:
  """Writes `count` photograph-like JPEGs under root/<class>/; their bytes."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rs = np.random.RandomState(seed)
  w, h = size
  total = 0
  for i in range(count):
    folder = os.path.join(root, f'class{i % classes:02d}')
    os.makedirs(folder, exist_ok=True)
    coarse = rs.rand(h // 25 + 1, w // 25 + 1, 3) * 255
    field = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize(
        (w, h), Image.BICUBIC), np.float32)
    pixels = np.clip(field + rs.normal(0, 6, field.shape), 0, 255)
    path = os.path.join(folder, f'{i:05d}.jpg')
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
    total += os.path.getsize(path)
  return total


def bench_jpegs(count: int, threads: list[int], *, batch_size: int,
                batches: int) -> list[tuple[int, float]]:
  """(threads, images/s) of the 224 px JPEG train path on `count` photos."""
  root = tempfile.mkdtemp(prefix='l2tl_jpegs_')
  data_dir = tempfile.mkdtemp(prefix='l2tl_jpegs_tfds_')  # The index.
  try:
    size = write_jpegs(root, count)
    print(f'{count} JPEGs 500x375 in {root}, {size / count / 1024:.0f} KB '
          'each on average')
    config = data.get_default_data_config()
    config.data_dir = data_dir
    config.source = config.target = f'folder:{root}'
    # One folder as source and target: a timing of the read path, not a task
    # (its splits share every photo).
    config.allow_overlap = True
    config.update(dict(
        source_test_split=None, target_classes=None, target_label_mod=None,
        target_train_per_class=2, target_val_split='train',
        target_val_per_class=2, target_test_split=None, channels=3,
        image_size=224, resize_size=256, normalization='imagenet',
        train_crop='random_resized_crop', eval_resize='resize_center_crop',
        in_memory_max_bytes=0))
    task = data.build_task(config)
    assert not task.src_train.in_memory
    rates = []
    for n in threads:
      it = data.train_iterator(task.src_train, batch_size=batch_size, seed=0,
                               augment=True, num_threads=n)
      next(it)  # Warm-up: threads started, first permutation drawn.
      start = time.perf_counter()
      for _ in range(batches):
        batch = next(it)
      rate = batches * batch_size / (time.perf_counter() - start)
      assert batch['image'].shape == (batch_size, 224, 224, 3)
      rates.append((n, rate))
    return rates
  finally:
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str]) -> None:
  """Parses `argv` (program name first) into FLAGS and measures.

  A bad flag or data setting exits with code 2 and one 'error: ...' line
  before anything is timed.
  """
  rest = cli.parse_flags(argv, FLAGS)
  if len(rest) > 1:
    cli.usage_error(f'Unexpected arguments: {rest[1:]}.')
  try:
    _measure()
  except cli.USER_ERRORS as e:
    cli.fail(str(e), 2)


def _measure() -> None:
  if _JPEGS.value:
    threads = [int(t) for t in _JPEG_THREADS.value]
    rates = bench_jpegs(_JPEGS.value, threads, batch_size=_JPEG_BATCH.value,
                        batches=_JPEG_BATCHES.value)
    cores = os.cpu_count()
    print(f'decode + random resized crop 224 + flip, batch '
          f'{_JPEG_BATCH.value}, on {cores} cores:')
    for n, rate in rates:
      print(f'  {n} thread(s): {rate:8.1f} images/s')
    one = dict(rates).get(1)
    if one:
      print(f'per core (1 thread): {one:.1f} images/s; a step consuming '
            f'{_CONSUMPTION.value:g} images/s needs about '
            f'{_CONSUMPTION.value / one:.0f} such cores')
    return
  config = data.get_default_data_config()
  config.data_dir = _DATA_DIR.value
  config.source = config.target = _DATASET.value
  config.source_test_split = None
  config.target_classes = (0, 1, 2, 3, 4)
  config.target_label_mod = None
  config.target_train_per_class = 60
  config.target_val_split = 'test'
  config.target_val_per_class = 600
  config.target_test_split = None
  start = time.perf_counter()
  task = data.build_task(config)
  build_s = time.perf_counter() - start

  def make_joint():
    return data.joint_iterator({
        'src': data.train_iterator(task.src_train, batch_size=_SRC_BATCH.value,
                                   seed=0, augment=_AUGMENT.value),
        'tgt': data.train_iterator(task.tgt_train, batch_size=_TGT_BATCH.value,
                                   seed=0, augment=_AUGMENT.value),
        'val': data.train_iterator(task.tgt_val, batch_size=_VAL_BATCH.value,
                                   seed=0),
    })

  per_step = _SRC_BATCH.value + _TGT_BATCH.value + _VAL_BATCH.value
  steps = _STEPS.value
  needed = _OUTER_STEPS_PER_S.value * per_step

  joint = make_joint()
  host_s = _time_steps(lambda: next(joint), steps)
  host_rate = steps * per_step / host_s

  mesh = data.make_data_mesh()
  joint = make_joint()
  device_s = _time_steps(
      lambda: jax.block_until_ready(data.shard_batch(next(joint), mesh)), steps)
  device_rate = steps * per_step / device_s

  prefetched = data.prefetch_to_device(make_joint(), mesh, size=2)
  prefetch_s = _time_steps(lambda: jax.block_until_ready(next(prefetched)),
                           steps)
  prefetched.close()
  prefetch_rate = steps * per_step / prefetch_s

  print(f'dataset: {_DATASET.value} -> {task.resolved[_DATASET.value]}')
  print(f'task built in {build_s:.2f} s; image shape {task.image_shape};'
        f' src_train {len(task.src_train)}, tgt_train {len(task.tgt_train)},'
        f' tgt_val {len(task.tgt_val)}')
  print(f'batches {_SRC_BATCH.value}/{_TGT_BATCH.value}/{_VAL_BATCH.value}'
        f' ({per_step} images per outer step), {steps} steps,'
        f' augment={_AUGMENT.value}, devices={jax.device_count()}'
        f' ({jax.devices()[0].platform})')
  print(f'host batches:        {host_rate:12,.0f} images/s'
        f' ({1e6 * host_s / steps:7.1f} us per joint batch)')
  print(f'+ shard_batch:       {device_rate:12,.0f} images/s'
        f' ({1e6 * device_s / steps:7.1f} us per joint batch)')
  print(f'prefetch_to_device:  {prefetch_rate:12,.0f} images/s'
        f' ({1e6 * prefetch_s / steps:7.1f} us per joint batch)')
  print(f'outer step consumes: {needed:12,.0f} images/s'
        f' at {_OUTER_STEPS_PER_S.value:g} steps/s')
  print(f'ratio: host {host_rate / needed:.1f}x, with shard_batch'
        f' {device_rate / needed:.1f}x, with prefetch_to_device'
        f' {prefetch_rate / needed:.1f}x')


if __name__ == '__main__':
  main(sys.argv)
