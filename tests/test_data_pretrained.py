"""Preprocessing for pretrained ImageNet weights, checked on tiny arrays:
normalisations, torchvision's resize / centre crop / RandomResizedCrop, the
family presets, photographs of every PNG mode, and unchanged defaults."""

import io
import json
import math
import os
import struct
import zlib

import chex
import numpy as np
from PIL import Image
import pytest

from conftest_data import (base_config, make_idx_dir,  # pylint: disable=unused-import
                           tfds_dir)
from l2tl_jax import data
from l2tl_jax.data import augment
from l2tl_jax.data import decode
from l2tl_jax.data import folder as folder_lib
from l2tl_jax.data import pipeline
from l2tl_jax.data import preprocess
from l2tl_jax.data import tasks
from l2tl_jax.data.errors import DataError


def _write_png16(path: str, array: np.ndarray) -> None:
  """Writes uint16 [H, W] or [H, W, 3] as a 16-bit gray / RGB PNG by hand
  (PIL writes no 16-bit RGB)."""
  a = np.asarray(array, np.uint16)
  a = a[..., None] if a.ndim == 2 else a
  h, w, c = a.shape
  raw = b''.join(b'\x00' + a[y].astype('>u2').tobytes() for y in range(h))

  def chunk(kind, body):
    crc = zlib.crc32(kind + body) & 0xffffffff
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', crc)

  header = struct.pack('>IIBBBBB', w, h, 16, {1: 0, 3: 2}[c], 0, 0, 0)
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
            + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def _palette_image(shape) -> Image.Image:
  image = Image.fromarray(np.indices(shape).sum(0).astype(np.uint8) % 2, 'P')
  image.putpalette([200, 10, 30, 5, 250, 100])  # Index 0 and 1.
  return image


# ----------------------------------------------------------- normalisation


def test_unit_normalisation_is_exactly_todays_scaling():
  images = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
  out = preprocess.normalize(images, 'unit')
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, preprocess.to_float(images))


def test_imagenet_normalisation_by_hand():
  # (0 - 0.485) / 0.229 = -2.1179; (1 - 0.456) / 0.224 = 2.4286;
  # (0.2 - 0.406) / 0.225 = -0.9156.
  pixels = np.array([[[0, 255, 51]]], np.uint8)
  out = preprocess.normalize(pixels, 'imagenet')
  assert out.dtype == np.float32
  chex.assert_trees_all_close(
      out, np.array([[[-2.117904, 2.428571, -0.915556]]], np.float32),
      atol=1e-5)
  # Every value, per channel, as the float formula gives it (the pipeline
  # looks the values up in a table).
  every = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
  mean = np.array([0.485, 0.456, 0.406], np.float32)
  std = np.array([0.229, 0.224, 0.225], np.float32)
  np.testing.assert_array_equal(
      preprocess.normalize(every, 'imagenet'),
      (every.astype(np.float32) / np.float32(255) - mean) / std)
  view = every[::-2]  # Strided, as a centre crop's view.
  np.testing.assert_array_equal(
      preprocess.normalize(view, 'imagenet'),
      preprocess.normalize(np.ascontiguousarray(view), 'imagenet'))
  with pytest.raises(DataError, match='channels=3'):
    preprocess.normalize(np.zeros((2, 2, 1), np.uint8), 'imagenet')


def test_bit_normalisation_by_hand():
  # x / 127.5 - 1: 0 -> -1, 51 -> -0.6, 127 -> -1/255, 255 -> 1.
  out = preprocess.normalize(np.array([0, 51, 127, 255], np.uint8), 'bit')
  assert out.dtype == np.float32
  chex.assert_trees_all_close(
      out, np.array([-1.0, -0.6, -1 / 255, 1.0], np.float32), atol=1e-6)
  assert out[0] == -1.0 and out[-1] == 1.0
  with pytest.raises(DataError, match='Unknown normalization'):
    preprocess.normalize(np.zeros(2, np.uint8), 'caffe')


# ------------------------------------------------------- geometry by hand


