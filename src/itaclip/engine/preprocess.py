"""Image → normalised tensor at the working resolution, and the sliding-window grid (SPEC §4.1–2)."""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import cv2
import numpy as np
import torch


def rescaled_size(height: int, width: int, short_side: int, long_side_cap: int) -> tuple[int, int]:
    """(h, w) after mmcv's keep-ratio rescale: f = min(cap / long, short_side / short)."""
    factor = min(long_side_cap / max(height, width), short_side / min(height, width))
    # A side the rule rounds to 0 (a 4100×1 strip under a 2048 cap) is kept at 1 pixel; every
    # other size is the rule's own.
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def resize_image(image: np.ndarray, short_side: int, long_side_cap: int) -> np.ndarray:
    """Bilinear (OpenCV) keep-ratio resize of an (H, W, 3) uint8 image; unchanged if the size is."""
    height, width = image.shape[:2]
    new_h, new_w = rescaled_size(height, width, short_side, long_side_cap)
    if (new_h, new_w) == (height, width):
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def normalize(image: np.ndarray, device: torch.device | str, mean: Sequence[float],
              std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB → (3, H, W) float32, normalised with the model's mean and std (0–255
    scale, :attr:`itaclip.engine.weights.Backbone.mean`)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float()
    mean = torch.tensor(mean, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(std, device=tensor.device).view(3, 1, 1)
    return (tensor - mean) / std


class Window(NamedTuple):
    y1: int
    y2: int
    x1: int
    x2: int


def sliding_windows(height: int, width: int, crop: int, stride: int) -> list[Window]:
    """mmseg's grid: windows every ``stride`` pixels, the last pushed back inside the image; a side
    shorter than ``crop`` gives windows spanning that whole side."""
    h_grids = max(height - crop + stride - 1, 0) // stride + 1
    w_grids = max(width - crop + stride - 1, 0) // stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * stride + crop, height)
            x2 = min(w_idx * stride + crop, width)
            windows.append(Window(max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return windows


def image_windows(height: int, width: int, crop: int, stride: int) -> list[Window]:
    """The windows of an image: mmseg's sliding grid, or the whole image when ``crop`` is 0."""
    return sliding_windows(height, width, crop, stride) if crop else [Window(0, height, 0, width)]


def window_padding(height: int, width: int, multiple: int) -> Optional[tuple[int, int, int, int]]:
    """Centred padding of a window to the next multiple of ``multiple`` pixels (ClearCLIP: the patch
    size), in ``F.pad`` order (left, right, top, bottom): left = ⌊extra/2⌋, right = the rest; None if
    the window needs none."""
    extra_w, extra_h = -width % multiple, -height % multiple
    if not extra_w and not extra_h:
        return None
    return extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2
