"""Refinements of the query similarity maps at the image's size, before probabilities and labels.

Each refinement is a callable ``(logits (Q, H, W), guide, text (Q, E)) → logits`` where ``guide()``
returns the (3, H, W) normalised image resized to the map's size (computed only when asked for).
:func:`refinements` lists those a config switches on, in their fixed order.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from ..config import SegmenterConfig
from . import pamr as pamr_module  # the modules stay reachable as refine.pamr, refine.tlp
from . import tlp as tlp_module

Guide = Callable[[], torch.Tensor]


class Refinement(Protocol):
    def __call__(self, logits: torch.Tensor, guide: Guide, text: torch.Tensor) -> torch.Tensor: ...


def refinements(config: SegmenterConfig) -> list[Refinement]:
    """The refinements ``config`` switches on, in the order they run: PAMR, then TLP."""
    stages: list[Refinement] = []
    if config.pamr_steps > 0:
        steps, dilations = config.pamr_steps, config.pamr_dilations
        # The full-size guide is referenced only inside pamr(), which frees it early.
        stages.append(lambda logits, guide, text: pamr_module.pamr(guide(), logits, steps, dilations, inplace=True))
    if config.tlp:
        grid = config.tlp_grid
        stages.append(lambda logits, guide, text: tlp_module.tlp(logits, guide(), text, grid))
    return stages
