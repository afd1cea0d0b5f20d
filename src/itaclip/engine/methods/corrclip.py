"""CorrCLIP (Zhang et al., ICCV 2025), v1: CLIP's patch correlations rebuilt from SAM regions and DINO."""

from __future__ import annotations

from .base import Method, RegionScoped, figures
from .codebases import GUIDED_DEFAULTS, guided_presets

#: CorrCLIP's class lists (its configs' files: ProxyCLIP's with "people" for "person", and a 16-word
#: COCO-Object background set).
CORRCLIP_LISTS = {name: f"corrclip_{name}" for name in ("voc21", "context60", "coco_object", "voc20", "context59",
                                                        "coco_stuff", "ade20k", "cityscapes")}

METHOD = Method(
    name="corrclip",
    title="CorrCLIP",
    paper="Zhang et al., CorrCLIP: Reconstructing Patch Correlations in CLIP for Open-Vocabulary Semantic "
          "Segmentation (ICCV 2025)",
    code="github.com/zdk258/CorrCLIP @ 103bc18 (CorrCLIPv1)",
    changes="per image a map of SAM regions: regions merged by DINO ViT-B/8 q+k, last-block values mixed by DINO "
            "cosines within regions only, plus a mid-level branch and region tokens; labels voted per region; "
            "windows padded to multiples of 56",
    encoder=RegionScoped(),
    pad_to=56,
    reads=("guide_weights",),
    guide=True,
    regions=True,
    region_vote=True,
    names_merged_for_class0_only=True,
    whole_image=None,
    # The authors' default CLIP: MetaCLIP (2.5B) ViT-B/16 with QuickGELU; OpenAI's by --weights ViT-B/16.
    default_weights="ViT-B-16-quickgelu:metaclip_fullcc",
    defaults=GUIDED_DEFAULTS,
    presets=guided_presets("CorrCLIP config", CORRCLIP_LISTS),
    published=figures("CorrCLIP README (github.com/zdk258/CorrCLIP @ 103bc18, CorrCLIPv1), ViT-B row with the "
                      "authors' SAM2 masks (32 points per side): MetaCLIP ViT-B/16 with DINO ViT-B/8", voc21=74.8,
                      context60=44.2, coco_object=43.7, voc20=88.8, context59=48.8, coco_stuff=31.6,
                      cityscapes=49.4, ade20k=26.9),
)
