"""SC-CLIP (Bai et al., 2024): anomaly tokens repaired, tokens aggregated along mid-level similarities,
the last block run twice (repaired tokens and a multi-level sum), no residual, no MLP."""

from __future__ import annotations

from .base import Method, SelfCalibrated, figures
from .codebases import SELF_CALIBRATED_FIELDS, scclip_presets

METHOD = Method(
    name="scclip",
    title="SC-CLIP",
    paper="Bai et al., Self-Calibrated CLIP for Training-Free Open-Vocabulary Segmentation (arXiv 2411.15869)",
    code="github.com/SuleBai/SC-CLIP @ 0417ba9",
    changes="anomaly tokens (local outlier factor on block L-1) replaced by their neighbours' mean; tokens "
            "aggregated along block 9 / block 4 similarities; last block (similarity + k-k attention, no "
            "residual, no MLP) on them and on the sum of blocks 4-10, class token added back",
    encoder=SelfCalibrated("scclip"),
    **SELF_CALIBRATED_FIELDS,
    presets=scclip_presets("SC-CLIP config"),
    published=figures("SC-CLIP paper (arXiv 2411.15869), ViT-B/16 results", voc21=64.6, context60=36.8,
                      coco_object=37.7, voc20=84.3, context59=40.1, coco_stuff=26.6, cityscapes=41.0, ade20k=20.1),
)