def test_center_crop_of_a_4x6_image_takes_torchvisions_offsets():
  image = np.arange(24, dtype=np.uint8).reshape(4, 6, 1)
  # round((4 - 2) / 2) = 1, round((6 - 2) / 2) = 2.
  np.testing.assert_array_equal(
      preprocess.center_crop(image, 2)[..., 0], [[8, 9], [14, 15]])
  # Halves round to even, as Python's round in torchvision: 5x5 -> 2x2 has
  # offset round(1.5) = 2, 3x3 -> 2x2 round(0.5) = 0.
  five = np.arange(25).reshape(5, 5, 1)
  assert preprocess.center_crop(five, 2)[0, 0, 0] == 12
  assert preprocess.center_crop(np.arange(9).reshape(3, 3, 1), 2)[0, 0, 0] == 0
  # Already the shorter side: resize 4 keeps the image, the crop as above.
  np.testing.assert_array_equal(
      preprocess.resize_center_crop(image, 4, 2)[..., 0], [[8, 9], [14, 15]])


def test_resize_then_centre_crop_a_4x6_image_by_hand_and_by_pil():
  row = np.array([0, 0, 80, 160, 240, 240], np.uint8)
  image = np.repeat(np.tile(row, (4, 1))[..., None], 3, axis=-1)  # [4, 6, 3]
  # Shorter side 4 -> 2, longer int(2 * 6 / 4) = 3: columns shrink by 2 with
  # a triangle filter of support 2. Output column 0 (centre at input 1.0)
  # weighs inputs 0, 1, 2 by 3/7, 3/7, 1/7: 80 / 7 = 11.4; column 1 (centre
  # 3.0) weighs inputs 1..4 by 1/8, 3/8, 3/8, 1/8: 120. The crop of 2 from 3
  # starts at round(0.5) = 0.
  out = preprocess.resize_center_crop(image, 2, 2)
  chex.assert_shape(out, (2, 2, 3))
  np.testing.assert_array_equal(out[..., 0], [[11, 120], [11, 120]])
  pil = np.asarray(Image.fromarray(image).resize((3, 2), Image.BILINEAR))
  np.testing.assert_array_equal(out, pil[:, 0:2])
  spec = preprocess.ImageSpec(2, 3, 'resize_center_crop', resize_size=2)
  np.testing.assert_array_equal(
      preprocess.preprocess_images(image[None], spec)[0], out)


def test_squash_resizes_both_sides_like_bit():
  image = np.tile(np.array([0, 0, 200, 200], np.uint8), (2, 1))[..., None]
  # 2x4 -> 2x2, aspect not kept: column 0 weighs inputs 0, 1, 2 by 3/7, 3/7,
  # 1/7: 200 / 7 = 28.6; column 1 mirrors it: 171.4.
  out = preprocess.preprocess_images(image[None],
                                     preprocess.ImageSpec(2, 1, 'squash'))
  np.testing.assert_array_equal(out[0, ..., 0], [[29, 171], [29, 171]])


def test_resize_center_crop_resizes_images_already_at_the_crop_size():
  image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
  spec = preprocess.ImageSpec(4, 1, 'resize_center_crop', resize_size=8)
  out = preprocess.preprocess_images(image, spec)
  expected = preprocess.center_crop(preprocess.pil_resize(image[0], 8, 8), 4)
  np.testing.assert_array_equal(out[0], expected)
  assert not np.array_equal(out, image)
  with pytest.raises(DataError, match='at least image_size'):
    preprocess.ImageSpec(4, 1, 'resize_center_crop', resize_size=3)


# ------------------------------------------------------ random resized crop


