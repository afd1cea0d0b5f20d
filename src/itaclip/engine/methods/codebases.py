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


#: SC-CLIP's and SFP's defaults: SCLIP's segmentor (no PAMR), short side 336 for every dataset but Cityscapes.
SCCLIP_DEFAULTS = dict(SCLIP_DEFAULTS)
#: The record fields SC-CLIP and SFP share (SFP is built on SC-CLIP's code): the class-token residual
#: option that only these two read, and the defaults.
SELF_CALIBRATED_FIELDS = dict(reads=("res_cls",), exclusive=("res_cls",),
                              exclusive_scope="SC-CLIP's and SFP's class-token residual", defaults=SCCLIP_DEFAULTS)
#: PEARL's defaults (`run.sh`: its attention, TLP on, grid 80, alpha_kk 0.08; no PAMR in its code).
PEARL_DEFAULTS = dict(BASELINE, crop=224, stride=112, logit_scale=40.0, pamr_steps=0, kk_weight=0.08, tlp=True,
                      tlp_grid=80)
#: ResCLIP's per-dataset feedback settings (its configs; σ 5 and the entity decay in all of them).
RESCLIP_SETTINGS = dict(
    voc21=dict(crop=0, prob_thd=0.1, sfr_thd=0.5, rcs_weights=(2.0, 0.3), sfr_weights=(2.2, 0.7)),
    voc20=dict(crop=0, sfr_thd=0.1, rcs_weights=(2.0, 0.6), sfr_weights=(2.1, 0.6)),
    context60=dict(prob_thd=0.1, sfr_thd=0.3, rcs_weights=(2.0, 0.3), sfr_weights=(1.8, 0.7)),
    coco_object=dict(prob_thd=0.1, sfr_thd=0.11, rcs_weights=(2.0, 0.4), sfr_weights=(1.8, 0.7)),
    context59=dict(sfr_thd=0.25, rcs_weights=(2.0, 0.4), sfr_weights=(1.8, 0.7)),
    coco_stuff=dict(sfr_thd=0.11, rcs_weights=(2.0, 0.4), sfr_weights=(1.8, 0.7)),
    ade20k=dict(sfr_thd=0.25, rcs_weights=(2.0, 0.3), sfr_weights=(2.1, 0.7)),
    cityscapes=dict(short_side=560, sfr_thd=0.1, rcs_weights=(2.0, 0.2), sfr_weights=(2.1, 0.6)),
)
#: ResCLIP's defaults: NACLIP v2's segmentor without PAMR, σ 5, the entity decay on; its code has no
#: default feedback settings (temp_thd None raises), so an open vocabulary takes Context59's (many
#: classes, no background).
RESCLIP_DEFAULTS = dict(BASELINE, crop=224, stride=112, logit_scale=40.0, pamr_steps=0, gaussian_std=5.0,
                        entity_decay=True, **RESCLIP_SETTINGS["context59"])


def scclip_presets(source: str, lists: str = "sclip_{}", **changes: dict) -> dict[str, Preset]:
    """SC-CLIP's configs (SCLIP's class lists); SFP's differ in ``changes`` and its own lists."""
    datasets = dict(voc21=dict(logit_scale=50.0, prob_thd=0.15, area_thd=0.1), context60=dict(prob_thd=0.15),
                    coco_object=dict(logit_scale=55.0, prob_thd=0.35), cityscapes=dict(short_side=560),
                    voc20={}, context59={}, coco_stuff={}, ade20k={})
    for name, overrides in changes.items():
        datasets[name] = {**datasets[name], **overrides}
    return dataset_presets(source, lists, **datasets)
