"""ClearCLIP (Lan et al., ECCV 2024): q-q attention without the last block's residual and MLP."""

from __future__ import annotations

from .base import LastBlock, Method, figures
from .codebases import CLEARCLIP_DEFAULTS, clearclip_presets

METHOD = Method(
    name="clearclip",
    title="ClearCLIP",
    paper="Lan et al., ClearCLIP: Decomposing CLIP Representations for Dense Vision-Language Inference "
          "(ECCV 2024)",
    code="github.com/mc-lan/ClearCLIP (model type 'ClearCLIP')",
    changes="last block: q-q attention, residual connection and MLP removed",
    encoder=LastBlock(("q-q",), residual=False, ffn=False),
    pad_to="patch",
    defaults=CLEARCLIP_DEFAULTS,
    presets=clearclip_presets("ClearCLIP config"),
    published=figures("ITACLIP paper, Table 1", coco_stuff=23.9, coco_object=33.0, voc21=51.8, context60=32.6),
)
