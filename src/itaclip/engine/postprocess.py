"""Similarities → class probabilities → label map (SPEC §4.5–8)."""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np
import torch

#: Similarities (queries × pixels) turned into probabilities at a time: every pixel's softmax and
#: class max involve only that pixel, so row bands give the same numbers with temporaries of the
#: band's size (two of 16 MB) instead of two more (Q, H, W) maps; the band's height follows the
#: number of queries, so the temporaries stay that size with hundreds of classes too.
BAND_ELEMENTS = 1 << 22


def class_probabilities(logits: torch.Tensor, query_class: Sequence[int], logit_scale: float, *,
                        inplace: bool = False) -> torch.Tensor:
    """(Q, H, W) similarities → (C, H, W): softmax over queries, then max over each class's queries.

    Queries of a class are contiguous (vocabulary order), so the max runs over slices and never
    builds a (classes × queries × H × W) tensor; large maps are processed in row bands.
    ``inplace``: with one query per class (Q = C), each band's probabilities are written over its
    own similarities (which nothing reads afterwards), so no second image-sized map is allocated;
    ``logits`` then holds the returned probabilities.
    """
    bounds = np.flatnonzero(np.diff(np.asarray(query_class), prepend=-1, append=-1)).tolist()
    height, width = logits.shape[-2:]
    rows = max(1, BAND_ELEMENTS // max(logits.shape[0] * width, 1))
    if inplace and len(bounds) - 1 == logits.shape[0]:
        for top in range(0, height, rows):
            band = logits[:, top:top + rows]
            band.copy_(_class_probabilities(band, bounds, logit_scale))
        return logits
    if rows >= height:
        return _class_probabilities(logits, bounds, logit_scale)
    probs = torch.empty(len(bounds) - 1, height, width, dtype=logits.dtype, device=logits.device)
    for top in range(0, height, rows):
        probs[:, top:top + rows] = _class_probabilities(logits[:, top:top + rows], bounds, logit_scale)
    return probs


def _class_probabilities(logits: torch.Tensor, bounds: list[int], logit_scale: float) -> torch.Tensor:
    probs = (logits * logit_scale).softmax(dim=0)
    if len(bounds) - 1 == probs.shape[0]:
        return probs
    return torch.stack([probs[s:e].amax(dim=0) for s, e in zip(bounds[:-1], bounds[1:])])


def apply_area_threshold(probs: torch.Tensor, area_thd: Optional[float], *, inplace: bool = False) -> torch.Tensor:
    """Zero the probabilities of foreground classes (index ≥ 1) whose argmax area is not larger
    than ``area_thd`` × the total foreground argmax area (``inplace``: in ``probs`` itself)."""
    if area_thd is None:
        return probs
    counts = torch.bincount(probs.argmax(dim=0).flatten(), minlength=probs.shape[0])[1:]
    keep = (counts > area_thd * counts.sum()).to(probs.dtype)
    if not inplace:
        probs = probs.clone()
    probs[1:] *= keep.view(-1, 1, 1)
    return probs


def label_map(probs: torch.Tensor, prob_thd: float, closing: bool) -> np.ndarray:
    """Argmax labels (H, W); pixels whose top probability is below ``prob_thd`` become 0; then the
    authors' grey-level 3×3 closing of the class-id image."""
    labels = probs.argmax(dim=0)
    labels[probs.amax(dim=0) < prob_thd] = 0
    dtype = np.uint8 if probs.shape[0] <= 256 else np.uint16
    labels = labels.cpu().numpy().astype(dtype)
    if closing:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        labels = cv2.morphologyEx(labels, cv2.MORPH_CLOSE, kernel)
    return labels
