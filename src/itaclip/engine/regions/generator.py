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

import hashlib
import inspect
import os
from typing import Optional, Union

import numpy as np
import torch

from ..devices import resolve_device
from ..errors import ItaclipError
from ..images import ImageInput, to_rgb_array
from .base import RESERVED_ID
from .weights import (
    DEFAULT_REGION_WEIGHTS,
    GENERATOR_KINDS,
    load_model,
    resolve_weights,
    transformers_classes,
)

#: Bump when the generation rule changes: part of every cache key.
GENERATOR_VERSION = 1
#: Upsampled mask logits held at once while filtering (a batch of point prompts is cut to fit).
MASK_BATCH_BYTES = 512 * 2**20
#: Point prompts per decoder call by default (SAM's generators use 64; on the CPU small batches are
#: faster: SAM2's decoder took 16–19 s for 64 prompts in batches of 1–4, 25–30 s in one batch).
CPU_POINTS_PER_BATCH, GPU_POINTS_PER_BATCH = 4, 64


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
        points_per_batch: point prompts per decoder call (``None``: 64 on a GPU, 4 on the CPU, where
            small batches stay in the caches and run ~1.5× faster; fewer on large images, to bound
            memory). The maps do not depend on it.
        weights_identity: what identifies the weights in cache keys (``from_pretrained`` sets it;
            ``None``: a SHA-256 of the model's config and tensors, computed when first needed).
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
        points_per_batch: Optional[int] = None,
        weights_identity: Optional[str] = None,
        label: Optional[str] = None,
        device: Union[str, torch.device, None] = None,
    ) -> None:
        self.kind = _model_kind(model)
        self.settings = _checked_settings(points_per_side, pred_iou_thresh, stability_score_thresh,
                                          stability_score_offset, mask_threshold, box_nms_thresh,
                                          points_per_batch)
        """What decides the maps besides the weights (``points_per_batch`` does not)."""
        self.device = resolve_device(device) if device is not None else next(model.parameters()).device
        if points_per_batch is None:
            points_per_batch = CPU_POINTS_PER_BATCH if self.device.type == "cpu" else GPU_POINTS_PER_BATCH
        self.points_per_batch = points_per_batch
        self.model = model.eval().to(self.device)
        if self.kind == "sam2":  # CorrCLIP's SAM2 (apply_postprocessing=False): always mask token 0's mask
            self.model.mask_decoder.dynamic_multimask_via_stability = False
        self.input_size = int(model.config.prompt_encoder_config.image_size)
        self.processor = _processor(self.kind, self.input_size)
        self._weights_identity = weights_identity
        self.label = label or f"a {self.kind.upper()} model"

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
        if kind not in DEFAULT_REGION_WEIGHTS:
            raise ItaclipError(f"unknown region generator {kind!r}: choose {' or '.join(GENERATOR_KINDS)}")
        bound = inspect.signature(cls.__init__).bind(None, None, **settings)  # unknown names: TypeError
        bound.apply_defaults()
        _checked_settings(*(bound.arguments[name] for name in SETTING_NAMES))  # before any download
        transformers_classes(kind)
        resolved = resolve_weights(kind, DEFAULT_REGION_WEIGHTS[kind] if weights is None else weights)
        model = load_model(kind, resolved, resolve_device(device))
        return cls(model, weights_identity=resolved.identity, label=resolved.label, **settings)

    # ------------------------------------------------------------------------------ public

    @torch.inference_mode()
    def generate(self, image: ImageInput) -> np.ndarray:
        """The (H, W) int32 region map of ``image``: ids 1…n by ascending area, 0 = unsegmented."""
        image = to_rgb_array(image)
        low_res, _, context = self._kept_masks(image)
        region_map = torch.zeros(image.shape[:2], dtype=torch.int32, device=self.device)
        for region_id, logits in enumerate(low_res, start=1):  # one at a time: memory stays one mask
            region_map[self._upsample(logits[None], context)[0] > self.settings["mask_threshold"]] = region_id
        return region_map.cpu().numpy()

    @torch.inference_mode()
    def generate_masks(self, image: ImageInput) -> tuple[np.ndarray, np.ndarray]:
        """The kept masks in the order they are written: (n, H, W) bool and their predicted IoUs (n,)."""
        image = to_rgb_array(image)
        low_res, scores, context = self._kept_masks(image)
        masks = np.zeros((len(low_res), *image.shape[:2]), dtype=bool)
        for index, logits in enumerate(low_res):
            mask = self._upsample(logits[None], context)[0] > self.settings["mask_threshold"]
            masks[index] = mask.cpu().numpy()
        return masks, scores.cpu().numpy()

    @property
    def identity(self) -> dict:
        """Everything that decides the maps (cache keys, run manifests), as JSON data."""
        if self._weights_identity is None:
            self._weights_identity = _model_digest(self.model)
        return {"generator": self.kind, "weights": self._weights_identity, **self.settings,
                "multimask_output": False, "version": GENERATOR_VERSION}

    @property
    def description(self) -> str:
        side = self.settings["points_per_side"]
        return f"{self.kind.upper()} regions ({self.label}, {side}×{side} points, on {self.device})"

    # ------------------------------------------------------------------------------ steps

    @torch.inference_mode()
    def _kept_masks(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Low-resolution logits (n, h, w) and predicted IoUs (n,) of the kept masks, in writing order."""
        height, width = image.shape[:2]
        inputs = self.processor(images=image, return_tensors="pt")
        context = {"size": (height, width)}
        if self.kind == "sam":
            context["resized"] = [int(n) for n in inputs["reshaped_input_sizes"][0]]
        embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
        points = self._point_prompts(height, width).to(self.device)
        kept_logits, kept_scores, kept_boxes, kept_areas = [], [], [], []
        step = self._batch_size(height, width)
        for start in range(0, len(points), step):
            batch = points[start:start + step]
            labels = torch.ones((1, len(batch), 1), dtype=torch.long, device=self.device)
            output = self.model(image_embeddings=embeddings, input_points=batch[None, :, None, :],
                                input_labels=labels, multimask_output=False)
            low_res, scores = output.pred_masks[0, :, 0].float(), output.iou_scores[0, :, 0].float()
            logits = self._upsample(low_res, context)
            keep = self._passes_filters(logits, scores)
            masks = logits[keep] > self.settings["mask_threshold"]
            kept_logits.append(low_res[keep])
            kept_scores.append(scores[keep])
            kept_boxes.append(_mask_boxes(masks))
            kept_areas.append(masks.flatten(1).sum(1))
            del logits, masks
        low_res, scores = torch.cat(kept_logits), torch.cat(kept_scores)
        boxes, areas = torch.cat(kept_boxes), torch.cat(kept_areas)
        from torchvision.ops import nms

        order = nms(boxes.float(), scores, self.settings["box_nms_thresh"])  # by predicted IoU, descending
        order = order[torch.sort(areas[order], stable=True).indices]  # then by area, ascending (stable)
        return low_res[order], scores[order], context

    def _point_prompts(self, height: int, width: int) -> torch.Tensor:
        """The grid of point prompts in the model's input coordinates, (points², 2) as (x, y).

        Cell centres of a ``points_per_side``² grid over the image, x fastest (SAM's
        ``build_point_grid``), scaled as each model's image resize scales pixels: SAM2 resizes to a
        square (x · S / W, y · S / H), SAM keeps the aspect ratio (longest side → S, rounded)."""
        side = self.settings["points_per_side"]
        offset = 1 / (2 * side)
        axis = np.linspace(offset, 1 - offset, side)
        grid = np.stack([np.tile(axis[None, :], (side, 1)), np.tile(axis[:, None], (1, side))], axis=-1)
        grid = grid.reshape(-1, 2)
        pixels = grid * np.array([width, height])  # float64, as SAM's generators place them
        if self.kind == "sam2":
            points = torch.as_tensor(pixels, dtype=torch.float32)
            return points / torch.tensor([width, height], dtype=torch.float32) * self.input_size
        scale = self.input_size / max(height, width)
        new_width, new_height = int(width * scale + 0.5), int(height * scale + 0.5)
        scaled = pixels * np.array([new_width / width, new_height / height])
        return torch.as_tensor(scaled, dtype=torch.float32)

    def _upsample(self, low_res: torch.Tensor, context: dict) -> torch.Tensor:
        """(n, h, w) low-resolution logits → (n, H, W) logits at the image's size (the processor's rule)."""
        if self.kind == "sam":
            masks = self.processor.post_process_masks([low_res[:, None]], [context["size"]],
                                                      [context["resized"]], binarize=False)
        else:
            masks = self.processor.post_process_masks([low_res[:, None]], [context["size"]], binarize=False)
        return masks[0][:, 0]

    def _passes_filters(self, logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """SAM's filters: predicted IoU above its threshold, stability score at least its threshold."""
        keep = torch.ones_like(scores, dtype=torch.bool)
        if self.settings["pred_iou_thresh"] > 0:
            keep &= scores > self.settings["pred_iou_thresh"]
        if self.settings["stability_score_thresh"] > 0:
            threshold, offset = self.settings["mask_threshold"], self.settings["stability_score_offset"]
            # Counted in int64 (SAM's own code sums rows in int16, which overflows past 32767 pixels).
            inner = (logits > threshold + offset).flatten(1).sum(1)
            outer = (logits > threshold - offset).flatten(1).sum(1)
            keep &= inner / outer >= self.settings["stability_score_thresh"]  # 0/0 (empty) is NaN: dropped
        return keep

    def _batch_size(self, height: int, width: int) -> int:
        per_mask = 8 * height * width + (4 * self.input_size**2 if self.kind == "sam" else 0)
        return max(1, min(self.points_per_batch, MASK_BATCH_BYTES // per_mask))


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(n, H, W) bool → (n, 4) boxes x0, y0, x1, y1 (inclusive pixel indices; [0, 0, 0, 0] when empty)."""
    boxes = []
    for axis_any in (masks.any(1), masks.any(2)):  # columns (x), rows (y)
        index = torch.arange(axis_any.shape[1], device=masks.device)
        first = torch.where(axis_any, index, axis_any.shape[1]).amin(1)
        last = torch.where(axis_any, index, -1).amax(1)
        boxes.append((first, last))
    (x0, x1), (y0, y1) = boxes
    out = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where(masks.flatten(1).any(1)[:, None], out, torch.zeros_like(out))


#: The settings of :class:`RegionGenerator`, in the order :func:`_checked_settings` takes them.
SETTING_NAMES = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                 "mask_threshold", "box_nms_thresh", "points_per_batch")


def _checked_settings(points_per_side, pred_iou_thresh, stability_score_thresh, stability_score_offset,
                      mask_threshold, box_nms_thresh, points_per_batch) -> dict:
    """The settings that decide the maps, as plain numbers; a one-line error for a bad one."""
    if not (isinstance(points_per_side, int) and 1 <= points_per_side <= 99):
        raise ItaclipError(f"points per side must be an integer in 1…99 (ids stay below {RESERVED_ID}), "
                           f"got {points_per_side!r}")
    if points_per_batch is not None and not (isinstance(points_per_batch, int) and points_per_batch >= 1):
        raise ItaclipError(f"points per batch must be a positive integer, got {points_per_batch!r}")
    return {
        "points_per_side": points_per_side,
        "pred_iou_thresh": _number(pred_iou_thresh, "predicted IoU threshold"),
        "stability_score_thresh": _number(stability_score_thresh, "stability score threshold"),
        "stability_score_offset": _number(stability_score_offset, "stability score offset"),
        "mask_threshold": _number(mask_threshold, "mask threshold"),
        "box_nms_thresh": _number(box_nms_thresh, "box NMS threshold"),
    }


def _number(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ItaclipError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(number):
        raise ItaclipError(f"{what} must be finite, got {value!r}")
    return number


def _model_kind(model) -> str:
    for kind in GENERATOR_KINDS:
        try:
            model_class = transformers_classes(kind)[0]
        except ItaclipError:
            continue
        if isinstance(model, model_class):
            return kind
    raise ItaclipError("a region generator needs a transformers Sam2Model or SamModel, got "
                       f"{type(model).__name__}")


def _processor(kind: str, size: int):
    """The model's image processor at its input size (its defaults otherwise: ImageNet mean and std)."""
    processor_class = transformers_classes(kind)[1]
    if kind == "sam2":
        return processor_class(size={"height": size, "width": size})
    return processor_class(size={"longest_edge": size}, pad_size={"height": size, "width": size})


def _model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's config and tensors: the identity of weights that came from no file."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "model-sha256:" + digest.hexdigest()
