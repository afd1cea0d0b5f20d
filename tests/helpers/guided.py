"""Inputs and stage hooks of the guided methods' tests: region maps, the engine's DINO in the reference."""

from __future__ import annotations

import numpy as np
import torch


def regions_for(height: int, width: int, seed: int = 0, count: int = 6, base: int = 0) -> np.ndarray:
    """A region map with an unsegmented part (``base``) and ``count`` rectangles of scattered ids."""
    rng = np.random.default_rng(seed)
    regions = np.full((height, width), base, np.int64)
    for value in base + 1 + rng.choice(9000, size=count, replace=False):
        y, x = rng.integers(0, height - 4), rng.integers(0, width - 4)
        regions[y:y + rng.integers(4, height // 2 + 5), x:x + rng.integers(4, width // 2 + 5)] = value
    return regions


def engine_dino_forward(trunk):
    """``reference_dino_forward`` computed by the engine's DINO (``trunk``, a DinoTrunk) on the
    reference's own input: (final tokens, q + k tokens), class token first."""
    def forward(dino_state, image):
        with torch.no_grad():
            x = trunk.embed_dino_input(image[None])
            for index in range(trunk.depth - 1):
                x = trunk.block(index, x)
            qkv = trunk.qkv(trunk.depth - 1, x)
            qk = qkv[..., :trunk.width] + qkv[..., trunk.width:2 * trunk.width]
            final = trunk.model.norm(trunk.block(trunk.depth - 1, x))
        return final[0], qk[0]

    return forward
