"""SCLIP (Wang et al., ECCV 2024): correlative self-attention in the last block."""

from __future__ import annotations

from .base import LastBlock, Method, figures
from .codebases import SCLIP_DEFAULTS, sclip_presets

METHOD = Method(
    name="sclip",
    title="SCLIP",
    paper="Wang et al., SCLIP: Rethinking Self-Attention for Dense Vision-Language Inference (ECCV 2024)",
    code="github.com/wangf3014/SCLIP",
    changes="last block: correlative self-attention softmax(q qᵀ) + softmax(k kᵀ) (not halved); residual "
            "and MLP kept",
    encoder=LastBlock(("q-q", "k-k"), residual=True, ffn=True),
    defaults=SCLIP_DEFAULTS,
    presets=sclip_presets(),
    published=figures("SCLIP README (github.com/wangf3014/SCLIP @ b56bd30)", ade20k=16.45, cityscapes=32.34,
                      coco_object=33.52, coco_stuff=22.77, context59=34.46, context60=31.74, voc20=81.54,
                      voc21=59.63),
)
