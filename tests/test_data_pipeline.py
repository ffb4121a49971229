"""Batches: determinism, epochs, exact resume, evaluation masks, placement."""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import pytest

from conftest_data import base_config, make_idx_dir, small_idx_task, tfds_dir  # pylint: disable=unused-import
from l2tl_jax import data
from l2tl_jax.data import pipeline
from l2tl_jax.data.errors import DataError


@pytest.fixture(scope='module')
def per_record_task(tmp_path_factory, tfds_dir):
  directory, _ = make_idx_dir(str(tmp_path_factory.mktemp('idx_small')))
  config = base_config(
      tfds_dir, source=f'idx:{directory}', target=f'idx:{directory}',
      target_classes=None, target_train_per_class=5,
      target_val_per_class=2, target_test_per_class=None,
      in_memory_max_bytes=0)
  return data.build_task(config)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_batches_have_the_promised_shapes_and_range(task):
  batch = next(data.train_iterator(task.src_train, batch_size=16, seed=0))
  chex.assert_shape(batch['image'], (16, 32, 32, 1))
  chex.assert_shape(batch['label'], (16,))
  assert batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32
  chex.assert_tree_all_finite(batch['image'])
  assert batch['image'].min() >= 0.0 and batch['image'].max() <= 1.0


def test_same_seed_same_batches_other_seed_other_batches(task):
  a = _take(data.train_iterator(task.src_train, batch_size=8, seed=5), 12)
  b = _take(data.train_iterator(task.src_train, batch_size=8, seed=5), 12)
  c = _take(data.train_iterator(task.src_train, batch_size=8, seed=6), 12)
  chex.assert_trees_all_equal(a, b)
  assert not all(np.array_equal(x['label'], y['label']) and
                 np.array_equal(x['image'], y['image'])
                 for x, y in zip(a, c))


def test_batches_are_the_examples_at_the_drawn_positions(task):
  split = task.src_train
  positions = pipeline._EpochBatches(len(split), 8, 0,
                                     pipeline._stream_id(split), True)
  it = data.train_iterator(split, batch_size=8, seed=0)
  for i in range(7):
    expected = split.get(positions[i])
    batch = next(it)
    np.testing.assert_array_equal(batch['label'], expected['label'])
    np.testing.assert_allclose(
        batch['image'], expected['image'] / 255.0, rtol=1e-6)


def test_epochs_without_drop_remainder_see_every_example_once():
  positions = pipeline._EpochBatches(40, 16, 3, 0, drop_remainder=False)
  flat = np.concatenate([positions[i] for i in range(5)])  # 80 = 2 epochs.
  np.testing.assert_array_equal(np.sort(flat[:40]), np.arange(40))
  np.testing.assert_array_equal(np.sort(flat[40:]), np.arange(40))
  assert not np.array_equal(flat[:40], flat[40:])  # Reshuffled.


def test_epochs_with_drop_remainder_stay_within_an_epoch():
  positions = pipeline._EpochBatches(40, 16, 3, 0, drop_remainder=True)
  epoch0 = np.concatenate([positions[0], positions[1]])
  epoch1 = np.concatenate([positions[2], positions[3]])
  assert len(set(epoch0.tolist())) == 32 and len(set(epoch1.tolist())) == 32
  assert set(epoch0.tolist()) != set(epoch1.tolist())


def test_split_smaller_than_a_batch(task):
  assert len(task.tgt_train) == 20
  with pytest.raises(DataError, match='fewer than batch_size=32.*'
                     'drop_remainder=False'):
    data.train_iterator(task.tgt_train, batch_size=32, seed=0)
  batch = next(data.train_iterator(task.tgt_train, batch_size=32, seed=0,
                                   drop_remainder=False))
  chex.assert_shape(batch['label'], (32,))


@pytest.mark.parametrize('augment', [False, True])
def test_resume_continues_with_exactly_the_next_batches(task, augment):
  it = data.train_iterator(task.src_train, batch_size=8, seed=1,
                           augment=augment)
  _take(it, 7)
  state = json.loads(json.dumps(it.get_state()))
  expected = _take(it, 10)
  resumed = data.train_iterator(task.src_train, batch_size=8, seed=1,
                                augment=augment)
  resumed.set_state(state)
  chex.assert_trees_all_equal(_take(resumed, 10), expected)


def test_joint_iterator_resume(task):
  def make():
    return data.joint_iterator({
        'src': data.train_iterator(task.src_train, batch_size=16, seed=0),
        'tgt': data.train_iterator(task.tgt_train, batch_size=8, seed=0,
                                   augment=True),
        'val': data.train_iterator(task.tgt_val, batch_size=4, seed=0),
    })

  it = make()
  first = next(it)
  assert set(first) == {'src', 'tgt', 'val'}
  chex.assert_shape(first['val']['image'], (4, 32, 32, 1))
  _take(it, 4)
  state = json.loads(json.dumps(it.get_state()))
  expected = _take(it, 6)
  resumed = make()
  resumed.set_state(state)
  chex.assert_trees_all_equal(_take(resumed, 6), expected)
  with pytest.raises(DataError, match='same streams'):
    resumed.set_state({'src': state['src']})


