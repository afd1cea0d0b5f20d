"""Loaders for the standard on-disk layouts, as MMSegmentation's dataset preparation documents them
(``docs/en/user_guides/2_dataset_prepare.md``) — validation splits only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine.errors import ItaclipError
from .base import Dataset, DatasetSpec, Sample, check_samples, lookup_table, pick_root, read_split_file

# --------------------------------------------------------------------------------- Pascal VOC 2012

VOC_LAYOUT = "VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png, ImageSets/Segmentation/val.txt}"


def _split_file_dataset(spec: DatasetSpec, data_root: Path, folder: str, image_dir: str, label_dir: str,
                        split: str, layout: str) -> Dataset:
    """A VOC-style layout: ``image_dir/KEY.jpg`` and ``label_dir/KEY.png`` for the keys in ``split``."""
    root = pick_root(data_root, ["", folder, f"VOCdevkit/{folder}"], [image_dir, label_dir, split],
                     spec.name, layout)
    keys = read_split_file(root / split)
    samples = [Sample(k, root / image_dir / f"{k}.jpg", root / label_dir / f"{k}.png") for k in keys]
    return Dataset(spec, root, check_samples(spec.name, samples, root / split))


def find_voc(spec: DatasetSpec, data_root: Path) -> Dataset:
    return _split_file_dataset(spec, data_root, "VOC2012", "JPEGImages", "SegmentationClass",
                               "ImageSets/Segmentation/val.txt", VOC_LAYOUT)


# ------------------------------------------------------------------------------ Pascal Context

CONTEXT_LAYOUT = (
    "VOCdevkit/VOC2010/{JPEGImages/*.jpg, SegmentationClassContext/*.png (0 = background, 1..59; made by "
    "mmseg's tools/dataset_converters/pascal_context.py), ImageSets/SegmentationContext/val.txt}"
)


def find_context(spec: DatasetSpec, data_root: Path) -> Dataset:
    return _split_file_dataset(spec, data_root, "VOC2010", "JPEGImages", "SegmentationClassContext",
                               "ImageSets/SegmentationContext/val.txt", CONTEXT_LAYOUT)


# ---------------------------------------------------------------------------- COCO-Stuff / Object

COCO_STUFF_LAYOUT = (
    "coco_stuff164k/{images/val2017/*.jpg, annotations/val2017/*_labelTrainIds.png (or the raw *.png of "
    "stuffthingmaps_trainval2017.zip, mapped to train ids)}"
)
COCO_OBJECT_LAYOUT = (
    "coco_stuff164k/{images/val2017/*.jpg, annotations/val2017/*_instanceTrainIds.png} "
    "(made by `itaclip eval --convert-coco-object --data-root DIR`)"
)


def _coco_samples(spec: DatasetSpec, data_root: Path, suffix: str, layout: str) -> Dataset:
    root = pick_root(
        data_root, ["", "coco_stuff164k"], ["images/val2017", "annotations/val2017"], spec.name, layout
    )
    images = sorted((root / "images/val2017").glob("*.jpg"))
    samples, transforms = [], {}
    for path in images:
        label = root / "annotations/val2017" / f"{path.stem}{suffix}"
        raw = label.with_name(f"{path.stem}.png")  # stuffthingmaps as unzipped: COCO ids 0-181
        if spec.name == "coco_stuff" and not label.is_file() and raw.is_file():
            label = raw
            transforms[path.stem] = coco_raw_to_train_ids
        samples.append(Sample(path.stem, path, label))
    if spec.name == "coco_object" and samples and not any(s.label.is_file() for s in samples):
        raise ItaclipError(
            f"coco_object: no *_instanceTrainIds.png label maps in {root / 'annotations/val2017'}; "
            f"create them from COCO-Stuff with: itaclip eval --convert-coco-object --data-root {root}"
        )
    return Dataset(spec, root, check_samples(spec.name, samples, root / "images/val2017"), transforms)


def coco_raw_to_train_ids(labels: np.ndarray) -> np.ndarray:
    """COCO-Stuff raw maps (COCO ids 0–181, 255) → train ids 0–170 (MMSegmentation's converter)."""
    from .convert import RAW_TO_TRAIN_ID

    global _COCO_RAW_LUT
    if _COCO_RAW_LUT is None:
        _COCO_RAW_LUT = lookup_table(RAW_TO_TRAIN_ID)
    return _COCO_RAW_LUT[labels]


_COCO_RAW_LUT = None


def find_coco_stuff(spec: DatasetSpec, data_root: Path) -> Dataset:
    return _coco_samples(spec, data_root, "_labelTrainIds.png", COCO_STUFF_LAYOUT)


def find_coco_object(spec: DatasetSpec, data_root: Path) -> Dataset:
    return _coco_samples(spec, data_root, "_instanceTrainIds.png", COCO_OBJECT_LAYOUT)


# ---------------------------------------------------------------------------------- Cityscapes

CITYSCAPES_LAYOUT = (
    "cityscapes/{leftImg8bit/val/CITY/*_leftImg8bit.png, gtFine/val/CITY/*_gtFine_labelTrainIds.png "
    "(or *_gtFine_labelIds.png, mapped to train ids)}"
)

#: Cityscapes label id → train id (cityscapesScripts' ``labels.py``); everything else is ignored.
CITYSCAPES_ID_TO_TRAINID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
_CITYSCAPES_LUT = lookup_table(CITYSCAPES_ID_TO_TRAINID)


def cityscapes_ids_to_train_ids(labels: np.ndarray) -> np.ndarray:
    return _CITYSCAPES_LUT[labels]


def find_cityscapes(spec: DatasetSpec, data_root: Path) -> Dataset:
    root = pick_root(
        data_root, ["", "cityscapes"], ["leftImg8bit/val", "gtFine/val"], spec.name, CITYSCAPES_LAYOUT
    )
    images = sorted((root / "leftImg8bit/val").glob("*/*_leftImg8bit.png"))
    samples, transforms = [], {}
    for path in images:
        stem = path.name[: -len("_leftImg8bit.png")]
        key = f"{path.parent.name}/{stem}"
        label = root / "gtFine/val" / path.parent.name / f"{stem}_gtFine_labelTrainIds.png"
        fallback = label.with_name(f"{stem}_gtFine_labelIds.png")
        if not label.is_file() and fallback.is_file():
            label = fallback
            transforms[key] = cityscapes_ids_to_train_ids
        samples.append(Sample(key, path, label))
    return Dataset(spec, root, check_samples(spec.name, samples, root / "leftImg8bit/val"), transforms)


# ------------------------------------------------------------------------------------- ADE20K

ADE_LAYOUT = "ADEChallengeData2016/{images/validation/*.jpg, annotations/validation/*.png (0 = other)}"


def find_ade20k(spec: DatasetSpec, data_root: Path) -> Dataset:
    root = pick_root(
        data_root,
        ["", "ADEChallengeData2016", "ade/ADEChallengeData2016"],
        ["images/validation", "annotations/validation"],
        spec.name,
        ADE_LAYOUT,
    )
    images = sorted((root / "images/validation").glob("*.jpg"))
    samples = [Sample(p.stem, p, root / "annotations/validation" / f"{p.stem}.png") for p in images]
    return Dataset(spec, root, check_samples(spec.name, samples, root / "images/validation"))
