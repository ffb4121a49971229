"""Image preprocessing on uint8 numpy arrays: channels, size, scale, crops.

Geometry and channels are applied once, when a split is loaded (the results
stay uint8); scaling to [0, 1] and augmentation are applied per batch, over the
whole batch at once.
"""

import dataclasses

import numpy as np
from PIL import Image

from l2tl_jax.data.errors import DataError

# ITU-R 601 luma weights, the ones tf.image.rgb_to_grayscale uses in the
# reference (RGB SVHN -> gray).
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)

RESIZE_METHODS = ('auto', 'pad', 'resize')


@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """What every image becomes before batching.

  Attributes:
    image_size: side of the square output; None keeps the native size.
    channels: 1 (gray) or 3 (RGB); None keeps the native channel count.
    resize_method: 'auto' zero-pads images that fit and are at most a quarter
      smaller than `image_size` (MNIST 28 -> 32, as the reference) and resizes
      all others; 'pad' only pads (centred); 'resize' only resizes (bilinear,
      antialiased; the shorter side to `image_size`, then a centre crop).
  """

  image_size: int | None = 32
  channels: int | None = 1
  resize_method: str = 'auto'

  def __post_init__(self):
    if self.resize_method not in RESIZE_METHODS:
      raise DataError(
          f'Unknown resize_method {self.resize_method!r}; use one of'
          f' {RESIZE_METHODS}.'
      )
    if self.channels not in (None, 1, 3):
      raise DataError(
          f'channels={self.channels} is not supported; use 1 (gray), 3 (RGB)'
          ' or None (keep the native channel count).'
      )
    if self.image_size is not None and self.image_size < 1:
      raise DataError(f'image_size must be positive, got {self.image_size}.')

  def output_shape(
      self, native_shape: tuple[int, int, int]
  ) -> tuple[int, int, int]:
    """Returns (H, W, C) of a preprocessed image whose native shape is given."""
    h, w, c = native_shape
    if self.image_size is not None:
      h = w = self.image_size
    return (h, w, c if self.channels is None else self.channels)


def convert_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
  """Converts the last axis of uint8 images to `channels`.

  Gray -> RGB repeats the channel; RGB -> gray is the rounded luma
  (GRAY_WEIGHTS); an alpha channel (2 or 4 channels) is dropped.

  Args:
    images: uint8 [..., H, W, C_in].
    channels: 1, 3 or None (unchanged).

  Returns:
    uint8 [..., H, W, channels].
  """
  c_in = images.shape[-1]
  if channels is None or c_in == channels:
    return images
  if c_in in (2, 4):
    images = images[..., : c_in - 1]
    c_in -= 1
    if c_in == channels:
      return images
  if channels == 3 and c_in == 1:
    return np.repeat(images, 3, axis=-1)
  if channels == 1 and c_in == 3:
    gray = images.astype(np.float32) @ GRAY_WEIGHTS  # [..., H, W]
    return np.clip(np.floor(gray + 0.5), 0, 255).astype(np.uint8)[..., None]
  raise DataError(
      f'Cannot convert images with {images.shape[-1]} channels to {channels};'
      ' only 1 (gray), 2 (gray+alpha), 3 (RGB) and 4 (RGBA) are understood.'
  )


def _chooses_pad(h: int, w: int, spec: ImageSpec) -> bool:
  size = spec.image_size
  fits = h <= size and w <= size
  if spec.resize_method == 'pad':
    if not fits:
      raise DataError(
          f'An image of {h}x{w} does not fit in image_size={size} with'
          " resize_method='pad'; use resize_method='resize' or 'auto', or a"
          ' larger image_size.'
      )
    return True
  if spec.resize_method == 'resize':
    return False
  return fits and (size - h) <= size // 4 and (size - w) <= size // 4


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
  """Zero-pads images to size x size, centred (an odd extra pixel goes last).

  Args:
    images: uint8 [..., H, W, C] with H, W <= size.
    size: output side.

  Returns:
    uint8 [..., size, size, C]; MNIST 28 -> 32 gets 2 pixels on every side.
  """
  h, w = images.shape[-3], images.shape[-2]
  top, left = (size - h) // 2, (size - w) // 2
  pad = [(0, 0)] * (images.ndim - 3)
  pad += [(top, size - h - top), (left, size - w - left), (0, 0)]
  return np.pad(images, pad)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes one image so its shorter side is `size`, then centre-crops.

  Bilinear (PIL, antialiased when shrinking). Square images map straight to
  size x size.

  Args:
    image: uint8 [H, W, C] with C in (1, 3).
    size: output side.

  Returns:
    uint8 [size, size, C].
  """
  h, w, c = image.shape
  if (h, w) == (size, size):
    return image
  scale = size / min(h, w)
  new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
  pil = Image.fromarray(image[..., 0] if c == 1 else image)
  out = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))
  top, left = (new_h - size) // 2, (new_w - size) // 2
  out = out[top : top + size, left : left + size]
  return out.reshape(size, size, c)


def preprocess_images(images: np.ndarray, spec: ImageSpec) -> np.ndarray:
  """Converts equally shaped uint8 images to `spec` (channels, then size).

  Args:
    images: uint8 [N, H, W, C].
    spec: the target ImageSpec.

  Returns:
    uint8 [N, S, S, C'] per `spec` (native sizes kept where `spec` says None).
  """
  images = convert_channels(np.asarray(images, np.uint8), spec.channels)
  if spec.image_size is None:
    return images
  n, h, w, c = images.shape
  size = spec.image_size
  if (h, w) == (size, size):
    return images
  if _chooses_pad(h, w, spec):
    return pad_to(images, size)
  out = np.empty((n, size, size, c), np.uint8)
  for i in range(n):
    out[i] = resize_image(images[i], size)
  return out


def preprocess_image(image: np.ndarray, spec: ImageSpec) -> np.ndarray:
  """Converts one uint8 image [H, W, C] to `spec`; see preprocess_images."""
  return preprocess_images(image[None], spec)[0]


def to_float(images: np.ndarray) -> np.ndarray:
  """Scales uint8 images to float32 in [0, 1] (x / 255)."""
  return np.multiply(images, np.float32(1.0 / 255.0), dtype=np.float32)


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