def test_per_record_split_resumes_and_matches_in_memory(task, per_record_task):
  assert not per_record_task.src_train.in_memory
  it = data.train_iterator(per_record_task.src_train, batch_size=8, seed=2)
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 5)
  resumed = data.train_iterator(per_record_task.src_train, batch_size=8,
                                seed=2)
  resumed.set_state(state)
  chex.assert_trees_all_equal(_take(resumed, 5), expected)
  in_memory = data.train_iterator(task.src_train, batch_size=8, seed=2)
  chex.assert_trees_all_equal(_take(in_memory, 8)[3:], expected)


@pytest.mark.parametrize('augment', [False, True])
def test_reader_threads_do_not_change_the_batches(per_record_task, augment):
  """config.data.read_threads only sets how many threads decode."""
  split = per_record_task.src_train
  batches = [_take(data.train_iterator(split, batch_size=8, seed=2,
                                       augment=augment, num_threads=n), 4)
             for n in (0, 1, 3)]
  chex.assert_trees_all_equal(batches[0], batches[1])
  chex.assert_trees_all_equal(batches[0], batches[2])
  # A stream read with 3 threads resumes one read with none.
  it = data.train_iterator(split, batch_size=8, seed=2, num_threads=3)
  _take(it, 2)
  resumed = data.train_iterator(split, batch_size=8, seed=2, num_threads=0)
  resumed.set_state(it.get_state())
  chex.assert_trees_all_equal(_take(resumed, 2), _take(it, 2))


def test_state_from_other_settings_is_refused(task):
  state = data.train_iterator(task.src_train, batch_size=8, seed=0).get_state()
  other = data.train_iterator(task.src_train, batch_size=16, seed=0)
  with pytest.raises(DataError, match='batch_size=8'):
    other.set_state(state)


def test_eval_batches_pad_the_last_batch_and_mask_it(task):
  split = task.tgt_test  # 20 test examples - 8 for validation = 12.
  assert len(split) == 12
  batches = list(data.eval_batches(split, batch_size=5))
  assert len(batches) == data.num_eval_batches(split, batch_size=5) == 3
  for b in batches:
    chex.assert_shape([b['image'], b['label'], b['mask']],
                      [(5, 32, 32, 1), (5,), (5,)])
    assert b['mask'].dtype == np.float32
  np.testing.assert_array_equal(batches[-1]['mask'], [1, 1, 0, 0, 0])
  assert batches[-1]['image'][2:].max() == 0
  mask = np.concatenate([b['mask'] for b in batches]).astype(bool)
  labels = np.concatenate([b['label'] for b in batches])[mask]
  images = np.concatenate([b['image'] for b in batches])[mask]
  np.testing.assert_array_equal(labels, split.labels)
  np.testing.assert_allclose(
      images, split.get(np.arange(12))['image'] / 255.0, rtol=1e-6)
  # Accuracy with the mask counts real examples only.
  correct = np.concatenate([b['label'] == 0 for b in batches])
  assert (correct * mask).sum() / mask.sum() == np.mean(split.labels == 0)


def test_shard_batch_on_the_local_devices(task):
  batch = next(data.train_iterator(task.src_train, batch_size=8, seed=0))
  mesh = data.make_data_mesh()
  placed = data.shard_batch(batch, mesh)
  assert isinstance(placed['image'], jax.Array)
  assert placed['image'].sharding == data.data_sharding(mesh)
  chex.assert_trees_all_equal(jax.device_get(placed), batch)
  again = data.shard_batch(batch, data.data_sharding(mesh))
  chex.assert_trees_all_equal(jax.device_get(again), batch)


def test_split_for_pmap():
  batch = {'image': np.zeros((8, 4, 4, 1)), 'label': np.arange(8)}
  out = data.split_for_pmap(batch, num_devices=2)
  chex.assert_shape([out['image'], out['label']], [(2, 4, 4, 4, 1), (2, 4)])
  np.testing.assert_array_equal(out['label'][1], [4, 5, 6, 7])
  with pytest.raises(DataError, match='divisible by 3'):
    data.split_for_pmap(batch, num_devices=3)


@pytest.mark.slow  # Starts a Python subprocess.
def test_shard_batch_over_two_devices_in_a_subprocess():
  code = textwrap.dedent("""
      import numpy as np, jax
      from l2tl_jax import data
      assert jax.device_count() == 2
      batch = {'image': np.arange(8 * 3, dtype=np.float32).reshape(8, 3),
               'label': np.arange(8, dtype=np.int32)}
      placed = data.shard_batch(batch, data.make_data_mesh())
      shards = sorted(placed['label'].addressable_shards,
                      key=lambda s: s.device.id)
      assert [s.data.tolist() for s in shards] == [[0, 1, 2, 3], [4, 5, 6, 7]]
      try:
        data.shard_batch({'label': np.arange(5)}, data.make_data_mesh())
      except data.DataError as e:
        assert 'divisible by 2' in str(e)
      else:
        raise AssertionError('no error')
      print('ok')
  """)
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().endswith('ok')


def test_prefetch_to_device_keeps_order_and_resumes(task):
  def make():
    return data.train_iterator(task.src_train, batch_size=8, seed=4)

  host = _take(make(), 9)
  prefetched = data.prefetch_to_device(make(), size=3)
  got = [jax.device_get(next(prefetched)) for _ in range(4)]
  chex.assert_trees_all_equal(got, host[:4])
  state = prefetched.get_state()
  assert state['position'] == {'next_index': 4}
  prefetched.close()
  resumed = data.prefetch_to_device(make(), size=2)
  resumed.set_state(state)
  got = [jax.device_get(next(resumed)) for _ in range(5)]
  chex.assert_trees_all_equal(got, host[4:])
  resumed.close()
