"""ITACLIP (Aydın et al., CVPRW 2025): the paper's architecture, image engineering and auxiliary texts.

Its last block is the configurable :class:`LastBlock` (the paper ablates the attention terms, the
MLP and the fused layers); its settings are :class:`~itaclip.engine.config.SegmenterConfig`'s own
defaults, so it needs no ``defaults`` of its own.
"""

from __future__ import annotations

from .base import LastBlock, Method, Preset, figures


def _preset(name: str, description: str, classes=None, has_background=False, aux_texts=None, aux_kind=None,
           **settings) -> Preset:
    return Preset(name, description, settings, classes, has_background, aux_texts, aux_kind)


_TABLE_1 = "ITACLIP paper, Table 1"

#: ITACLIP's presets (SPEC §5 and the other standard benchmarks), as keyword data.
PRESETS: dict[str, Preset] = {p.name: p for p in [
    _preset("voc21", "Pascal VOC 2012, 20 classes + background set (paper)", "voc21", True,
           "voc21_definitions", "definition",
           short_side=336, alpha=0.05, lam=0.70, logit_scale=60, prob_thd=0.1, area_thd=0.1),
    _preset("voc20", "Pascal VOC 2012 without background", "voc20", False, "voc20_definitions", "definition",
           short_side=336, alpha=0.05, lam=0.70, logit_scale=60, prob_thd=0.0, area_thd=None),
    _preset("context60", "Pascal Context, 59 classes + background (paper)", "context60", True,
           "context60_definitions", "definition",
           short_side=336, alpha=0.15, lam=0.75, logit_scale=55, prob_thd=0.1, area_thd=None),
    _preset("context59", "Pascal Context without background", "context59", False, "context59_definitions",
           "definition", short_side=336, alpha=0.15, lam=0.75, logit_scale=55, prob_thd=0.0, area_thd=None),
    _preset("coco_object", "COCO-Object, 80 things + background set (paper)", "coco_object", True,
           "coco_object_synonyms", "synonym",
           short_side=336, alpha=0.10, lam=0.75, logit_scale=50, prob_thd=0.1, area_thd=None),
    _preset("coco_stuff", "COCO-Stuff 164k, 171 classes (paper)", "coco_stuff", False,
           "coco_stuff_definitions", "definition",
           short_side=448, alpha=0.20, lam=0.75, logit_scale=40, prob_thd=0.0, area_thd=None),
    _preset("cityscapes", "Cityscapes, 19 classes (authors' README)", "cityscapes", False,
           "cityscapes_synonyms", "synonym",
           short_side=560, alpha=0.05, lam=0.70, logit_scale=40, prob_thd=0.0, area_thd=None),
    _preset("ade20k", "ADE20K, 150 classes", "ade20k", False, "ade20k_definitions", "definition",
           short_side=448, alpha=0.20, lam=0.75, logit_scale=40, prob_thd=0.0, area_thd=None),
    _preset("default", "Open vocabulary: the paper's architecture, VOC-like image settings",
           short_side=336, alpha=0.0, lam=0.75, logit_scale=40, prob_thd=0.0, area_thd=None),
    _preset("fast", "Stride 56 (within 0.1 mIoU of 28, paper Table 7), about 3x fewer windows",
           short_side=336, alpha=0.0, lam=0.75, logit_scale=40, prob_thd=0.0, area_thd=None, stride=56),
]}

METHOD = Method(
    name="itaclip",
    title="ITACLIP",
    paper="Aydın et al., ITACLIP: Boosting Training-Free Semantic Segmentation with Image, Text, and "
          "Architectural Enhancements (CVPRW 2025)",
    code="github.com/m-arda-aydn/ITACLIP",
    changes="last block: q-q + k-k attention fused with intermediate layers' maps, residual kept, MLP "
            "removed; image views, auxiliary texts, PAMR and a label closing",
    encoder=LastBlock(residual=True, configurable=True),
    reads=("attention", "remove_ffn", "intermediate_layers"),
    exclusive=("attention", "remove_ffn", "intermediate_layers"),
    exclusive_scope="ITACLIP's last block",
    presets=PRESETS,    published={**figures(_TABLE_1, coco_stuff=27.0, coco_object=37.7, voc21=67.9, context60=37.5),
               **figures("ITACLIP README", cityscapes=40.2)},
)
