"""Region maps from files (``--regions DIR``): the authors' published masks, or a user's label images.

Per image, the first file that exists of ``DIR/<relative path>.npz``, ``DIR/<relative path>.png``
(the relative path with its suffix replaced, as ``itaclip segment`` names its outputs), then
``DIR/<stem>.npz``, ``DIR/<stem>.png`` (CorrCLIP's published masks: one flat folder per dataset,
``<stem>.npz`` with the key ``instance_mask``). A ``.png`` is an 8- or 16-bit single-channel label
image (greyscale or palette: the stored values are the ids).

Sizes are checked from the file's header before anything is decoded (an ``.npz`` member's ``.npy``
header, a PNG's IHDR) against the image's size (which its own pixel limit bounded), or against the
engine's pixel limit when no size is given, so a small file that claims a huge array is refused
without filling memory.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional, Union

import numpy as np

from ..errors import ItaclipError, one_line
from ..images import ImageInput, pixel_limit, to_rgb_array
from .base import RESERVED_ID, RegionSource

#: Region file formats, in the order they are looked for.
REGION_SUFFIXES = (".npz", ".png")
#: The array of an ``.npz`` region file (CorrCLIP's name).
NPZ_KEY = "instance_mask"
#: Pillow modes of single-channel PNGs: 8-bit grey, palette (indices are the ids), 16-bit grey.
PNG_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")


class RegionFolder(RegionSource):
    """Region maps read from a folder of ``.npz`` / ``.png`` files (module docstring: which file)."""

    def __init__(self, folder: Union[str, os.PathLike]) -> None:
        super().__init__()
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise ItaclipError(f"region folder {self.folder} does not exist or is not a folder "
                               "(--regions DIR)")

    def region_map(self, image: ImageInput, name: Optional[str]) -> np.ndarray:
        if name is None and isinstance(image, (str, os.PathLike)):
            name = Path(image).name
        if not name:
            raise ItaclipError("region files are found by the image's name: give it with the image")
        shape = _image_shape(image)
        candidates = region_file_candidates(self.folder, name)
        for path in candidates:
            if path.is_file():
                region_map = read_region_file(path, shape)
                self.stats["read"] += 1
                return region_map
        tried = " or ".join(str(path) for path in candidates[::len(REGION_SUFFIXES)])
        raise ItaclipError(f"no region map for {name}: expected {tried} (.npz with key {NPZ_KEY}, or a "
                           "label .png)")

    @property
    def identity(self) -> dict:
        return {"source": "files", "folder": str(self.folder.resolve())}

    @property
    def description(self) -> str:
        return f"region maps from {self.folder}"


def region_file_candidates(folder: Path, name: Union[str, os.PathLike]) -> list[Path]:
    """The files that may hold the region map of the image ``name``, in the order they are tried.

    ``name`` is the image's path relative to its input folder (POSIX separators). A name that is
    absolute or climbs out with ``..`` is only looked up by its stem, so no name reaches outside
    ``folder``.
    """
    relative = PurePosixPath(os.fspath(name))
    paths = []
    if relative.parts and not relative.is_absolute() and ".." not in relative.parts:
        base = relative.parent / relative.stem
        paths += [folder / f"{base}{suffix}" for suffix in REGION_SUFFIXES]
    paths += [path for path in (folder / f"{relative.stem}{suffix}" for suffix in REGION_SUFFIXES)
              if path not in paths]
    return paths


def read_region_file(path: Union[str, os.PathLike], shape: Optional[tuple[int, int]] = None) -> np.ndarray:
    """A region file as an (H, W) int32 array of ids in 0…9999.

    Args:
        path: an ``.npz`` (array ``instance_mask``) or a single-channel 8/16-bit ``.png``.
        shape: the image's (H, W): the map must have it (checked before decoding); ``None``: any
            size within the engine's pixel limit (:func:`~itaclip.engine.images.pixel_limit`).

    Raises:
        ItaclipError: one line: unknown format, unreadable, no ``instance_mask``, not a 2-D integer
            array, another size, more pixels than the limit, negative ids or ids ≥ 10000.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            array = _read_npz(path, shape)
        elif suffix == ".png":
            array = _read_png(path, shape)
        else:
            raise ItaclipError(f"region map {path}: unknown format {suffix or '(no suffix)'}; use .npz "
                               f"(array {NPZ_KEY}) or a label .png")
    except ItaclipError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, SyntaxError) as exc:
        raise ItaclipError(f"cannot read region map {path}: {one_line(exc)}") from None
    return _checked_ids(array, path)


def _image_shape(image: ImageInput) -> tuple[int, int]:
    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        return int(image.shape[0]), int(image.shape[1])
    return tuple(to_rgb_array(image).shape[:2])


def _check_size(path: Path, found: tuple[int, ...], expected: Optional[tuple[int, int]]) -> None:
    if len(found) != 2:
        raise ItaclipError(f"region map {path} has shape {found}: it must be a 2-D (H, W) array")
    height, width = found
    if expected is not None:
        if (height, width) != tuple(expected):
            raise ItaclipError(f"region map {path} is {width}×{height} pixels but its image is {expected[1]}×"
                               f"{expected[0]}: region maps must have the image's original size")
        return
    limit = pixel_limit()
    if height * width > limit:
        raise ItaclipError(f"region map {path} claims {width}×{height} = {height * width / 1e6:.1f} "
                           f"megapixels, more than the limit of {limit / 1e6:g}")


def _read_npz(path: Path, shape: Optional[tuple[int, int]]) -> np.ndarray:
    member = f"{NPZ_KEY}.npy"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if member not in names:
            keys = ", ".join(sorted(n[:-4] for n in names if n.endswith(".npy"))) or "no arrays"
            raise ItaclipError(f"region map {path} has no array {NPZ_KEY!r} (it has {keys})")
        with archive.open(member) as stream:  # the header first: shape and dtype before any data
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                found, _, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                found, _, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ItaclipError(f"region map {path}: {NPZ_KEY} is not a plain integer array (.npy format "
                                   f"{version[0]}.{version[1]})")
        if not np.issubdtype(dtype, np.integer):
            raise ItaclipError(f"region map {path} holds {dtype} values: region ids must be integers")
        _check_size(path, tuple(found), shape)
        with archive.open(member) as stream:
            return np.lib.format.read_array(stream, allow_pickle=False)


def _read_png(path: Path, shape: Optional[tuple[int, int]]) -> np.ndarray:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path, formats=["PNG"]) as png:
                width, height = png.size
                _check_size(path, (height, width), shape)
                if png.mode not in PNG_MODES:
                    raise ItaclipError(f"region map {path} is a {png.mode} PNG: region maps are "
                                       "single-channel 8- or 16-bit label images")
                return np.asarray(png)
        except Image.DecompressionBombError:
            raise ItaclipError(f"region map {path} is too large for Pillow's PNG decoder: store it as .npz") \
                from None
        except Image.UnidentifiedImageError:
            raise ItaclipError(f"cannot read region map {path}: not a PNG file") from None


def _checked_ids(array: np.ndarray, path: Path) -> np.ndarray:
    if array.size and int(array.min()) < 0:
        raise ItaclipError(f"region map {path} has negative ids ({int(array.min())}): ids must be 0…"
                           f"{RESERVED_ID - 1}")
    if array.size and int(array.max()) >= RESERVED_ID:
        raise ItaclipError(f"region map {path} has id {int(array.max())}: ids must be below {RESERVED_ID} "
                           "(CorrCLIP reserves them for padding and merged regions); renumber the regions")
    return np.ascontiguousarray(array, dtype=np.int32)
