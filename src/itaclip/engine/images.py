"""Reading images the way the authors' pipeline does.

Images are decoded with OpenCV's ``IMREAD_COLOR``, as mmcv does for the authors' evaluation, so
pixels match theirs bit for bit (JPEG decoders differ between libraries). That flag also applies
EXIF orientation, expands greyscale to three channels, drops alpha and reduces 16-bit to 8-bit.

Before anything is decoded, the size an image file claims in its header is checked against a pixel
limit (:func:`pixel_limit`: ``$ITACLIP_MAX_PIXELS``, default 100 megapixels), so a small file that
claims 60000×60000 pixels (a decompression bomb) is refused in one line instead of filling memory.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from .errors import ItaclipError, one_line

#: Default pixel limit of image files (width × height, read from the header before decoding).
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "ITACLIP_MAX_PIXELS"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2")

ImageInput = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821


def parse_max_pixels(text: Union[str, float, int], source: str = "max pixels") -> int:
    """A pixel limit from text such as ``100e6`` or ``4000000``: a finite number ≥ 1."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ItaclipError(f"{source} must be a number of pixels such as 100e6, got {text!r}") from None
    if not math.isfinite(value) or value < 1:
        raise ItaclipError(f"{source} must be a finite number of pixels >= 1, got {text!r}")
    return int(value)


def pixel_limit() -> int:
    """The pixel limit of image files: ``$ITACLIP_MAX_PIXELS`` if set, else 100 megapixels."""
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    return parse_max_pixels(env, f"${MAX_PIXELS_ENV}") if env else DEFAULT_MAX_PIXELS


def header_pixels(path: Union[str, os.PathLike, bytes]) -> Optional[tuple[int, str]]:
    """(pixels, "W×H") claimed by an image file's header (or an encoded image's bytes), read without
    decoding the pixels (Pillow opens lazily); ``None`` for formats Pillow cannot identify (OpenCV
    then decides)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(path) if isinstance(path, (bytes, bytearray)) else path) as probe:
                width, height = probe.size
                return width * height, f"{width}×{height}"
        except Image.DecompressionBombError as exc:  # beyond Pillow's own limit: it names the count
            found = re.search(r"\((\d+) pixels\)", str(exc))
            return (int(found.group(1)) if found else 2**62), ""
        except Exception:  # noqa: BLE001 - Pillow raises assorted errors on unknown or broken headers
            return None


def check_pixels(path: Union[str, os.PathLike, bytes], limit: Optional[int] = None, source: str = "") -> None:
    """Refuse an image file (or an encoded image's bytes, named ``source`` in errors) whose header
    claims more than ``limit`` pixels (default :func:`pixel_limit`)."""
    limit = pixel_limit() if limit is None else limit
    claimed = header_pixels(path)
    if claimed is not None and claimed[0] > limit:
        pixels, shape = claimed
        raise ItaclipError(
            f"image {source or path} claims {shape + ' = ' if shape else ''}{pixels / 1e6:.1f} megapixels, "
            "more than the "
            f"limit of {limit / 1e6:g} (a decompression bomb, or a very large image: raise the limit with "
            f"--max-pixels or ${MAX_PIXELS_ENV} if you trust it)"
        )


def read_image(path: Union[str, os.PathLike], max_pixels: Optional[int] = None) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array (EXIF orientation applied).

    ``max_pixels``: the pixel limit checked from the header before decoding (default
    :func:`pixel_limit`)."""
    path = Path(path)
    if not path.is_file():
        raise ItaclipError(f"image {path} does not exist")
    check_pixels(path, max_pixels)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ItaclipError(f"cannot read image {path}: {exc.strerror or exc}") from None
    return decode_image(data, str(path))


def decode_image(data: Union[bytes, np.ndarray], source: str) -> np.ndarray:
    """An encoded image (a file's bytes) as an (H, W, 3) uint8 RGB array, decoded as :func:`read_image`
    does; ``source`` names it in errors."""
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    logging = cv2.utils.logging  # a broken file is our one-line error, without OpenCV's warnings too
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error as exc:  # e.g. OpenCV's own pixel limit on a format Pillow does not know
        raise ItaclipError(f"cannot read image {source}: {one_line(exc)}") from None
    finally:
        logging.setLogLevel(level)
    if image is None:
        raise ItaclipError(f"cannot read image {source}: not an image, truncated, or an unsupported format")
    return np.ascontiguousarray(image[:, :, ::-1])


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """Any supported image input as an (H, W, 3) uint8 RGB array.

    Accepts a path, a PIL image, or an array: (H, W) greyscale, (H, W, 3) RGB, (H, W, 4) RGBA
    (alpha dropped), uint8, uint16 (high byte kept, as OpenCV does) or float in [0, 1].
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if not isinstance(image, np.ndarray):
        try:
            from PIL import Image, ImageOps
        except ImportError:  # pragma: no cover - Pillow is a dependency
            raise ItaclipError(f"unsupported image type {type(image).__name__}") from None
        if not isinstance(image, Image.Image):
            raise ItaclipError(f"unsupported image type {type(image).__name__}: give a path, array or PIL image")
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = np.asarray(image).astype(np.uint16)
        else:
            image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ItaclipError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ItaclipError("image array has NaN or infinite values")
        array = np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ItaclipError(f"unsupported image dtype {array.dtype}: use uint8, uint16 or float in [0, 1]")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])
