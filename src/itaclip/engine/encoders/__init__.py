"""Window encoders: a batch of crops → L2-normalised patch features, one family per module.

``vit`` holds CLIP's vision transformer as steps (:class:`~.vit.VisionTrunk`); each method's
encoder composes them (``last_block``: the methods that change only CLIP's last block, with
ResCLIP's RCS and SFR; ``scclip``: SC-CLIP and SFP; ``pearl``: PEARL).

Every encoder is an ``nn.Module`` with ``patch_size`` and
``forward(images (B, 3, h, w), context: WindowContext | None) → (features (B, N, E), (gh, gw))``:
unit features of the N = gh·gw cells of its output grid, row-major.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class WindowContext:
    """What a window encoder may read besides its crops: the image's text features, and the
    batch's cuts of per-image maps."""

    text: torch.Tensor
    """(Q, E) unit query features (a second pass guided by first-pass labels needs them)."""
    regions: Optional[torch.Tensor] = None
    """(B, h, w) float32 region ids of the batch's windows before padding (the image's region map,
    resized to the working size and cut like the crops; flipped with flip views), for methods that
    read region maps; None otherwise."""
