"""Benchmark datasets: a registry mapping a dataset name to its layout loader, its preset and its
label conventions (ignore label 255 everywhere).

>>> from itaclip.datasets import load_dataset
>>> ds = load_dataset("voc21", "data/VOCdevkit/VOC2012")
>>> sample = ds.samples[0]; labels = ds.load_label(sample)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..engine.errors import ItaclipError
from . import layouts
from .base import Dataset, DatasetSpec, Sample, SampleError, read_label_map, reduce_zero_label
from .convert import coco_stuff_to_object, convert_coco_object

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "Sample",
    "SampleError",
    "get_dataset_spec",
    "list_datasets",
    "load_dataset",
    "read_label_map",
    "reduce_zero_label",
    "convert_coco_object",
    "coco_stuff_to_object",
]


def _spec(name, title, preset, num_classes, finder, layout, mmseg_root, reduce_zero_label=False):
    return DatasetSpec(name, title, preset, num_classes, finder, layout, reduce_zero_label, mmseg_root)


#: name → DatasetSpec. The preset of the same name holds the paper's settings and class file.
DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        _spec(
            "voc21",
            "Pascal VOC 2012 val, 20 classes + background",
            "voc21",
            21,
            layouts.find_voc,
            layouts.VOC_LAYOUT,
            "data/VOCdevkit/VOC2012",
        ),
        _spec(
            "voc20",
            "Pascal VOC 2012 val, 20 classes, background ignored",
            "voc20",
            20,
            layouts.find_voc,
            layouts.VOC_LAYOUT,
            "data/VOCdevkit/VOC2012",
            reduce_zero_label=True,
        ),
        _spec(
            "context60",
            "Pascal Context val, 59 classes + background",
            "context60",
            60,
            layouts.find_context,
            layouts.CONTEXT_LAYOUT,
            "data/VOCdevkit/VOC2010",
        ),
        _spec(
            "context59",
            "Pascal Context val, 59 classes, background ignored",
            "context59",
            59,
            layouts.find_context,
            layouts.CONTEXT_LAYOUT,
            "data/VOCdevkit/VOC2010",
            reduce_zero_label=True,
        ),
        _spec(
            "coco_stuff",
            "COCO-Stuff 164k val2017, 171 classes",
            "coco_stuff",
            171,
            layouts.find_coco_stuff,
            layouts.COCO_STUFF_LAYOUT,
            "data/coco_stuff164k",
        ),
        _spec(
            "coco_object",
            "COCO-Object val2017, 80 things + background",
            "coco_object",
            81,
            layouts.find_coco_object,
            layouts.COCO_OBJECT_LAYOUT,
            "data/coco_stuff164k",
        ),
        _spec(
            "cityscapes",
            "Cityscapes val, 19 classes",
            "cityscapes",
            19,
            layouts.find_cityscapes,
            layouts.CITYSCAPES_LAYOUT,
            "data/cityscapes",
        ),
        _spec(
            "ade20k",
            "ADE20K val, 150 classes",
            "ade20k",
            150,
            layouts.find_ade20k,
            layouts.ADE_LAYOUT,
            "data/ade/ADEChallengeData2016",
            reduce_zero_label=True,
        ),
    ]
}

#: Other spellings people type.
ALIASES = {
    "voc": "voc21",
    "pascal_voc": "voc21",
    "context": "context60",
    "pascal_context": "context60",
    "coco-stuff": "coco_stuff",
    "cocostuff": "coco_stuff",
    "coco_stuff164k": "coco_stuff",
    "coco-object": "coco_object",
    "cocoobject": "coco_object",
    "ade": "ade20k",
    "ade150": "ade20k",
    "city_scapes": "cityscapes",
}


def list_datasets() -> list[str]:
    return list(DATASETS)


def get_dataset_spec(name: str) -> DatasetSpec:
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(name.strip().lower(), ALIASES.get(key, key))
    try:
        return DATASETS[key]
    except KeyError:
        raise ItaclipError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}") from None


def load_dataset(name: str, data_root: Union[str, os.PathLike]) -> Dataset:
    """The validation samples of dataset ``name`` under ``data_root`` (layout checked, every image
    and label map present, else :class:`ItaclipError` naming the missing file)."""
    spec = get_dataset_spec(name)
    return spec.finder(spec, Path(data_root).expanduser())
