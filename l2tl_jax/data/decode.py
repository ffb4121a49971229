"""Image bytes decoded to uint8 arrays, by a fixed set of Pillow formats.

Images are decoded only as PNG, JPEG, BMP, GIF, WebP or TIFF, whatever their
extension: Pillow's other plugins (EPS runs Ghostscript, for one) never see the
bytes. A file of another type is a DataError naming the file and its type
(detect_format reads it from the first bytes, opening nothing).
"""

import io
from typing import Callable

import numpy as np
from PIL import Image

from l2tl_jax.data.errors import DataError

# The only Pillow formats ever used to decode an image (Pillow's format ids).
DECODE_FORMATS = ('PNG', 'JPEG', 'BMP', 'GIF', 'WEBP', 'TIFF')


def detect_format(data: bytes) -> str:
  """Names the file type of encoded bytes from their first bytes.

  Only Pillow's header checks run (no plugin opens the data), so this is safe
  on any file.

  Args:
    data: the file content (its first 64 bytes are enough).

  Returns:
    A Pillow format id ('PNG', 'EPS', ...), or 'unknown'.
  """
  prefix = bytes(data[:64])
  Image.init()  # Registers every plugin's header check; opens nothing.
  for fmt in Image.ID:
    _, accept = Image.OPEN[fmt]
    try:
      if accept is not None and accept(prefix):
        return fmt
    except Exception:  # pylint: disable=broad-except  # A check on odd bytes.
      continue
  return 'unknown'


def decode_image(data: bytes, name: str | Callable[[], str] = '<bytes>'
                 ) -> np.ndarray:
  """Decodes image bytes to uint8 [H, W, C], C = 1 (gray) or 3 (RGB).

  Only DECODE_FORMATS are read; no mode is refused. Palette, CMYK and alpha
  images become RGB (alpha dropped), 8-bit gray (and gray+alpha) stays gray (1
  channel); 16-bit images are scaled to 8 bits (x / 256, i.e. the high byte:
  65535 -> 255), not clipped.

  Args:
    data: the encoded file content.
    name: the file name, or a function returning it, for the error message.

  Returns:
    uint8 [H, W, 1] or [H, W, 3].

  Raises:
    DataError: the bytes are not a readable image of an allowed format.
  """
  try:
    with Image.open(io.BytesIO(data), formats=DECODE_FORMATS) as img:
      img.load()
      mode = img.mode
      if mode in ('I', 'F') or mode.startswith('I;16'):
        arr = np.asarray(img).astype(np.float64)
        scale = 1.0 if mode == 'F' else 1.0 / 256.0
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
      elif mode in ('1', 'L', 'LA'):
        arr = np.asarray(img.convert('L'))
      else:
        arr = np.asarray(img.convert('RGB'))
  except Exception as e:  # PIL raises many types for bad files.
    shown = name() if callable(name) else name
    fmt = detect_format(data)
    if fmt != 'unknown' and fmt not in DECODE_FORMATS:
      raise DataError(
          f'Image {shown} is of type {fmt}, which is not read here (only'
          f' {", ".join(DECODE_FORMATS)}, whatever the extension says);'
          ' convert it to PNG or JPEG, or remove it.'
      ) from e
    raise DataError(
        f'Cannot decode image {shown} ({e}); replace or remove the file.'
    ) from e
  if arr.ndim == 2:
    arr = arr[..., None]
  return np.ascontiguousarray(arr)
