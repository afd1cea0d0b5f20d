"""Generated region maps on disk, so that re-runs, ``itaclip eval`` and the Label Studio backend never
make the same map twice.

One entry per image and generator setting, in ``$ITACLIP_CACHE/regions`` (default
``~/.cache/itaclip/regions``), sharded in 256 subfolders. The key is the SHA-256 of

* the **decoded pixels** (shape and RGB bytes), not the file's bytes: the generator sees pixels, and
  the same image reaches the engine as a file (``segment``, ``eval``), as downloaded bytes (Label
  Studio) or as an array (the Python API, the demo), which all share one entry; a decoder that
  decodes differently gets its own entry, as it should;
* the generator: its kind, its weights' identity (hub repository and commit, or the SHA-256 of a
  folder's files), every setting that changes maps (points, thresholds, NMS) and
  :data:`~.generator.GENERATOR_VERSION`; not the device nor the batch size (they do not change
  maps beyond float rounding).

An entry is a 16-bit PNG of the map (ids < 10000; a few kB to tens of kB per image) inside the
engine's checksummed cache entry (:class:`~itaclip.engine.feature_cache.FeatureCache`: written
atomically, a damaged or truncated entry is detected, made again and overwritten). Growth is
bounded: when the folder passes ``max_bytes`` (default 1 GiB, about 50 000 maps of 640 × 480), the
entries used least recently (a hit refreshes an entry's time) are deleted down to 80 % of it; the
folder is measured after the first write and every 64 writes of a process. Deleting the folder
at any time is safe.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import torch

from ..feature_cache import FeatureCache, cache_root
from ..files import encode_png
from ..images import ImageInput, to_rgb_array
from .base import RegionSource

#: Default size limit of the regions cache folder.
DEFAULT_MAX_BYTES = 2**30
#: Writes between two measurements of the folder.
CHECK_EVERY = 64


def default_regions_cache_dir() -> Path:
    """Where generated region maps are cached: ``regions/`` in itaclip's cache folder."""
    return cache_root() / "regions"


class RegionCache:
    """Region maps on disk, addressed by :meth:`key` (module docstring: format and bounds).

    Args:
        directory: ``None`` → :func:`default_regions_cache_dir`. An unusable folder only disables
            caching (one warning).
        max_bytes: the folder's size limit (least recently used entries go first).
    """

    def __init__(self, directory: Union[str, os.PathLike, None] = None, *,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        folder = default_regions_cache_dir() if directory is None else directory
        self.store = FeatureCache(folder, sharded=True)
        self.directory = self.store.directory
        self.max_bytes = int(max_bytes)
        self._writes = 0

    def __repr__(self) -> str:
        return f"RegionCache({str(self.directory)!r})"

    def key(self, image: np.ndarray, generator_identity: dict) -> str:
        """The entry of the (H, W, 3) uint8 ``image`` made by the generator of ``generator_identity``."""
        pixels = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
        return self.store.key(kind="regions", shape=list(image.shape), dtype=str(image.dtype), pixels=pixels,
                              generator=generator_identity)

    def get(self, key: str) -> Optional[np.ndarray]:
        """The stored (H, W) int32 map, or ``None`` (absent, damaged: one warning)."""
        entry = self.store.get(key)
        if entry is None:
            return None
        region_map = cv2.imdecode(entry.numpy(), cv2.IMREAD_UNCHANGED) if entry.dtype == torch.uint8 else None
        if region_map is None or region_map.ndim != 2 or region_map.dtype != np.uint16:
            warnings.warn(f"itaclip: cache entry {self.store.path(key)} is not a region map; making it again",
                          stacklevel=2)
            return None
        try:
            os.utime(self.store.path(key))  # recently used: evicted last
        except OSError:
            pass
        return region_map.astype(np.int32)

    def put(self, key: str, region_map: np.ndarray) -> None:
        """Store a map (ids 0…9999); then keep the folder under its limit."""
        png = np.frombuffer(encode_png(np.ascontiguousarray(region_map, dtype=np.uint16)), dtype=np.uint8)
        if self.store.put(key, torch.from_numpy(png.copy())):
            if self._writes % CHECK_EVERY == 0:
                self.evict()
            self._writes += 1

    def evict(self) -> int:
        """Delete the least recently used entries while the folder holds more than ``max_bytes``
        (down to 80 % of it); the number of entries deleted."""
        entries = []
        for path in self.directory.glob("*/*.pt"):
            try:
                stat = path.stat()
            except OSError:  # deleted meanwhile by another process
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return 0
        deleted = 0
        for _, size, path in sorted(entries):
            if total <= 0.8 * self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            deleted += 1
        return deleted


class GeneratedRegions(RegionSource):
    """A :class:`~.generator.RegionGenerator` with a :class:`RegionCache` in front (``cache=None``:
    every map is generated)."""

    def __init__(self, generator, cache: Optional[RegionCache]) -> None:
        super().__init__()
        self.generator = generator
        self.cache = cache

    def region_map(self, image: ImageInput, name: Optional[str]) -> np.ndarray:
        image = to_rgb_array(image)
        key = self.cache.key(image, self.generator.identity) if self.cache is not None else None
        if key is not None:
            region_map = self.cache.get(key)
            if region_map is not None and region_map.shape == image.shape[:2]:
                self.stats["cached"] += 1
                return region_map
        start = time.perf_counter()
        region_map = self.generator.generate(image)
        self.stats["seconds"] += time.perf_counter() - start
        self.stats["generated"] += 1
        if key is not None:
            self.cache.put(key, region_map)
        return region_map

    @property
    def identity(self) -> dict:
        return {"source": "generated", **self.generator.identity}

    @property
    def description(self) -> str:
        where = f"cached in {self.cache.directory}" if self.cache is not None else "not cached"
        return f"{self.generator.description}, {where}"
