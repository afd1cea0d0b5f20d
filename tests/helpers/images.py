"""Small synthetic pictures: (h, w, 3) uint8 RGB arrays."""

from __future__ import annotations

import numpy as np


def make_random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Uniform noise, (h, w, 3) uint8 RGB."""
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)

def make_smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus a few soft blobs and mild noise: no flat regions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([
        128 + 100 * np.sin(xx / max(w, 1) * 3.1 + rng.uniform(0, 6)) * np.cos(yy / max(h, 1) * 2.3),
        128 + 100 * np.cos((xx + yy) / max(h + w, 1) * 5.0 + rng.uniform(0, 6)),
        128 + 100 * np.sin(yy / max(h, 1) * 4.0 + rng.uniform(0, 6)),
    ], axis=-1)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.1, 0.3) * min(h, w)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(-80, 80, size=3)
    img += rng.normal(0, 2.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)

def make_blocks_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Piecewise-constant colour rectangles: exactly flat regions (a PAMR stress case)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 256, size=3)
    for _ in range(5):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = y0 + rng.integers(h // 5, h // 2 + 1), x0 + rng.integers(w // 5, w // 2 + 1)
        img[y0:y1, x0:x1] = rng.integers(0, 256, size=3)
    return img