def test_random_resized_crop_windows_follow_torchvision():
  rng = np.random.default_rng(0)
  windows = augment.random_resized_crop_params(rng, 500, 30, 40)
  top, left, h, w = windows.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= 30).all() and (left + w <= 40).all()
  share = h * w / (30 * 40)
  assert share.min() > 0.06 and share.max() <= 1.0  # scale (0.08, 1), rounded.
  aspect = w / h
  assert aspect.min() > 0.6 and aspect.max() < 1.6  # ratio (3/4, 4/3), rounded.
  # torchvision's get_params loop, transcribed, on the same draws.
  rng = np.random.default_rng(0)
  shares = rng.uniform(0.08, 1.0, size=(500, 10))
  log_ratios = rng.uniform(np.log(3 / 4), np.log(4 / 3), size=(500, 10))
  place = rng.random(size=(500, 2))
  for k in range(500):
    for attempt in range(10):
      target_area = 30 * 40 * shares[k, attempt]
      aspect_ratio = math.exp(log_ratios[k, attempt])
      cw = int(round(math.sqrt(target_area * aspect_ratio)))
      ch = int(round(math.sqrt(target_area / aspect_ratio)))
      if 0 < cw <= 40 and 0 < ch <= 30:
        i = int(place[k, 0] * (30 - ch + 1))
        j = int(place[k, 1] * (40 - cw + 1))
        assert tuple(windows[k]) == (i, j, ch, cw), k
        break
    else:
      raise AssertionError(f'example {k} fell back')
  # No candidate fits a 10x40 strip at full area: the fallback is the centre
  # crop clamped to ratio 4/3: h = 10, w = round(13.3) = 13, left = 27 // 2.
  fallback = augment.random_resized_crop_params(
      np.random.default_rng(1), 3, 10, 40, scale=(1.0, 1.0))
  np.testing.assert_array_equal(fallback, [[0, 13, 10, 13]] * 3)


def test_random_resized_crop_is_a_resized_window_or_its_mirror():
  images = np.random.default_rng(0).integers(0, 256, (6, 12, 10, 3),
                                             dtype=np.uint8)
  out = augment.random_resized_crop_batch(
      images, np.random.default_rng(7), size=5)
  chex.assert_shape(out, (6, 5, 5, 3))
  assert out.dtype == np.uint8
  # The same generator state draws the windows first, then the flips.
  rng = np.random.default_rng(7)
  windows = augment.random_resized_crop_params(rng, 6, 12, 10)
  flips = rng.random(6) < 0.5
  for k, (top, left, h, w) in enumerate(windows):
    crop = Image.fromarray(images[k, top:top + h, left:left + w])
    expected = np.asarray(crop.resize((5, 5), Image.BILINEAR))
    np.testing.assert_array_equal(
        out[k], expected[:, ::-1] if flips[k] else expected)
  np.testing.assert_array_equal(
      out, augment.random_resized_crop_batch(
          images, np.random.default_rng(7), size=5))
  assert not np.array_equal(out, augment.random_resized_crop_batch(
      images, np.random.default_rng(8), size=5))
  gray = augment.random_resized_crop_batch(
      images[..., :1], np.random.default_rng(7), size=5)
  chex.assert_shape(gray, (6, 5, 5, 1))


# ---------------------------------------------------- family presets


def test_preprocessing_for_family():
  torch = data.preprocessing_for_family('resnet50')
  assert torch == dict(image_size=224, resize_size=256, channels=3,
                       normalization='imagenet',
                       eval_resize='resize_center_crop',
                       train_crop='random_resized_crop')
  assert data.preprocessing_for_family('torchvision') == torch
  bit = data.preprocessing_for_family('bit_r50x1')
  assert bit['normalization'] == 'bit' and bit['eval_resize'] == 'resize'
  assert bit['image_size'] == 224 and bit['channels'] == 3
  small = data.preprocessing_for_family('bit', image_size=128)
  assert small['image_size'] == 128 and small['resize_size'] == 146
  with pytest.raises(DataError, match='No preprocessing is known'):
    data.preprocessing_for_family('vgg16')
  # Every preset is a valid data config.
  defaults = data.get_default_data_config()
  for preset in (torch, bit, small):
    config = data.get_default_data_config()
    config.update(preset)
    eval_spec, train_spec, crop = tasks.image_specs(config)
    assert crop == preset['image_size']
    assert train_spec.image_size == preset['resize_size']
    assert eval_spec.image_size == preset['image_size']
  assert set(torch) <= set(defaults.keys())


def test_fill_preprocessing_keeps_what_the_user_set():
  config = data.get_default_data_config()
  filled = data.fill_preprocessing(config, 'resnet18')
  assert filled.normalization == 'imagenet' and filled.image_size == 224
  assert filled.resize_size == 256 and filled.channels == 3
  assert config.normalization == 'unit' and config.image_size == 32
  config.image_size = 128
  config.eval_resize = 'resize'
  filled = data.fill_preprocessing(config, 'resnet18')
  assert filled.image_size == 128 and filled.resize_size == 146
  assert filled.eval_resize == 'resize'
  assert filled.normalization == 'imagenet'


