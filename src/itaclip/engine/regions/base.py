"""What every region source is: ``source(image, name) -> (H, W) int32``, plus its identity and counts."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..images import ImageInput

#: CorrCLIP pads window masks with 10000 and numbers merged regions from 10000 up: ids must stay below.
RESERVED_ID = 10000


class RegionSource:
    """A source of region maps (files, or a generator with its cache).

    Call it with an image and the image's name; it returns the image's region map. Subclasses
    implement :meth:`region_map`, :attr:`identity` and :attr:`description`.
    """

    def __init__(self) -> None:
        self.stats = {"read": 0, "generated": 0, "cached": 0, "seconds": 0.0}
        """Maps read from files, generated, and taken from the cache; seconds spent generating."""

    def __call__(self, image: ImageInput, name: Optional[str] = None) -> np.ndarray:
        """The region map of ``image``.

        Args:
            image: the image as the segmenter sees it: an (H, W, 3) uint8 RGB array (the usual case:
                the caller has decoded it already), a path or a PIL image (decoded as
                :func:`itaclip.engine.images.to_rgb_array` does, EXIF orientation applied).
            name: the image's path relative to the input folder (``"street/0001.jpg"``; for one
                image, its file name). Files are looked up by it; a generator ignores it.

        Returns:
            (H, W) int32 region ids in 0…9999 at the image's size; the smallest value present is
            "unsegmented".

        Raises:
            ItaclipError: one line, for this image only (the caller reports it and goes on).
        """
        return self.region_map(image, name)

    def region_map(self, image: ImageInput, name: Optional[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def identity(self) -> dict:
        """What decides this source's maps, as JSON data (for run manifests and eval run folders)."""
        raise NotImplementedError

    @property
    def description(self) -> str:
        """One line for logs, e.g. ``SAM2 regions (facebook/sam2.1-hiera-large, 8×8 points), cached in …``."""
        raise NotImplementedError
