"""Region maps given with an image (segment ids per pixel), and the label stage that votes over them.

A region map is an (H, W) array of non-negative integer ids at the image's original size; the
smallest id present means "unsegmented" (0 in SAM's and CorrCLIP's files). Ids stay below
:data:`REGION_ID_LIMIT` because CorrCLIP's pipeline pads windows' maps with that value and numbers
merged regions from it, and because the maps are resized as float32 (exact below 2²⁴).
"""

from __future__ import annotations

import numpy as np

from ..errors import ItaclipError

REGION_ID_LIMIT = 10000


def check_region_map(regions: object, height: int, width: int) -> np.ndarray:
    """``regions`` as an (H, W) int64 array, or a one-line error: wrong size, not integers, an id
    outside 0 … 9999."""
    array = np.asarray(regions)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape != (height, width):
        shape = "×".join(str(n) for n in array.shape[::-1]) if array.ndim else "a scalar"
        raise ItaclipError(f"the region map is {shape}, the image {width}×{height}: a region map has the image's "
                           "own size (one id per pixel)")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        if not (np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0)):
            raise ItaclipError(f"a region map holds integer ids, not {array.dtype} values")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= REGION_ID_LIMIT):
        raise ItaclipError(f"region ids must be in 0…{REGION_ID_LIMIT - 1} (this map holds "
                           f"{array.min()}…{array.max()}): renumber the regions (their order does not matter; "
                           "the smallest id means 'unsegmented')")
    return array


def region_vote(labels: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Every region but the unsegmented (smallest id) one takes the most frequent label of its
    pixels, the smallest label on ties (``torch.mode``'s rule, as CorrCLIP's map correction);
    unsegmented pixels keep theirs. ``labels``, ``regions``: (H, W); returns ``labels``' dtype."""
    ids, index = np.unique(regions, return_inverse=True)
    if len(ids) < 2:
        return labels
    index = index.reshape(-1)
    classes = int(labels.max()) + 1
    counts = np.bincount(index * classes + labels.reshape(-1).astype(np.int64),
                         minlength=len(ids) * classes).reshape(len(ids), classes)
    winner = counts.argmax(axis=1).astype(labels.dtype)  # first maximum: the smallest label
    voted = winner[index].reshape(labels.shape)
    return np.where(index.reshape(labels.shape) == 0, labels, voted)