def test_default_config_keeps_todays_geometry():
  config = data.get_default_data_config()
  assert (config.normalization, config.train_crop, config.eval_resize,
          config.resize_size) == ('unit', 'pad_flip', 'none', None)
  eval_spec, train_spec, crop = tasks.image_specs(config)
  assert eval_spec == train_spec == preprocess.ImageSpec(32, 1, 'auto')
  assert crop is None


@pytest.mark.parametrize('field, value, match', [
    ('normalization', 'caffe', 'Unknown normalization'),
    ('train_crop', 'cutout', 'Unknown train_crop'),
    ('eval_resize', 'ten_crop', 'Unknown eval_resize'),
])
def test_unknown_settings_are_refused(field, value, match, tmp_path):
  config = data.get_default_data_config()
  config.data_dir = str(tmp_path)
  setattr(config, field, value)
  with pytest.raises(DataError, match=match):  # Before opening any data.
    data.build_task(config)


def test_settings_that_need_sizes_are_refused():
  config = data.get_default_data_config()
  config.image_size = None
  config.train_crop = 'random_resized_crop'
  with pytest.raises(DataError, match='needs image_size'):
    tasks.image_specs(config)
  config.image_size, config.resize_size = 32, 16
  with pytest.raises(DataError, match='at least image_size=32'):
    tasks.image_specs(config)


# ----------------------------------------- a folder of real-world photos


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  """Two classes of four images each, every one of another mode and size."""
  root = str(tmp_path_factory.mktemp('photos'))
  rng = np.random.default_rng(0)
  for name in ('a', 'b'):
    os.makedirs(os.path.join(root, name))

  def path(cls, k):
    return os.path.join(root, cls, f'{k}.png')

  Image.fromarray(rng.integers(0, 256, (20, 30), np.uint8), 'L').save(
      path('a', 0))
  Image.fromarray(rng.integers(0, 256, (25, 25, 4), np.uint8), 'RGBA').save(
      path('a', 1))
  _palette_image((18, 24)).save(path('a', 2))
  _write_png16(path('a', 3), rng.integers(0, 65536, (30, 20)))
  _write_png16(path('b', 0), rng.integers(0, 65536, (22, 28, 3)))
  Image.fromarray(rng.integers(0, 256, (16, 40, 3), np.uint8)).save(
      path('b', 1))
  Image.fromarray(rng.integers(0, 256, (24, 24, 2), np.uint8), 'LA').save(
      path('b', 2))
  Image.fromarray(rng.integers(0, 256, (28, 21, 3), np.uint8)).convert(
      'P', palette=Image.ADAPTIVE).save(path('b', 3))
  return root


def _photo_config(data_dir, root, **overrides):
  config = base_config(
      data_dir, source=f'folder:{root}', source_test_split=None,
      target=f'folder:{root}', target_classes=None, target_train_split='train',
      target_train_per_class=2, target_val_split='train',
      target_val_per_class=1, target_test_split='train',
      target_test_per_class=1, channels=3, image_size=8, resize_size=12,
      train_crop='random_resized_crop', eval_resize='resize_center_crop',
      normalization='imagenet',
      allow_overlap=True)  # The source is the target's folder: its photos.
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def _decoded(root, split):
  """uint8 RGB images of a split's records, decoded straight from the files."""
  layout = folder_lib.scan_folder(root)
  out = []
  for i in split.indices:
    with open(os.path.join(root, layout.splits['train'][i][0]), 'rb') as f:
      out.append(preprocess.convert_channels(
          decode.decode_image(f.read()), 3))
  return out


