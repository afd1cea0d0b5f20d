"""Pictures people look at: a colour overlay of the label map with a legend of the classes present."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 colours: the PASCAL VOC colour map (bit-interleaved class index), the field's
    convention, so index 0 is black and VOC classes get their familiar colours."""
    colors = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors[index] = (r, g, b)
    return colors


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def overlay(image: np.ndarray, labels: np.ndarray, class_names: Sequence[str], alpha: float = 0.5,
            classes: Optional[Sequence[int]] = None) -> np.ndarray:
    """Blend the colour-coded labels over the (H, W, 3) uint8 RGB image and append a legend panel
    listing the classes present (largest area first, with their share of the image).

    Returns an (H', W', 3) uint8 RGB image (wider than the input by the legend's width).
    """
    pal = palette(max(len(class_names), int(labels.max()) + 1))
    colors = pal[labels]
    blended = (image.astype(np.float32) * (1 - alpha) + colors.astype(np.float32) * alpha).round().astype(np.uint8)
    counts = np.bincount(labels.ravel(), minlength=len(class_names))
    shown = classes if classes is not None else [int(c) for c in np.argsort(-counts, kind="stable") if counts[c]]
    height = image.shape[0]
    size = int(np.clip(height / 28, 11, 28))
    font = _font(size)
    rows = [f"{class_names[c]}  {100.0 * counts[c] / labels.size:.1f}%" for c in shown]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((measure.textlength(row, font=font) for row in rows), default=0)
    pad = size // 2
    panel_w = int(pad * 3 + size + text_w)
    panel_h = max(height, pad + len(rows) * (size + pad))
    canvas = Image.new("RGB", (image.shape[1] + panel_w, panel_h), (255, 255, 255))
    canvas.paste(Image.fromarray(blended), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = image.shape[1] + pad
    for row_index, (c, row) in enumerate(zip(shown, rows)):
        y = pad + row_index * (size + pad)
        draw.rectangle([x0, y, x0 + size, y + size], fill=tuple(int(v) for v in pal[c]), outline=(0, 0, 0))
        draw.text((x0 + size + pad, y), row, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def probability_map(probs: np.ndarray, index: int) -> np.ndarray:
    """(H, W, 3) uint8 heat map of one class's probabilities (OpenCV's JET colour map)."""
    import cv2

    gray = np.clip(probs[index] * 255.0, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(gray, cv2.COLORMAP_JET)[:, :, ::-1].copy()


def probability_overlay(image: np.ndarray, probs: np.ndarray, index: int, alpha: float = 0.6) -> np.ndarray:
    """One class's probability map (JET colours) blended over an (H, W, 3) uint8 image; ``probs``
    (C, H, W) in [0, 1]."""
    colours = probability_map(probs, index)
    return (colours.astype(np.float32) * alpha + image.astype(np.float32) * (1 - alpha)).round().astype(np.uint8)
