"""Pixel-Adaptive Mask Refinement (Araslanov & Roth 2020) as ITACLIP applies it (SPEC §4.4).

Written here rather than taken from a library because no maintained package ships it, and the
reference implementation materialises (channels × 16 neighbours × H × W) tensors; this one
accumulates neighbour by neighbour, a few query channels at a time, so memory stays at a few copies
of a small part of the map; the affinities are computed in row bands, so of the guide's stencils
only the result (16 values per pixel) is image-sized, and on very large images (above
:data:`AFFINITY_MAX_BYTES` of affinities) not even that: the refinement itself runs in row bands.
"""

from __future__ import annotations

from typing import Optional, Sequence

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


def pamr_affinity(guide: torch.Tensor, dilations: Sequence[int], first: int = 0,
                  last: Optional[int] = None) -> torch.Tensor:
    """Softmax-normalised affinities (16 for two dilations, last - first, W) of rows [first, last)
    of a (C, H, W) guide image (default: all rows), computed in row bands
    (:data:`AFFINITY_BAND_PIXELS`): equal to :func:`_affinity` of the whole image within float
    rounding (PyTorch's vectorised ``exp`` and its scalar loop for the last elements may differ in
    the last bit, and which pixels are last depends on the band)."""
    _, height, width = guide.shape
    last = height if last is None else last
    rows = max(1, AFFINITY_BAND_PIXELS // width)
    if (first, last) == (0, height) and rows >= height:
        return _affinity(guide, dilations)
    halo = max(dilations)
    out = torch.empty(len(dilations) * len(NEIGHBOURS), last - first, width, dtype=guide.dtype,
                      device=guide.device)
    for top in range(first, last, rows):
        bottom = min(top + rows, last)
        above, below = max(0, top - halo), min(height, bottom + halo)
        band = _affinity(guide[:, above:below], dilations)
        out[:, top - first:bottom - first] = band[:, top - above:bottom - above]
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

#: Largest affinity tensor kept (16 floats per pixel for two dilations). A larger image is refined
#: in row bands, each with its own affinities: a pixel's refined value depends only on the map and
#: the guide within ``steps × max(dilations)`` rows (each step reaches ``max(dilations)`` rows
#: further), so a band computed with that many real rows above and below it (the halo) holds
#: exactly the values of one pass over the whole image. The halo rows are computed twice, which
#: costs ≈ 2·halo/band more time (≈ 8 % at 24 megapixels, 16 % at 50 with ITACLIP's 10 steps),
#: and only on images whose affinities would exceed this size (about 16 megapixels).
AFFINITY_MAX_BYTES = 1 << 30


def pamr(guide: torch.Tensor, logits: torch.Tensor, steps: int, dilations: Sequence[int] = (8, 16), *,
         inplace: bool = False) -> torch.Tensor:
    """Refine (Q, H, W) ``logits`` with a (C, H, W) ``guide``; each step replaces every pixel by the
    affinity-weighted sum of its neighbours (replicate padding). ``inplace``: the refined groups of
    channels are written back into ``logits`` (no second full-size map), which is returned."""
    if steps <= 0:
        return logits
    height, width = logits.shape[-2:]
    halo = steps * max(dilations)
    planes = len(dilations) * len(NEIGHBOURS)
    rows = max(AFFINITY_MAX_BYTES // (4 * planes * width) - 2 * halo, 2 * halo)
    if rows + 2 * halo < height:
        return _pamr_banded(guide.float(), logits if inplace else logits.clone(), steps, dilations, rows)
    affinity = pamr_affinity(guide.float(), dilations)
    del guide  # not needed for the steps: a caller that passed a temporary gets its memory back now
    per_chunk = max(1, CHUNK_ELEMENTS // (height * width))
    if per_chunk >= logits.shape[0]:
        return _refine(affinity, logits, steps, dilations)
    refined = logits if inplace else torch.empty_like(logits)
    for start in range(0, logits.shape[0], per_chunk):
        refined[start:start + per_chunk] = _refine(affinity, logits[start:start + per_chunk], steps, dilations)
    return refined


def _pamr_banded(guide: torch.Tensor, logits: torch.Tensor, steps: int, dilations: Sequence[int],
                 rows: int) -> torch.Tensor:
    """PAMR of ``logits`` in place, in bands of ``rows`` rows (at least 2 × the halo): each band is
    refined, a few channels at a time, together with the unrefined rows of the halo around it. The
    rows above a band were overwritten by the band before, so their unrefined values are kept
    aside (``kept``: the last ``halo`` rows of the band before, per channel) before that."""
    channels, height, width = logits.shape
    halo = steps * max(dilations)
    kept = torch.empty(channels, halo, width, dtype=logits.dtype, device=logits.device)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        first, last = max(0, top - halo), min(height, bottom + halo)
        affinity = pamr_affinity(guide, dilations, first, last)
        per_chunk = max(1, CHUNK_ELEMENTS // ((last - first) * width))
        for start in range(0, channels, per_chunk):
            group = slice(start, start + per_chunk)
            window = torch.cat([kept[group, halo - (top - first):], logits[group, top:last]], dim=1)
            refined = _refine(affinity, window, steps, dilations)  # rows [first, last), exact in the band
            if bottom < height:
                kept[group] = logits[group, bottom - halo:bottom]  # unrefined, for the band below
            logits[group, top:bottom] = refined[:, top - first:bottom - first]
        del affinity
    return logits


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
