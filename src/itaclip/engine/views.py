"""Image Engineering (SPEC §3): augmented views of each crop and the fusion of their logits.

First category (layout kept: greyscale, blur) — features averaged with the crop's own → L1.
Second category (flips) — logits flipped back and averaged → L2.  L = λ·L1 + (1-λ)·L2.
The augmentations are torchvision's own functions, as in the authors' code.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .config import FLIP_VIEWS, SPATIAL_VIEWS

BLUR_KERNEL = 11
BLUR_SIGMA = 5.0
#: Flip dimension of each second-category view on (..., H, W) tensors.
FLIP_DIMS = {"vflip": -2, "hflip": -1}


def view_names(image_engineering: bool, views: Sequence[str]) -> tuple[str, ...]:
    """The views encoded per crop, original first, in a fixed order."""
    if not image_engineering:
        return ("original",)
    return ("original",) + tuple(v for v in SPATIAL_VIEWS + FLIP_VIEWS if v in views)


def make_views(crops: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """(B, 3, h, w) normalised crops → (B·V, 3, h, w), views of each crop adjacent, in ``names`` order."""
    if any(name in ("grey", "blur") for name in names):
        from torchvision.transforms import functional as TF  # only when those views are on

    out = []
    for name in names:
        if name == "original":
            out.append(crops)
        elif name == "grey":
            out.append(TF.rgb_to_grayscale(crops).expand(-1, 3, -1, -1))
        elif name == "blur":
            out.append(TF.gaussian_blur(crops, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA]))
        else:
            out.append(crops.flip(FLIP_DIMS[name]))
    return torch.stack(out, dim=1).flatten(0, 1)


def make_region_views(regions: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """(B, h, w) region maps of crops → (B·V, h, w) in ``make_views`` order: flipped with flip views,
    unchanged by the others (greyscale and blur keep the layout)."""
    out = [regions.flip(FLIP_DIMS[name]) if name in FLIP_DIMS else regions for name in names]
    return torch.stack(out, dim=1).flatten(0, 1)


def fuse_patch_logits(features: torch.Tensor, names: Sequence[str], text: torch.Tensor,
                      grid: tuple[int, int], lam: float) -> torch.Tensor:
    """Per-crop logits L at patch resolution, (B, Q, gh, gw).

    features: (B·V, gh·gw, E) unit patch features in ``make_views`` order; text: (Q, E). Both
    categories are combined at patch resolution and upsampled once (:func:`add_upsampled`):
    bilinear upsampling is linear and commutes with flips, so this equals upsampling each term.
    """
    views = len(names)
    feats = features.view(-1, views, *features.shape[1:])
    spatial = [i for i, n in enumerate(names) if n not in FLIP_VIEWS]
    flips = [(i, FLIP_DIMS[n]) for i, n in enumerate(names) if n in FLIP_VIEWS]

    def patch_logits(f: torch.Tensor) -> torch.Tensor:  # (B, N, E) → (B, Q, gh, gw)
        return (f @ text.T).transpose(1, 2).reshape(f.shape[0], -1, *grid)

    logits = patch_logits(feats[:, spatial].mean(dim=1))
    if flips:
        flipped = sum(patch_logits(feats[:, i]).flip(dim) for i, dim in flips) / len(flips)
        logits = lam * logits + (1 - lam) * flipped
    return logits


#: Queries upsampled at a time by :func:`add_upsampled`: (64, 224, 224) fp32 is 12.8 MB, which the
#: allocator reuses from one window to the next, while blocks above 32 MB go back to the system
#: on release and are page-faulted in again on every allocation (a window's 183 COCO-Stuff
#: queries at once are 37 MB).
UPSAMPLE_QUERIES = 64


def add_upsampled(target: torch.Tensor, patch_logits: torch.Tensor,
                  padding: Optional[tuple[int, int, int, int]] = None) -> None:
    """``target += bilinear upsampling of patch_logits to target's size``; target: (Q, h, w) (a
    view of the canvas), patch_logits: (Q, gh, gw). Upsampling is per channel, so doing it a few
    queries at a time gives the same values. With ``padding`` (left, right, top, bottom) of a
    padded window, the logits are upsampled to the padded size and the window's part is added."""
    height, width = target.shape[-2:]
    left, right, top, bottom = padding or (0, 0, 0, 0)
    size = (height + top + bottom, width + left + right)
    for start in range(0, target.shape[0], UPSAMPLE_QUERIES):
        part = patch_logits[None, start:start + UPSAMPLE_QUERIES]
        upsampled = F.interpolate(part, size=size, mode="bilinear", align_corners=False)[0]
        target[start:start + UPSAMPLE_QUERIES] += upsampled[:, top:top + height, left:left + width]
