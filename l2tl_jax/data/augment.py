"""Train-time augmentation of uint8 image batches, drawn for the batch at once.

Two kinds (a split's train_crop, preprocess.TRAIN_CROPS): 'pad_flip', a
random crop after zero padding and a random horizontal flip
(augment_batch), and 'random_resized_crop', torchvision's Inception-style
RandomResizedCrop and flip (random_resized_crop_batch, with the windows of
random_resized_crop_params). The random numbers depend only on the
generator given.
"""

import math

import numpy as np

from l2tl_jax.data import preprocess

# torchvision RandomResizedCrop's defaults: the crop's share of the image
# area, its aspect ratio (width / height), and the draws before falling back
# to a centre crop.
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_ATTEMPTS = 10


def augment_batch(
    images: np.ndarray, rng: np.random.Generator, *, crop_padding: int
) -> np.ndarray:
  """Random crop after zero padding, and random horizontal flip, per example.

  Each example gets its own crop offset in [0, 2 * crop_padding] along each
  axis and a flip with probability 1/2; the offsets and flips are drawn for
  the whole batch at once.

  Args:
    images: uint8 [B, H, W, C].
    rng: the generator that decides offsets and flips.
    crop_padding: pixels of zero padding on each side before cropping.

  Returns:
    uint8 [B, H, W, C].
  """
  b, h, w, c = images.shape
  p = crop_padding
  # Zeros plus a slice assignment: several times faster than np.pad here.
  padded = np.zeros((b, h + 2 * p, w + 2 * p, c), images.dtype)
  padded[:, p : p + h, p : p + w] = images
  off_y = rng.integers(0, 2 * p + 1, size=b)
  off_x = rng.integers(0, 2 * p + 1, size=b)
  flip = rng.random(size=b) < 0.5
  out = np.empty_like(images)
  for k in range(b):  # Slicing per example beats one fancy-index gather.
    crop = padded[k, off_y[k] : off_y[k] + h, off_x[k] : off_x[k] + w]
    out[k] = crop[:, ::-1] if flip[k] else crop
  return out


def random_resized_crop_params(
    rng: np.random.Generator, batch: int, height: int, width: int, *,
    scale: tuple[float, float] = RRC_SCALE,
    ratio: tuple[float, float] = RRC_RATIO, attempts: int = RRC_ATTEMPTS,
) -> np.ndarray:
  """Crop windows of torchvision's RandomResizedCrop, for a whole batch.

  Per example, up to `attempts` candidates (area share uniform in `scale`,
  log aspect ratio uniform in log `ratio`, sides rounded); the first that
  fits is placed uniformly; if none fits, the centre crop of the image
  clamped to `ratio`. Every random number is drawn up front, a fixed count
  per batch, so the windows depend only on the generator's seed.

  Args:
    rng: decides the windows.
    batch: number of windows B.
    height: image height H.
    width: image width W.
    scale: (min, max) share of the image area.
    ratio: (min, max) aspect ratio, width / height.
    attempts: candidates per example before the fallback.

  Returns:
    int64 [B, 4]: (top, left, crop height, crop width) per example.
  """
  area = height * width
  share = rng.uniform(scale[0], scale[1], size=(batch, attempts))
  log_ratio = rng.uniform(math.log(ratio[0]), math.log(ratio[1]),
                          size=(batch, attempts))
  place = rng.random(size=(batch, 2))  # Offsets, as a share of the slack.
  aspect = np.exp(log_ratio)
  # np.round, like Python's round in torchvision, sends halves to even.
  w = np.round(np.sqrt(area * share * aspect)).astype(np.int64)
  h = np.round(np.sqrt(area * share / aspect)).astype(np.int64)
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # [B, attempts]
  first = np.argmax(fits, axis=1)
  any_fits = fits.any(axis=1)
  rows = np.arange(batch)
  crop_h, crop_w = h[rows, first], w[rows, first]
  top = np.floor(place[:, 0] * (height - crop_h + 1)).astype(np.int64)
  left = np.floor(place[:, 1] * (width - crop_w + 1)).astype(np.int64)
  # torchvision's fallback: the whole image, clamped to the ratio range.
  in_ratio = width / height
  if in_ratio < min(ratio):
    fb_w, fb_h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    fb_h, fb_w = height, int(round(height * max(ratio)))
  else:
    fb_h, fb_w = height, width
  out = np.stack([top, left, crop_h, crop_w], axis=1)
  out[~any_fits] = ((height - fb_h) // 2, (width - fb_w) // 2, fb_h, fb_w)
  return out


def random_resized_crop_batch(
    images: np.ndarray, rng: np.random.Generator, *, size: int,
    scale: tuple[float, float] = RRC_SCALE,
    ratio: tuple[float, float] = RRC_RATIO,
) -> np.ndarray:
  """Inception-style crops: a random window resized to size, and a flip.

  torchvision's RandomResizedCrop(size) then RandomHorizontalFlip(): windows
  from random_resized_crop_params, each cropped then resized (bilinear,
  antialiased, PIL), and flipped with probability 1/2. The windows, then the
  flips, are drawn from `rng` for the whole batch at once.

  Args:
    images: uint8 [B, H, W, C].
    rng: decides windows and flips.
    size: output side.
    scale: (min, max) share of the image area.
    ratio: (min, max) aspect ratio.

  Returns:
    uint8 [B, size, size, C].
  """
  b, h, w, _ = images.shape
  windows = random_resized_crop_params(rng, b, h, w, scale=scale, ratio=ratio)
  flip = rng.random(size=b) < 0.5
  return crop_resize_flip(images, windows, flip, size)


def crop_resize_flip(images: np.ndarray, windows: np.ndarray,
                     flip: np.ndarray, size: int) -> np.ndarray:
  """Each image cropped to its window (top, left, height, width), resized to
  size x size (bilinear, antialiased, PIL) and flipped where `flip`.

  Args:
    images: uint8 [B, H, W, C].
    windows: int [B, 4].
    flip: bool [B].
    size: output side.

  Returns:
    uint8 [B, size, size, C].
  """
  out = np.empty((len(images), size, size, images.shape[-1]), np.uint8)
  for k, (top, left, crop_h, crop_w) in enumerate(windows):
    crop = np.ascontiguousarray(
        images[k, top : top + crop_h, left : left + crop_w])
    resized = preprocess.pil_resize(crop, size, size)
    out[k] = resized[:, ::-1] if flip[k] else resized
  return out
