"""ResCLIP (Yang et al., CVPR 2025): NACLIP's last block with residual cross-correlation attention
(RCS) and semantic feedback from a first pass (SFR)."""

from __future__ import annotations

from .base import LastBlock, Method, dataset_presets, figures
from .codebases import RESCLIP_DEFAULTS, RESCLIP_SETTINGS

METHOD = Method(
    name="resclip",
    title="ResCLIP",
    paper="Yang et al., ResCLIP: Residual Attention for Training-free Dense Vision-language Inference (CVPR 2025)",
    code="github.com/yvhangyang/ResCLIP @ 0e085f7 (test_all.sh wo_resi resclip 5)",
    changes="NACLIP's last block with the mean q-k attention of blocks 6-9 mixed in (RCS) and a second pass that "
            "attends along the first pass's labels (SFR)",
    encoder=LastBlock(("k-k",), residual=False, ffn=False, neighbourhood=True),
    reads=("gaussian_std", "sfr_thd", "sfr_weights", "rcs_weights", "entity_decay"),
    requires=("sfr_thd", "rcs_weights"),
    refused=dict(area_thd="ResCLIP's area threshold is broken in its authors' code (it indexes the wrong axis) "
                          "and no config of theirs uses it"),
    defaults=RESCLIP_DEFAULTS,
    presets=dataset_presets("ResCLIP config", "sclip_{}", **RESCLIP_SETTINGS),
    published=figures("ResCLIP README (github.com/yvhangyang/ResCLIP @ 0e085f7) = paper (arXiv 2411.15851) "
                      "Tables 1-2, ViT-B/16", voc21=61.1, context60=33.5, coco_object=35.0, voc20=86.0,
                      context59=36.8, coco_stuff=24.7, cityscapes=35.9, ade20k=18.0),
)