def test_png_modes_all_become_rgb_uint8(photos, tmp_path):
  expected_modes = {'L', 'RGBA', 'P', 'I;16', 'RGB', 'LA'}
  modes = set()
  for cls in ('a', 'b'):
    for k in range(4):
      file = os.path.join(photos, cls, f'{k}.png')
      with Image.open(file) as image:
        modes.add(image.mode)
      with open(file, 'rb') as f:
        decoded = decode.decode_image(f.read(), file)
      rgb = preprocess.convert_channels(decoded, 3)
      assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[-1] == 3
  assert expected_modes <= modes
  # 16-bit values are scaled (x // 256), never clipped: 1000 -> 3, not 255.
  buf = io.BytesIO()
  gray16 = np.array([[0, 1000, 0x1234, 65535]], np.uint16)
  path = str(tmp_path / 'gray16.png')
  _write_png16(path, gray16)
  with open(path, 'rb') as f:
    out = preprocess.convert_channels(decode.decode_image(f.read()), 3)
  np.testing.assert_array_equal(out[..., 0], [[0, 3, 18, 255]])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  _write_png16(path, np.repeat(gray16[..., None], 3, -1) // [1, 2, 4])
  with open(path, 'rb') as f:
    out = decode.decode_image(f.read())
  np.testing.assert_array_equal(
      out[0], [[0, 0, 0], [3, 1, 0], [18, 9, 4], [255, 127, 63]])
  # Palette with transparency, read from bytes as a folder would.
  image = _palette_image((2, 3))
  image.info['transparency'] = 0
  image.save(buf, 'PNG')
  out = decode.decode_image(buf.getvalue())
  np.testing.assert_array_equal(out[0, :2], [[200, 10, 30], [5, 250, 100]])


@pytest.fixture(scope='module')
def photo_task(photos, tfds_dir):
  return data.build_task(_photo_config(tfds_dir, photos))


def test_photos_train_at_resize_size_and_batch_at_image_size(photos,
                                                             photo_task):
  task = photo_task
  assert task.image_shape == (8, 8, 3)
  for split in (task.src_train, task.tgt_train):
    assert split.image_shape == (8, 8, 3) and split.crop_size == 8
    chex.assert_shape(split.get(np.arange(2))['image'], (2, 12, 12, 3))
  for split in (task.tgt_val, task.tgt_test):
    assert split.crop_size is None
    chex.assert_shape(split.get(np.arange(2))['image'], (2, 8, 8, 3))
  # Evaluation: torchvision's resize 12 and centre crop 8, then ImageNet
  # normalisation, of each file.
  (batch,) = list(data.eval_batches(task.tgt_test, batch_size=3))
  chex.assert_shape(batch['image'], (3, 8, 8, 3))
  np.testing.assert_array_equal(batch['mask'], [1, 1, 0])
  expected = np.stack([preprocess.resize_center_crop(d, 12, 8)
                       for d in _decoded(photos, task.tgt_test)])
  np.testing.assert_array_equal(batch['image'][:2],
                                preprocess.normalize(expected, 'imagenet'))
  # Train splits without augmentation: centre crops of the stored 12x12.
  stored = np.stack([preprocess.resize_center_crop(d, 12, 12)
                     for d in _decoded(photos, task.tgt_train)])
  np.testing.assert_array_equal(task.tgt_train.get(np.arange(4))['image'],
                                stored)
  (train_eval,) = list(data.eval_batches(task.tgt_train, batch_size=4))
  np.testing.assert_array_equal(
      train_eval['image'],
      preprocess.normalize(stored[:, 2:10, 2:10], 'imagenet'))
  plain = next(data.train_iterator(task.src_train, batch_size=4, seed=0))
  chex.assert_shape(plain['image'], (4, 8, 8, 3))
  # Augmenting a split stored at the batch size crops and resizes within it.
  val = next(data.train_iterator(task.tgt_val, batch_size=2, seed=0,
                                 augment=True))
  chex.assert_shape(val['image'], (2, 8, 8, 3))


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_random_resized_crops_are_fixed_by_seed_and_position(photo_task):
  split = photo_task.src_train  # 8 examples.

  def make(seed):
    return data.train_iterator(split, batch_size=4, seed=seed, augment=True)

  a, b, c = _take(make(3), 6), _take(make(3), 6), _take(make(4), 6)
  chex.assert_trees_all_equal(a, b)
  assert not all(np.array_equal(x['image'], y['image']) for x, y in zip(a, c))
  chex.assert_shape(a[0]['image'], (4, 8, 8, 3))
  # Batch i is the crops drawn from (seed, split name, 2, i) of the examples
  # at the positions of batch i, whatever was read before.
  positions = pipeline._EpochBatches(len(split), 4, 3,
                                     pipeline._stream_id(split), True)
  for i in (0, 5):
    rng = np.random.default_rng([3, pipeline._stream_id(split), 2, i])
    crops = augment.random_resized_crop_batch(
        split.get(positions[i])['image'], rng, size=8)
    np.testing.assert_array_equal(a[i]['image'],
                                  preprocess.normalize(crops, 'imagenet'))


def test_random_resized_crop_resumes_exactly(photo_task, photos, tfds_dir):

  def make(task):
    return data.train_iterator(task.src_train, batch_size=4, seed=1,
                               augment=True)

  it = make(photo_task)
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))
  assert state['train_crop'] == 'random_resized_crop'
  assert state['normalization'] == 'imagenet' and state['crop_size'] == 8
  expected = _take(it, 4)
  resumed = make(photo_task)
  resumed.set_state(state)
  chex.assert_trees_all_equal(_take(resumed, 4), expected)
  # Read per record, the same batches.
  per_record = data.build_task(_photo_config(tfds_dir, photos,
                                             in_memory_max_bytes=0))
  assert not per_record.src_train.in_memory
  resumed = make(per_record)
  resumed.set_state(state)
  chex.assert_trees_all_equal(_take(resumed, 4), expected)
  # A run saved with other preprocessing does not resume here.
  unit = data.build_task(_photo_config(tfds_dir, photos, normalization='unit'))
  with pytest.raises(DataError, match='normalization'):
    make(unit).set_state(state)


