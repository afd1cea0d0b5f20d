"""NACLIP (Hajimiri et al., WACV 2025): k-k attention with a Gaussian neighbourhood bias, PAMR."""

from __future__ import annotations

from .base import LastBlock, Method, figures
from .codebases import NACLIP_DEFAULTS, naclip_presets

METHOD = Method(
    name="naclip",
    title="NACLIP",
    paper="Hajimiri et al., Pay Attention to Your Neighbours: Training-Free Open-Vocabulary Semantic "
          "Segmentation (WACV 2025)",
    code="github.com/sinahmr/NACLIP (v2)",
    changes="last block: k-k attention plus a Gaussian neighbourhood bias, residual connection and MLP "
            "removed; PAMR",
    encoder=LastBlock(("k-k",), residual=False, ffn=False, neighbourhood=True),
    reads=("gaussian_std",),
    defaults=NACLIP_DEFAULTS,
    presets=naclip_presets("NACLIP config"),
    published=figures("NACLIP README (github.com/sinahmr/NACLIP @ 0cac3a6), PAMR on", voc21=64.07,
                      context60=34.99, coco_object=36.19, voc20=83.03, cityscapes=38.27, context59=38.35,
                      ade20k=19.05, coco_stuff=25.69),
)
