"""A CVAT auto-annotation function: CVAT's own command line labels a task's images with itaclip.

    pip install "itaclip[cvat]" cvat-cli
    cvat-cli --server-host https://app.cvat.ai --auth USER task auto-annotate TASK_ID \
        --function-module itaclip.integrations.cvat \
        -p classes=str:"cat, dog, grass" -p weights=str:ViT-B/16 -p device=str:cuda

``cvat-cli`` imports this module and calls :func:`create` with the ``-p NAME=TYPE:VALUE`` parameters:
``classes`` (an inline list, a class file or a built-in list's name; default: the preset's list),
``weights``, ``preset``, ``device``, ``background``, ``aux_texts``, and any method option by its
Python name (``stride=int:112``, ``pamr_steps=int:0``). The returned object follows
``cvat_sdk.auto_annotation``'s detection-function interface: its ``spec`` declares one mask label per
class, named by the class's first name (CVAT matches them to the task's labels by name), and
``detect`` returns one mask per class present in the image: exactly ``itaclip segment``'s label map
for the same image and options. A background class (class 0 of a vocabulary with a background
set) is not returned: it is what is left unlabelled. CVAT's confidence threshold keeps the classes
whose mean probability over their region reaches it; "convert masks to polygons" gives each
region's outer contours instead.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

try:
    import cvat_sdk.auto_annotation as cvataa
    from cvat_sdk.masks import encode_mask
except ImportError as exc:  # pragma: no cover - only without the optional package
    raise ImportError("the CVAT function needs cvat-sdk: pip install 'itaclip[cvat]'") from exc

from ..engine.config import DEFAULT_WEIGHTS


class ItaclipFunction:
    """One loaded segmenter with its vocabulary, as a CVAT detection function."""

    def __init__(self, classes: Optional[str] = None, weights: str = DEFAULT_WEIGHTS, preset: str = "default",
                 device: Optional[str] = None, background: Optional[str] = None, aux_texts: Optional[str] = None,
                 **options):
        from ..engine.predictor import Segmenter
        from ..engine.vocabulary import resolve_vocabulary

        vocabulary = resolve_vocabulary(classes, preset=preset, background=background, aux_texts=aux_texts)
        self._segmenter = Segmenter(weights=weights, preset=preset, device=device, **options)
        self._segmenter.set_vocabulary(vocabulary)
        self._names = vocabulary.names
        self._labelled = range(1 if vocabulary.has_background else 0, vocabulary.num_classes)

    @property
    def spec(self) -> "cvataa.DetectionFunctionSpec":
        return cvataa.DetectionFunctionSpec(
            labels=[cvataa.label_spec(self._names[c], c, type="mask") for c in self._labelled])

    def detect(self, context: "cvataa.DetectionFunctionContext", image) -> list:
        """Mask (or polygon) shapes of the classes present in a PIL image."""
        result = self._segmenter.segment(np.asarray(image.convert("RGB")))
        threshold = context.conf_threshold
        shapes = []
        for c in np.unique(result.labels).tolist():
            if c not in self._labelled:
                continue
            region = result.labels == c
            if threshold is not None and float(result.probs[c][region].mean()) < threshold:
                continue
            if context.conv_mask_to_poly:
                shapes += [cvataa.polygon(c, points) for points in _outer_polygons(region)]
            else:
                shapes.append(cvataa.mask(c, encode_mask(region)))
        return shapes


def _outer_polygons(region: np.ndarray) -> list[list[float]]:
    """The outer contours of a mask as CVAT polygon points ``[x1, y1, x2, y2, ...]`` (OpenCV's
    contour tracing; CVAT polygons have no holes)."""
    import cv2

    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [contour.reshape(-1).astype(float).tolist() for contour in contours if len(contour) >= 3]


def create(**parameters) -> ItaclipFunction:
    """What ``cvat-cli task auto-annotate --function-module itaclip.integrations.cvat -p ...`` calls."""
    return ItaclipFunction(**parameters)