def test_bit_photos_are_squashed_and_in_minus_one_one(photos, tfds_dir):
  task = data.build_task(_photo_config(
      tfds_dir, photos, eval_resize='resize', normalization='bit',
      train_crop='pad_flip'))
  assert task.tgt_train.crop_size is None
  (batch,) = list(data.eval_batches(task.tgt_test, batch_size=2))
  expected = np.stack([preprocess.pil_resize(d, 8, 8)
                       for d in _decoded(photos, task.tgt_test)])
  np.testing.assert_array_equal(batch['image'],
                                preprocess.normalize(expected, 'bit'))
  assert batch['image'].min() >= -1.0 and batch['image'].max() <= 1.0
  aug = next(data.train_iterator(task.tgt_train, batch_size=4, seed=0,
                                 augment=True))
  chex.assert_shape(aug['image'], (4, 8, 8, 3))


def test_imagenet_normalisation_of_gray_tasks_is_refused(photos, tfds_dir):
  with pytest.raises(DataError, match='set channels=3'):
    data.build_task(_photo_config(tfds_dir, photos, channels=1))


# ------------------------------------------------ defaults: today's batches


def test_default_batches_are_todays(tmp_path_factory, tfds_dir):
  directory, _ = make_idx_dir(str(tmp_path_factory.mktemp('idx_default')))
  task = data.build_task(base_config(
      tfds_dir, source=f'idx:{directory}', target=f'idx:{directory}',
      target_classes=None, target_train_per_class=5,
      target_val_per_class=2, target_test_per_class=None))
  split = task.tgt_train
  assert (split.normalization, split.train_crop, split.crop_size) == (
      'unit', 'pad_flip', None)
  it = data.train_iterator(split, batch_size=4, seed=2, augment=True)
  positions = pipeline._EpochBatches(len(split), 4, 2,
                                     pipeline._stream_id(split), True)
  for i in range(3):
    # The formula of the pipeline before these options existed.
    rng = np.random.default_rng([2, pipeline._stream_id(split), 1, i])
    images = augment.augment_batch(split.get(positions[i])['image'], rng,
                                   crop_padding=4)
    batch = next(it)
    np.testing.assert_array_equal(batch['image'],
                                  preprocess.to_float(images))
  assert set(it.get_state()) == {'position', 'split', 'fingerprint',
                                 'batch_size', 'seed', 'augment',
                                 'drop_remainder'}
  (first,) = list(data.eval_batches(task.tgt_test, batch_size=12))
  np.testing.assert_array_equal(
      first['image'], preprocess.to_float(task.tgt_test.get(np.arange(12))[
          'image']))
