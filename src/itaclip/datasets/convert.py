"""COCO-Object from COCO-Stuff 164k label maps.

The field's converter (GroupViT's ``cvt_coco_object.py``, used unchanged by SCLIP, NACLIP and the
ITACLIP authors) maps the raw COCO-Stuff maps (``<id>.png``: COCO ids 0–181, 255 unlabeled) to
``<id>_instanceTrainIds.png``: each of the 80 thing classes to 1–80 in train-id order, and every
stuff class **and the unlabeled pixels (255)** to 0 = background (its table sends every id above 90,
255 included, to 0). The result has no ignore pixels.

From MMSegmentation's ``<id>_labelTrainIds.png`` (0–79 things, 80–170 stuff, 255 unlabeled) the same
maps follow as ``t < 80 → t + 1``, everything else → 0; from the raw maps through the COCO id → train
id table. Both sources give identical files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..engine.errors import ItaclipError
from ..engine.files import write_png
from .base import SampleError, read_label_map

NUM_THINGS = 80

#: COCO-Stuff raw id (0-indexed COCO category id) → COCO-Stuff train id (0–170), as in the
#: converters of MMSegmentation and GroupViT: the 11 unused COCO ids are skipped.
_UNUSED_RAW_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
RAW_TO_TRAIN_ID = {raw: train for train, raw in enumerate(r for r in range(182) if r not in _UNUSED_RAW_IDS)}


def _object_lut_from_train_ids() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    lut[:NUM_THINGS] = np.arange(1, NUM_THINGS + 1, dtype=np.uint8)
    return lut


def _object_lut_from_raw() -> np.ndarray:
    lut = np.arange(256, dtype=np.uint8)  # ids absent from the table stay as they are (GroupViT)
    for raw, train in RAW_TO_TRAIN_ID.items():
        lut[raw] = train + 1 if train < NUM_THINGS else 0
    lut[255] = 0
    return lut


_FROM_TRAIN_IDS = _object_lut_from_train_ids()
_FROM_RAW = _object_lut_from_raw()


def coco_stuff_to_object(labels: np.ndarray, source: str = "labelTrainIds") -> np.ndarray:
    """COCO-Object labels (0 = background, 1–80 things) from COCO-Stuff labels.

    ``source`` is ``"labelTrainIds"`` (0–170, 255) or ``"raw"`` (COCO ids 0–181, 255).
    """
    labels = np.asarray(labels, dtype=np.uint8)
    if source == "labelTrainIds":
        return _FROM_TRAIN_IDS[labels]
    if source == "raw":
        return _FROM_RAW[labels]
    raise ValueError(f"unknown source {source!r}")


def _convert_one(job: tuple[str, str, str]) -> Optional[str]:
    src, source, dst = job
    try:
        labels = read_label_map(Path(src))
    except (SampleError, ItaclipError) as exc:
        return str(exc)
    write_png(dst, coco_stuff_to_object(labels, source))
    return None


def convert_coco_object(
    data_root: Union[str, os.PathLike],
    splits: tuple[str, ...] = ("val2017",),
    out_root: Optional[Union[str, os.PathLike]] = None,
    nproc: int = 1,
    progress: bool = True,
) -> int:
    """Write ``annotations/<split>/<id>_instanceTrainIds.png`` for every COCO-Stuff label map.

    Reads ``<id>_labelTrainIds.png`` (MMSegmentation's COCO-Stuff preparation) or, where that is
    absent, the raw ``<id>.png``. Output goes beside the inputs unless ``out_root`` is given.
    Returns the number of maps written; any unreadable input is an :class:`ItaclipError` at the end
    (after the readable ones are written), naming the first bad file.
    """
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise ItaclipError(f"data root {root} does not exist")
    if not (root / "annotations").is_dir() and (root / "coco_stuff164k/annotations").is_dir():
        root = root / "coco_stuff164k"
    out = Path(out_root).expanduser() if out_root else root
    jobs = []
    for split in splits:
        ann = root / "annotations" / split
        if not ann.is_dir():
            raise ItaclipError(
                f"coco_object conversion: {ann} not found (expected COCO-Stuff 164k layout "
                "coco_stuff164k/annotations/val2017/*_labelTrainIds.png)"
            )
        train_ids = {p.name[: -len("_labelTrainIds.png")]: p for p in ann.glob("*_labelTrainIds.png")}
        raws = {p.stem: p for p in ann.glob("*.png") if "TrainIds" not in p.name}
        for stem in sorted(set(train_ids) | set(raws)):
            src, kind = (train_ids[stem], "labelTrainIds") if stem in train_ids else (raws[stem], "raw")
            jobs.append((str(src), kind, str(out / "annotations" / split / f"{stem}_instanceTrainIds.png")))
        if not train_ids and not raws:
            raise ItaclipError(f"coco_object conversion: no COCO-Stuff label maps (*.png) in {ann}")
    from tqdm import tqdm

    errors: list[str] = []
    bar = tqdm(total=len(jobs), desc="coco_object", unit="map", disable=not progress)
    if nproc > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(nproc) as pool:
            for err in pool.imap(_convert_one, jobs, chunksize=16):
                errors += [err] if err else []
                bar.update()
    else:
        for job in jobs:
            err = _convert_one(job)
            errors += [err] if err else []
            bar.update()
    bar.close()
    if errors:
        raise ItaclipError(
            f"{len(errors)} COCO-Stuff label map(s) could not be converted; first: {errors[0]}"
        )
    return len(jobs)
