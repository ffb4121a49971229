"""Image preprocessing on uint8 numpy arrays: channels, size, scale, crops.

Geometry and channels are applied once, when a split is loaded (the results
stay uint8); normalisation and augmentation are applied per batch, over the
whole batch at once.

Besides the small-benchmark geometry ('auto', 'pad', 'resize'), the methods
that pretrained ImageNet weights expect are here, with torchvision's rounding:
'resize_center_crop' (Resize(resize_size) then CenterCrop(image_size)),
'squash' (BiT: both sides to image_size), and the normalisations of
NORMALIZATIONS. The per-batch augmentation (random crops and flips, the
Inception-style random resized crop) is in augment.py.
"""

import dataclasses
import functools

import numpy as np
from PIL import Image

from l2tl_jax.data.errors import DataError

# ITU-R 601 luma weights, the ones tf.image.rgb_to_grayscale uses in the
# reference (RGB SVHN -> gray).
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)

RESIZE_METHODS = ('auto', 'pad', 'resize', 'resize_center_crop', 'squash')

# Per-batch scaling of uint8 pixels: 'unit' x / 255 (in [0, 1]); 'imagenet'
# (x / 255 - IMAGENET_MEAN) / IMAGENET_STD (torchvision / timm weights); 'bit'
# x / 127.5 - 1 (in [-1, 1], BiT weights).
NORMALIZATIONS = ('unit', 'imagenet', 'bit')
# The one copy of ImageNet's statistics in this project.
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, of values in [0, 1].
IMAGENET_STD = (0.229, 0.224, 0.225)

# What `augment` does to train splits: today's zero-pad, random crop and flip,
# or torchvision's RandomResizedCrop and flip.
TRAIN_CROPS = ('pad_flip', 'random_resized_crop')
# Geometry of the splits (config.data.eval_resize): 'none' leaves it to
# ImageSpec.resize_method; the others select 'resize_center_crop' / 'squash'.
EVAL_RESIZES = ('none', 'resize_center_crop', 'resize')


@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """What every image becomes before batching.

  Attributes:
    image_size: side of the square output; None keeps the native size.
    channels: 1 (gray) or 3 (RGB); None keeps the native channel count.
    resize_method: 'auto' zero-pads images that fit and are at most a quarter
      smaller than `image_size` (MNIST 28 -> 32, as the reference) and resizes
      all others; 'pad' only pads (centred); 'resize' only resizes (bilinear,
      antialiased; the shorter side to `image_size`, then a centre crop);
      'resize_center_crop' is torchvision's eval transform (the shorter side
      to `resize_size`, then the centre image_size x image_size);
      'squash' resizes both sides to `image_size`, aspect not kept (BiT).
    resize_size: the shorter side before the centre crop of
      'resize_center_crop' (>= image_size); unused by the other methods.
  """

  image_size: int | None = 32
  channels: int | None = 1
  resize_method: str = 'auto'
  resize_size: int | None = None

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
    if self.resize_method in ('resize_center_crop', 'squash'):
      if self.image_size is None:
        raise DataError(
            f'resize_method={self.resize_method!r} needs an image_size (e.g.'
            ' 224).'
        )
    if self.resize_method == 'resize_center_crop' and (
        self.resize_size is None or self.resize_size < self.image_size):
      raise DataError(
          f'resize_size={self.resize_size} must be at least image_size='
          f'{self.image_size} (torchvision: resize 256, crop 224).'
      )

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


