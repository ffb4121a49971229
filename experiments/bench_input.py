r"""Measures the input path: images/s of the joint L2TL iterator.

    python -m experiments.bench_input --outer_steps_per_s=100

Builds a Fashion-MNIST task from local IDX files (source: all of train;
target: five classes of train with a validation split carved from test), then
times the joint iterator at the reference batch sizes (16 source, 8 target,
32 validation) on the host, with every batch placed on the devices in the
calling thread (shard_batch), and placed ahead in a thread (prefetch_to_device).
An L2TL outer step consumes one joint batch, so the host rate divided by
(outer_steps_per_s * images per step) says how many times faster than the
step the input path is.
"""

import time

from absl import app
from absl import flags
import jax

from l2tl_jax import data

_DATASET = flags.DEFINE_string('dataset', 'idx', 'Dataset string to read.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'TFDS data dir (None: the TFDS default).')
_SRC_BATCH = flags.DEFINE_integer('src_batch', 16, 'Source batch size.')
_TGT_BATCH = flags.DEFINE_integer('tgt_batch', 8, 'Target batch size.')
_VAL_BATCH = flags.DEFINE_integer('val_batch', 32, 'Validation batch size.')
_STEPS = flags.DEFINE_integer('steps', 20000, 'Joint batches to time.')
_AUGMENT = flags.DEFINE_bool('augment', False, 'Augment the train streams.')
_OUTER_STEPS_PER_S = flags.DEFINE_float(
    'outer_steps_per_s', 100.0,
    'Outer L2TL steps per second the trainer runs at.')


def _time_steps(step_fn, steps: int) -> float:
  for _ in range(100):  # Warm-up: first permutations, first placements.
    step_fn()
  start = time.perf_counter()
  for _ in range(steps):
    step_fn()
  return time.perf_counter() - start


def main(argv):
  del argv
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
  app.run(main)
