"""CorrCLIP's region generator: SAM / SAM2 automatic mask generation, one mask per point prompt.

What CorrCLIP runs (``SAM2AutomaticMaskGenerator(points_per_side=8, pred_iou_thresh=0.4,
stability_score_thresh=0.4, multimask_output=False)`` on a SAM2 Hiera-L built with
``apply_postprocessing=False``), on transformers' ``Sam2Model`` / ``SamModel``:

1. the image is encoded once (the model's own processor: SAM2 resizes to 1024 × 1024, SAM resizes
   the longest side to 1024 and pads);
2. a regular grid of ``points_per_side``² point prompts (cell centres), one mask per point
   (``multimask_output=False``; SAM2's "dynamic multimask via stability" off), in batches;
3. each mask's logits are upsampled to the image's size; a mask is kept when its predicted IoU is
   above ``pred_iou_thresh`` and its stability score (IoU of the masks thresholded at ±1 around 0)
   at least ``stability_score_thresh``; then box non-maximum suppression at ``box_nms_thresh``
   (boxes of the binarised masks, scored by predicted IoU);
4. the kept masks are sorted by area, ascending (ties keep the NMS order: higher IoU first), and
   written with ids 1…n into a zero map, so larger masks overwrite smaller ones; 0 = unsegmented.

Written on the models rather than through transformers' ``mask-generation`` pipeline, which always
asks for three masks per point, and rather than its processors' AMG helpers, which scale SAM2's point
prompts with SAM's aspect-preserving rule (SAM2 resizes to a square) and run NMS through RLE
round trips; the pixels' preprocessing and the mask upsampling are the processors' own.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ItaclipError
from ..images import ImageInput, to_rgb_array
from .base import RESERVED_ID

#: The generator kinds and their default weights (Hugging Face ids, transformers format).
DEFAULT_REGION_WEIGHTS = {"sam2": "facebook/sam2.1-hiera-large", "sam": "facebook/sam-vit-base"}
GENERATOR_KINDS = tuple(DEFAULT_REGION_WEIGHTS)
#: Bump when the generation rule changes: part of every cache key.
GENERATOR_VERSION = 1
#: Upsampled mask logits held at once while filtering (a batch of point prompts is cut to fit).
MASK_BATCH_BYTES = 512 * 2**20
MIN_TRANSFORMERS = {"sam": "4.29", "sam2": "4.56"}


class RegionGenerator:
    """Region maps from SAM or SAM2, with CorrCLIP's settings by default.

    Args:
        model: a transformers ``Sam2Model`` or ``SamModel`` (any size; random weights too).
        points_per_side: the point grid is ``points_per_side``² prompts (1…99: ids stay below 10000).
        pred_iou_thresh: keep masks whose predicted IoU is above it (0: no filter).
        stability_score_thresh: keep masks whose stability score is at least it (0: no filter).
        stability_score_offset: the ± logit offset of the stability score.
        mask_threshold: logits above it are the mask.
        box_nms_thresh: box IoU above which the lower-scored mask is dropped (1: no suppression).
        points_per_batch: point prompts per decoder call (fewer on large images, to bound memory;
            the maps do not depend on it).
        weights_identity: what identifies the weights in cache keys (``from_pretrained`` sets it).
        label: the weights as the user named them (logs).
        device: where to run (``None``: where ``model`` is).

    ``generate(image)`` returns the region map; ``generate_masks(image)`` the kept masks in the
    order they are written. ``identity`` is everything that decides the maps, as JSON data.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        points_per_side: int = 8,
        pred_iou_thresh: float = 0.4,
        stability_score_thresh: float = 0.4,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        points_per_batch: int = 64,
        weights_identity: Optional[str] = None,
        label: Optional[str] = None,
        device: Union[str, torch.device, None] = None,
    ) -> None:
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls,
        kind: str = "sam2",
        weights: Union[str, os.PathLike, None] = None,
        *,
        device: Union[str, torch.device, None] = None,
        **settings,
    ) -> "RegionGenerator":
        """Load ``kind``'s weights (a transformers folder or a Hugging Face id; ``None`` →
        :data:`DEFAULT_REGION_WEIGHTS`) and make a generator with ``settings``."""
        raise NotImplementedError

    def generate(self, image: ImageInput) -> np.ndarray:
        """The (H, W) int32 region map of ``image``: ids 1…n by ascending area, 0 = unsegmented."""
        raise NotImplementedError

    def generate_masks(self, image: ImageInput) -> tuple[np.ndarray, np.ndarray]:
        """The kept masks in the order they are written: (n, H, W) bool and their predicted IoUs (n,)."""
        raise NotImplementedError

    @property
    def identity(self) -> dict:
        raise NotImplementedError

    @property
    def description(self) -> str:
        raise NotImplementedError