def pil_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Resizes one uint8 image [H, W, C] to [height, width, C] with PIL.

  Bilinear, antialiased when shrinking (PIL's filter, as torchvision's Resize
  on PIL images). Channel counts other than 3 are resized one at a time.

  Args:
    image: uint8 [H, W, C].
    height: output height.
    width: output width.

  Returns:
    uint8 [height, width, C] (`image` itself when the size is unchanged).
  """
  h, w, c = image.shape
  if (h, w) == (height, width):
    return image
  if c == 3:
    out = Image.fromarray(np.ascontiguousarray(image)).resize(
        (width, height), Image.BILINEAR)
    return np.asarray(out)
  out = np.empty((height, width, c), np.uint8)
  for k in range(c):
    plane = Image.fromarray(np.ascontiguousarray(image[..., k]))
    out[..., k] = np.asarray(plane.resize((width, height), Image.BILINEAR))
  return out


def shorter_side_shape(h: int, w: int, size: int) -> tuple[int, int]:
  """(H', W') with the shorter side `size`, the longer one truncated.

  torchvision's Resize(size) rule: new_long = int(size * long / short).

  Args:
    h: image height.
    w: image width.
    size: the new shorter side.

  Returns:
    (new height, new width).
  """
  if h <= w:
    return size, int(size * w / h)
  return int(size * h / w), size


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
  """The centre size x size window of images [..., H, W, C] (a view).

  Offsets as torchvision's CenterCrop: round((H - size) / 2), Python's
  rounding (halves to even).

  Args:
    images: [..., H, W, C] with H, W >= size.
    size: output side.

  Returns:
    [..., size, size, C].
  """
  h, w = images.shape[-3], images.shape[-2]
  if h < size or w < size:
    raise DataError(f'Cannot centre-crop {h}x{w} images to {size}x{size}.')
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  return images[..., top : top + size, left : left + size, :]


def resize_center_crop(image: np.ndarray, resize_size: int,
                       crop_size: int) -> np.ndarray:
  """torchvision's Resize(resize_size) then CenterCrop(crop_size).

  Args:
    image: uint8 [H, W, C].
    resize_size: the shorter side after resizing (>= crop_size).
    crop_size: output side.

  Returns:
    uint8 [crop_size, crop_size, C].
  """
  h, w, _ = image.shape
  resized = pil_resize(image, *shorter_side_shape(h, w, resize_size))
  return np.ascontiguousarray(center_crop(resized, crop_size))


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
  if spec.resize_method == 'resize_center_crop':
    # No shortcut for size x size inputs: they are resized to resize_size.
    out = np.empty((n, size, size, c), np.uint8)
    for i in range(n):
      out[i] = resize_center_crop(images[i], spec.resize_size, size)
    return out
  if (h, w) == (size, size):
    return images
  if spec.resize_method == 'squash':
    out = np.empty((n, size, size, c), np.uint8)
    for i in range(n):
      out[i] = pil_resize(images[i], size, size)
    return out
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


def normalize(images: np.ndarray, method: str = 'unit') -> np.ndarray:
  """Scales uint8 images to the float32 inputs a model was trained on.

  Args:
    images: uint8 [..., C]; C = 3 (RGB) for 'imagenet'.
    method: one of NORMALIZATIONS. 'unit' is exactly to_float; 'imagenet'
      and 'bit' are what the weight families expect (l2tl_jax.families;
      l2tl_jax.weights.normalise picks one by family).

  Returns:
    float32 [..., C].
  """
  if method == 'unit':
    return to_float(images)
  if method not in NORMALIZATIONS:
    raise DataError(
        f'Unknown normalization {method!r}; use one of {NORMALIZATIONS}.'
    )
  images = np.asarray(images)
  if method == 'imagenet' and images.shape[-1] != 3:
    raise DataError(
        f'ImageNet normalisation needs RGB images, got {images.shape[-1]}'
        ' channel(s); set channels=3 in the data config.'
    )
  if method == 'bit' or images.dtype != np.uint8:
    return _normalize_formula(images.astype(np.float32), method)
  # A table of the 256 values per channel: the same numbers as the formula,
  # without its float temporaries (about twice as fast).
  table = _imagenet_table()
  images = np.ascontiguousarray(images)
  out = np.empty(images.shape, np.float32)
  for k in range(3):
    np.take(table[k], images[..., k], out=out[..., k])
  return out


def _normalize_formula(x: np.ndarray, method: str) -> np.ndarray:
  """normalize on float32 values (x in 0..255)."""
  if method == 'bit':
    return x / np.float32(127.5) - np.float32(1.0)
  mean = np.asarray(IMAGENET_MEAN, np.float32)
  std = np.asarray(IMAGENET_STD, np.float32)
  return (x / np.float32(255.0) - mean) / std


@functools.cache
def _imagenet_table() -> np.ndarray:
  """float32 [3, 256]: ImageNet normalisation of 0..255, per channel."""
  values = np.repeat(np.arange(256, dtype=np.float32)[:, None], 3, axis=1)
  table = np.ascontiguousarray(_normalize_formula(values, 'imagenet').T)
  table.setflags(write=False)
  return table
