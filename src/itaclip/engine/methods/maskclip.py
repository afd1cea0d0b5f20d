"""MaskCLIP (Zhou et al., ECCV 2022): each token takes only its own value in the last block."""

from __future__ import annotations

from .base import LastBlock, Method, figures
from .codebases import CLEARCLIP_DEFAULTS, clearclip_presets

METHOD = Method(
    name="maskclip",
    title="MaskCLIP",
    paper="Zhou et al., Extract Free Dense Labels from CLIP (ECCV 2022)",
    code="ClearCLIP's code with model type 'MaskCLIP', residual kept",
    changes="last block: each token takes only its own value (no query-key mixing); residual and MLP kept",
    encoder=LastBlock(("identity",), residual=True, ffn=True),
    pad_to="patch",
    defaults=CLEARCLIP_DEFAULTS,
    presets=clearclip_presets("ClearCLIP config (MaskCLIP)"),
    published=figures("ITACLIP paper, Table 1", coco_stuff=14.6, coco_object=20.6, voc21=38.8, context60=23.2),
)
