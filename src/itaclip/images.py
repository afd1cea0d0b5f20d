"""Reading images the way the authors' pipeline does.

Images are decoded with OpenCV's ``IMREAD_COLOR``, as mmcv does for the authors' evaluation, so
pixels match theirs bit for bit (JPEG decoders differ between libraries). That flag also applies
EXIF orientation, expands greyscale to three channels, drops alpha and reduces 16-bit to 8-bit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from .errors import ItaclipError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2")

ImageInput = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821


def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array (EXIF orientation applied)."""
    path = Path(path)
    if not path.is_file():
        raise ItaclipError(f"image {path} does not exist")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ItaclipError(f"cannot read image {path}: {exc.strerror or exc}") from None
    return decode_image(data, str(path))


def decode_image(data: Union[bytes, np.ndarray], source: str) -> np.ndarray:
    """An encoded image (a file's bytes) as an (H, W, 3) uint8 RGB array, decoded as :func:`read_image`
    does; ``source`` names it in errors."""
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ItaclipError(f"cannot read image {source}: not an image or an unsupported format")
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
