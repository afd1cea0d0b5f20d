"""SFP (Jin et al., ICCV 2025): SC-CLIP's construction with anomaly tokens found from the class token's attention,
one thresholded similarity for aggregation and attention, and q-q added to the last block."""

from __future__ import annotations

from .base import Method, SelfCalibrated, figures
from .codebases import SELF_CALIBRATED_FIELDS, scclip_presets

METHOD = Method(
    name="sfp",
    title="SFP",
    paper="Jin et al., Feature Purification Matters: Suppressing Outlier Propagation for Training-Free "
          "Open-Vocabulary Semantic Segmentation (ICCV 2025)",
    code="github.com/Kimsure/SFP @ 2804f5b (SFP_ICCV)",
    changes="SC-CLIP's token repair and aggregation with anomaly tokens where the class token attends to a patch "
            "more than the patch to itself (block L-1); last block: k-k + q-q + similarity attention, no "
            "residual, no MLP",
    encoder=SelfCalibrated("sfp"),
    **SELF_CALIBRATED_FIELDS,
    presets=scclip_presets("SFP config", "sclip_{}", voc21=dict(classes="sfp_voc21"),
                           voc20=dict(classes="sfp_voc20"), cityscapes=dict(classes="sfp_cityscapes"),
                           ade20k=dict(short_side=384)),
    published=figures("PEARL README (github.com/PGSmall/PEARL @ c26062b), reproduced by PEARL's authors",
                      voc21=56.8, context60=32.3, coco_object=32.1, voc20=83.4, context59=36.0, coco_stuff=24.0,
                      cityscapes=34.1, ade20k=18.1),
)
