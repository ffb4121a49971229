"""Preprocessing numbers checked by hand: padding, resize, channels, scale."""

import chex
import numpy as np
import pytest

from l2tl_jax.data import augment
from l2tl_jax.data import preprocess
from l2tl_jax.data.errors import DataError

ImageSpec = preprocess.ImageSpec


def test_pad_28_to_32_puts_two_zero_pixels_on_every_side():
  images = np.full((2, 28, 28, 1), 7, np.uint8)
  out = preprocess.preprocess_images(images, ImageSpec(32, 1, 'auto'))
  chex.assert_shape(out, (2, 32, 32, 1))
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out[:, 2:30, 2:30], images)
  assert out[:, :2].sum() == 0 and out[:, 30:].sum() == 0
  assert out[:, :, :2].sum() == 0 and out[:, :, 30:].sum() == 0


def test_pad_odd_difference_puts_the_extra_pixel_last():
  out = preprocess.pad_to(np.ones((1, 29, 30, 1), np.uint8), 32)
  rows = out[0, :, 5, 0]
  cols = out[0, 5, :, 0]
  assert rows[:1].sum() == 0 and rows[1:30].all() and rows[30:].sum() == 0
  assert cols[:1].sum() == 0 and cols[1:31].all() and cols[31:].sum() == 0


def test_bilinear_upsampling_by_hand():
  # Half-pixel centres: output x in {0, 1, 2, 3} samples input x - 0.25, 0.25,
  # 0.75, 1.25 (clamped): 0, 63.75, 191.25, 255.
  image = np.array([[0, 255], [0, 255]], np.uint8)[..., None]
  out = preprocess.resize_image(image, 4)
  np.testing.assert_array_equal(out[..., 0], [[0, 64, 191, 255]] * 4)


def test_antialiased_downsampling_by_hand():
  # Each output pixel spans two input pixels, with a triangle filter of
  # support 2: output 1 centred at input 3.0 weighs inputs 1..4 by
  # 1/8, 3/8, 3/8, 1/8 -> 255 / 8 = 31.9.
  image = np.zeros((8, 8, 1), np.uint8)
  image[:, 4:] = 255
  out = preprocess.resize_image(image, 4)
  np.testing.assert_array_equal(out[..., 0], [[0, 32, 223, 255]] * 4)


def test_resize_keeps_aspect_and_centre_crops():
  image = np.zeros((4, 8, 1), np.uint8)
  image[:, 2:6] = 200  # Centre half of the columns.
  # Shorter side 4 -> 2 gives 2x4; the crop keeps output columns 1 and 2,
  # centred at input columns 3 and 5, which weigh inputs 1..4 (5..2) by
  # 1/8, 3/8, 3/8, 1/8: 200 * 7/8 = 175. Were the image squashed instead,
  # the outer columns would be dark.
  out = preprocess.resize_image(image, 2)
  chex.assert_shape(out, (2, 2, 1))
  np.testing.assert_array_equal(out[..., 0], [[175, 175], [175, 175]])


def test_auto_pads_near_sizes_and_resizes_the_rest():
  spec = ImageSpec(32, 1, 'auto')
  digits = np.full((3, 8, 8, 1), 100, np.uint8)
  out = preprocess.preprocess_images(digits, spec)
  np.testing.assert_array_equal(out, np.full((3, 32, 32, 1), 100, np.uint8))
  large = np.full((1, 64, 48, 1), 50, np.uint8)
  np.testing.assert_array_equal(
      preprocess.preprocess_images(large, spec), np.full((1, 32, 32, 1), 50))
  assert preprocess.preprocess_images(
      np.ones((1, 28, 28, 1), np.uint8), spec)[0, 0, 0, 0] == 0  # Padded.


def test_pad_only_rejects_images_that_do_not_fit():
  with pytest.raises(DataError, match='does not fit'):
    preprocess.preprocess_images(
        np.zeros((1, 40, 40, 1), np.uint8), ImageSpec(32, 1, 'pad'))


def test_rgb_to_gray_is_rounded_luma():
  pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]],
                    np.uint8)
  gray = preprocess.convert_channels(pixels, 1)
  # 0.2989*255=76.2, 0.5870*255=149.7, 0.1140*255=29.1,
  # 0.2989*10+0.5870*20+0.1140*30=18.15.
  np.testing.assert_array_equal(gray[..., 0], [[76, 150, 29, 18]])


def test_gray_to_rgb_repeats_and_alpha_is_dropped():
  gray = np.array([[[3], [200]]], np.uint8)
  np.testing.assert_array_equal(
      preprocess.convert_channels(gray, 3), [[[3, 3, 3], [200, 200, 200]]])
  rgba = np.array([[[1, 2, 3, 4]]], np.uint8)
  np.testing.assert_array_equal(preprocess.convert_channels(rgba, 3),
                                [[[1, 2, 3]]])
  gray_alpha = np.array([[[9, 255]]], np.uint8)
  np.testing.assert_array_equal(preprocess.convert_channels(gray_alpha, 1),
                                [[[9]]])
  assert preprocess.convert_channels(rgba, None) is rgba


def test_unsupported_channel_counts_raise():
  with pytest.raises(DataError, match='channels'):
    preprocess.convert_channels(np.zeros((2, 2, 5), np.uint8), 3)
  with pytest.raises(DataError, match='channels=2'):
    ImageSpec(32, 2)
  with pytest.raises(DataError, match='resize_method'):
    ImageSpec(32, 1, 'stretch')


def test_to_float_divides_by_255():
  out = preprocess.to_float(np.array([0, 51, 255], np.uint8))
  assert out.dtype == np.float32
  chex.assert_trees_all_close(out, np.array([0.0, 0.2, 1.0], np.float32))


def test_augment_is_a_crop_of_the_padded_image_or_its_mirror():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (16, 6, 5, 2), dtype=np.uint8)
  out = augment.augment_batch(images, np.random.default_rng(1),
                              crop_padding=2)
  chex.assert_shape(out, images.shape)
  padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)])
  flips = 0
  for b in range(16):
    found = False
    for dy in range(5):
      for dx in range(5):
        crop = padded[b, dy:dy + 6, dx:dx + 5]
        if np.array_equal(out[b], crop):
          found = True
        elif np.array_equal(out[b], crop[:, ::-1]):
          found = True
          flips += 1
    assert found, b
  assert 0 < flips < 16
  again = augment.augment_batch(images, np.random.default_rng(1),
                                crop_padding=2)
  np.testing.assert_array_equal(out, again)


def test_augment_without_padding_only_flips():
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4, 1)
  out = augment.augment_batch(images, np.random.default_rng(3),
                              crop_padding=0)
  for b in range(2):
    assert (np.array_equal(out[b], images[b])
            or np.array_equal(out[b], images[b, :, ::-1]))
