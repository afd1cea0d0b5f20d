"""The authors' code bases the methods come from, as data: each one's pipeline defaults and its
per-dataset presets. Several methods share a code base (NACLIP's runs vanilla CLIP and NACLIP,
ClearCLIP's runs MaskCLIP and ClearCLIP), so its tables are written once here."""

from __future__ import annotations

from .base import Preset, dataset_presets

#: Pipeline defaults shared by the baselines: one view, no closing, no auxiliary texts, no area threshold.
BASELINE = dict(image_engineering=False, closing=False, alpha=0.0, area_thd=None, prob_thd=0.0,
                pamr_dilations=(8, 16), short_side=336, long_side_cap=2048)

#: SCLIP's CLIPForSegmentation defaults.
SCLIP_DEFAULTS = dict(BASELINE, crop=224, stride=112, logit_scale=40.0, pamr_steps=0)
#: NACLIP v2's defaults (PAMR 10 steps: the README's main results turn it on).
NACLIP_DEFAULTS = dict(BASELINE, crop=224, stride=112, logit_scale=40.0, pamr_steps=10, gaussian_std=5.0)
#: ClearCLIP's ClearCLIPSegmentation defaults with its configs' short side 448.
CLEARCLIP_DEFAULTS = dict(BASELINE, crop=448, stride=224, logit_scale=50.0, pamr_steps=0, short_side=448)


def sclip_presets(source: str = "SCLIP config") -> dict[str, Preset]:
    """SCLIP's configs (its class lists ``sclip_*``)."""
    return dataset_presets(
        source, "sclip_{}",
        voc21=dict(logit_scale=65.0, prob_thd=0.1, area_thd=0.1),
        context60=dict(logit_scale=50.0, prob_thd=0.1),
        coco_object=dict(logit_scale=50.0, prob_thd=0.1),
        voc20={}, context59={}, ade20k={},
        coco_stuff=dict(short_side=448),
        cityscapes=dict(short_side=560),
    )


def naclip_presets(source: str) -> dict[str, Preset]:
    """NACLIP v2's configs (SCLIP's class lists; VOC on the whole image)."""
    return dataset_presets(
        source, "sclip_{}",
        voc21=dict(crop=0, prob_thd=0.1),
        voc20=dict(crop=0),
        context60=dict(prob_thd=0.1),
        coco_object=dict(prob_thd=0.1),
        context59={}, ade20k={}, coco_stuff={},
        cityscapes=dict(short_side=560),
    )


def clearclip_presets(source: str) -> dict[str, Preset]:
    """ClearCLIP's configs (its own VOC and COCO-Object lists, SCLIP's others)."""
    return dataset_presets(
        source, "sclip_{}",
        voc21=dict(classes="clearclip_voc21", prob_thd=0.5),
        context60=dict(prob_thd=0.15),
        coco_object=dict(classes="clearclip_coco_object", prob_thd=0.4),
        voc20=dict(classes="clearclip_voc20"),
        context59={}, ade20k={}, coco_stuff={},
        cityscapes=dict(crop=224, stride=224),
    )

#: ProxyCLIP's and CorrCLIP's class defaults (their base configs): 336-pixel windows every 112 pixels,
#: logit scale 40, no refinement.
GUIDED_DEFAULTS = dict(BASELINE, crop=336, stride=112, logit_scale=40.0, pamr_steps=0)


def guided_presets(source: str, lists: dict[str, str]) -> dict[str, Preset]:
    """The dataset table ProxyCLIP's and CorrCLIP's code bases share (short side 336, 448 for ADE20K
    and Cityscapes; Cityscapes in 224-pixel windows), with each code base's class lists (``lists``:
    dataset → built-in list)."""
    return dataset_presets(
        source,
        voc21=dict(classes=lists["voc21"], prob_thd=0.2),
        context60=dict(classes=lists["context60"], prob_thd=0.15),
        coco_object=dict(classes=lists["coco_object"], prob_thd=0.25),
        voc20=dict(classes=lists["voc20"]),
        context59=dict(classes=lists["context59"]),
        coco_stuff=dict(classes=lists["coco_stuff"]),
        ade20k=dict(classes=lists["ade20k"], short_side=448),
        cityscapes=dict(classes=lists["cityscapes"], short_side=448, crop=224),
    )
