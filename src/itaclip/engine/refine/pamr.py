"""Pixel-Adaptive Mask Refinement (Araslanov & Roth 2020) as ITACLIP applies it (SPEC §4.4).

Written here rather than taken from a library because no maintained package ships it, and the
reference implementation materialises (channels × 16 neighbours × H × W) tensors; this one
accumulates neighbour by neighbour, a few query channels at a time, so memory stays at a few copies
of a small part of the map; the affinities are computed in row bands, so of the guide's stencils
only the result (16 values per pixel) is ever image-sized.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

#: The 3×3 stencil's offsets minus the centre, in the reference's kernel order.
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _shifted(padded: torch.Tensor, pad: int, dy: int, dx: int, height: int, width: int) -> torch.Tensor:
    return padded[..., pad + dy:pad + dy + height, pad + dx:pad + dx + width]


#: Pixels of the guide whose affinities are computed at a time. The affinity of a pixel depends on
#: the guide within the largest dilation, so the image is cut into row bands with that many rows of
#: real neighbours above and below: each pixel sees exactly the values it sees in one pass, and the
#: temporaries (about 120 floats per pixel for two dilations) stay at the band's size.
AFFINITY_BAND_PIXELS = 1 << 18


def pamr_affinity(guide: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """Softmax-normalised affinities (16 for two dilations, H, W) of a (C, H, W) guide image,
    computed in row bands (:data:`AFFINITY_BAND_PIXELS`): equal to :func:`_affinity` of the whole
    image within float rounding (PyTorch's vectorised ``exp`` and its scalar loop for the last
    elements may differ in the last bit, and which pixels are last depends on the band)."""
    _, height, width = guide.shape
    rows = max(1, AFFINITY_BAND_PIXELS // width)
    if rows >= height:
        return _affinity(guide, dilations)
    halo = max(dilations)
    out = torch.empty(len(dilations) * len(NEIGHBOURS), height, width, dtype=guide.dtype, device=guide.device)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        first, last = max(0, top - halo), min(height, bottom + halo)
        out[:, top:bottom] = _affinity(guide[:, first:last], dilations)[:, top - first:bottom - first]
    return out


def _affinity(guide: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    channels, height, width = guide.shape
    stencil, diffs = [], []
    for d in dilations:
        padded = F.pad(guide[None], [d] * 4, mode="replicate")[0]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                stencil.append(_shifted(padded, d, dy * d, dx * d, height, width))
        diffs.extend((guide - _shifted(padded, d, dy * d, dx * d, height, width)).abs()
                     for dy, dx in NEIGHBOURS)
    std = torch.stack(stencil, dim=1).std(dim=1)  # (C, H, W), unbiased, over all dilations' stencils
    denom = 1e-8 + 0.1 * std
    affinity = torch.stack([(-diff / denom).mean(dim=0) for diff in diffs])  # (P, H, W)
    return affinity.softmax(dim=0)


#: Elements of the map refined at a time: PAMR treats every query channel independently, so
#: channels are refined in groups of about this size, all steps per group, while the group's
#: planes are still in the cache (about 1.5× faster than streaming the whole map each step).
CHUNK_ELEMENTS = 1 << 19


def pamr(guide: torch.Tensor, logits: torch.Tensor, steps: int, dilations: Sequence[int] = (8, 16), *,
         inplace: bool = False) -> torch.Tensor:
    """Refine (Q, H, W) ``logits`` with a (C, H, W) ``guide``; each step replaces every pixel by the
    affinity-weighted sum of its neighbours (replicate padding). ``inplace``: the refined groups of
    channels are written back into ``logits`` (no second full-size map), which is returned."""
    if steps <= 0:
        return logits
    affinity = pamr_affinity(guide.float(), dilations)
    del guide  # not needed for the steps: a caller that passed a temporary gets its memory back now
    height, width = logits.shape[-2:]
    per_chunk = max(1, CHUNK_ELEMENTS // (height * width))
    if per_chunk >= logits.shape[0]:
        return _refine(affinity, logits, steps, dilations)
    refined = logits if inplace else torch.empty_like(logits)
    for start in range(0, logits.shape[0], per_chunk):
        refined[start:start + per_chunk] = _refine(affinity, logits[start:start + per_chunk], steps, dilations)
    return refined


def _refine(affinity: torch.Tensor, logits: torch.Tensor, steps: int, dilations: Sequence[int]) -> torch.Tensor:
    height, width = logits.shape[-2:]
    offsets = [(d, dy * d, dx * d) for d in dilations for dy, dx in NEIGHBOURS]
    for _ in range(steps):
        padded = {d: F.pad(logits[None], [d] * 4, mode="replicate")[0] for d in dilations}
        out = torch.zeros_like(logits)
        for weight, (d, dy, dx) in zip(affinity, offsets):
            out.addcmul_(_shifted(padded[d], d, dy, dx, height, width), weight)
        logits = out
    return logits
