"""Tiny datasets in MMSegmentation's on-disk layouts, written by ``build_dataset``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from itaclip.datasets import (
    convert_coco_object,
)

LABELME_VOC = Path(__file__).resolve().parents[1] / "data" / "voc"

#: layout kind → (label values drawn, whether 255 occurs)
_VALUES = {
    "voc": (21, True),
    "context": (60, False),
    "coco_stuff": (171, True),
    "cityscapes": (19, True),
    "ade": (151, False),
}

def voc_palette() -> list[int]:
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette

def write_label(path: Path, labels: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(labels.astype(np.uint8))
    if palette:
        img.putpalette(voc_palette())  # mode L → P, indices kept (as VOC's SegmentationClass PNGs)
        assert img.mode == "P"
    img.save(path)

def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image[:, :, ::-1])

def _sample_arrays(kind: str, index: int, seed: int):
    rng = np.random.default_rng(seed * 100 + index)
    h, w = 40 + 8 * index, 56 + 4 * (index % 3)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    n, ignore = _VALUES[kind]
    labels = rng.integers(0, n, size=(h, w)).astype(np.uint8)
    labels[: h // 4, : w // 3] = labels[0, 0]  # a region, so neighbouring labels agree
    if ignore:
        labels[-3:, :] = 255
    return image, labels

def build_dataset(kind: str, base: Path, n: int = 2, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A tiny dataset of ``kind`` under ``base``; returns (MMSegmentation data root, stored labels)."""
    stored = {}
    if kind in ("voc", "context"):
        root = base / "VOCdevkit" / ("VOC2012" if kind == "voc" else "VOC2010")
        seg_dir = "SegmentationClass" if kind == "voc" else "SegmentationClassContext"
        split = "ImageSets/Segmentation/val.txt" if kind == "voc" else "ImageSets/SegmentationContext/val.txt"
        keys = [f"2008_{i:06d}" for i in range(n)]
        for i, key in enumerate(keys):
            image, labels = _sample_arrays(kind, i, seed)
            write_image(root / "JPEGImages" / f"{key}.jpg", image)
            write_label(root / seg_dir / f"{key}.png", labels, palette=(kind == "voc"))
            stored[key] = labels
        # An extra image not in the split file must be ignored.
        write_image(root / "JPEGImages" / "not_in_split.jpg", image)
        (root / split).parent.mkdir(parents=True, exist_ok=True)
        (root / split).write_text("\n".join(keys) + "\n")
    elif kind == "coco_stuff":
        root = base / "coco_stuff164k"
        for i in range(n):
            key = f"{i + 139:012d}"
            image, labels = _sample_arrays(kind, i, seed)
            write_image(root / "images/val2017" / f"{key}.jpg", image)
            write_label(root / "annotations/val2017" / f"{key}_labelTrainIds.png", labels)
            stored[key] = labels
    elif kind == "cityscapes":
        root = base / "cityscapes"
        for i in range(n):
            city = ["frankfurt", "lindau"][i % 2]
            stem = f"{city}_000000_{i:06d}"
            image, labels = _sample_arrays(kind, i, seed)
            write_image(root / "leftImg8bit/val" / city / f"{stem}_leftImg8bit.png", image)
            write_label(root / "gtFine/val" / city / f"{stem}_gtFine_labelTrainIds.png", labels)
            stored[f"{city}/{stem}"] = labels
    elif kind == "ade":
        root = base / "ade" / "ADEChallengeData2016"
        for i in range(n):
            key = f"ADE_val_{i + 1:08d}"
            image, labels = _sample_arrays(kind, i, seed)
            write_image(root / "images/validation" / f"{key}.jpg", image)
            write_label(root / "annotations/validation" / f"{key}.png", labels)
            stored[key] = labels
    else:
        raise ValueError(kind)
    return root, stored

#: dataset → (layout kind, folder to pass above the MMSegmentation root)
DATASET_KINDS = {
    "voc21": "voc",
    "voc20": "voc",
    "context60": "context",
    "context59": "context",
    "coco_stuff": "coco_stuff",
    "coco_object": "coco_stuff",
    "cityscapes": "cityscapes",
    "ade20k": "ade",
}

def build_for(dataset: str, base: Path, n: int = 2, seed: int = 0):
    root, stored = build_dataset(DATASET_KINDS[dataset], base, n, seed)
    if dataset == "coco_object":
        convert_coco_object(root, progress=False)
    return root, stored

def expected_labels(dataset: str, raw: np.ndarray) -> np.ndarray:
    """Independent statement of each dataset's label convention."""
    raw = raw.astype(np.int32)
    if dataset in ("voc20", "context59", "ade20k"):
        out = np.where(raw == 0, 255, raw - 1)
        return np.where(raw == 255, 255, out).astype(np.uint8)
    if dataset == "coco_object":
        return np.where(raw < 80, raw + 1, 0).astype(np.uint8)
    return raw.astype(np.uint8)
