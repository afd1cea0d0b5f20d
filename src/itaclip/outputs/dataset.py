"""Dataset-level exports of a run: one file (or folder) per tool that imports the whole run at once.

Built at the end of every run from the per-image files (:mod:`.exports`, :mod:`.writer`), so they
cover the images of earlier, resumed runs too and come out the same however many processes made the
per-image files. Each is written atomically. Formats (files in the output folder ``OUT``):

``coco`` → ``OUT/coco.json``
    One COCO file: every image of the run (``id`` = its position in the run's image list, from 1,
    ``file_name`` = its path relative to the input root), the categories once, and every image's
    annotations (ids renumbered from 1).

``labelstudio`` → ``OUT/tasks.json`` and ``OUT/labelstudio_config.xml``
    One Label Studio task per image (``data.image`` = ``image_url_prefix`` + the image's path
    relative to the input root, URL-quoted) with its brush pre-annotations, and the labelling config
    that matches them.

``cvat`` → ``OUT/cvat/``
    CVAT's "Segmentation mask 1.1" layout: ``labelmap.txt`` (``name:r,g,b::`` per class, in class
    order, VOC colours), ``ImageSets/Segmentation/default.txt`` (image paths relative to the input
    root, without extension; bytes that are not UTF-8 and control characters as ``%XX``) and
    ``SegmentationClass/<path>.png`` (the palette label PNGs, linked or copied, named as in
    ``default.txt``). Zip the folder's contents to import them into a CVAT task.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import NamedTuple, Sequence
from urllib.parse import quote

from ..engine.errors import ItaclipError
from ..engine.files import atomic_open, atomic_write_text, json_bytes, read_json
from .exports import derived_name, export_paths, labelstudio_config, line_file_name, text_file_name
from .visualize import palette

DATASET_FORMATS = ("coco", "labelstudio", "cvat")
CVAT_DIR = "cvat"


class DatasetItem(NamedTuple):
    """One image of a run: its id, its path relative to the input root, where its files are."""

    image_id: int
    rel: str
    out_dir: Path
    stem: str


def dataset_paths(out_dir: os.PathLike | str) -> dict[str, Path]:
    """Where each dataset-level format goes."""
    out_dir = Path(out_dir)
    return {"coco": out_dir / "coco.json", "labelstudio": out_dir / "tasks.json",
            "labelstudio_config": out_dir / "labelstudio_config.xml", "cvat": out_dir / CVAT_DIR}


def check_dataset_formats(formats: Sequence[str], class_names: Sequence[str]) -> None:
    """Refuse, before any work, what a format cannot hold."""
    if "cvat" in formats:
        if len(class_names) > 256:
            raise ItaclipError(f"CVAT's segmentation masks hold at most 256 classes, got {len(class_names)}: "
                               "leave out --export cvat")
        bad = [name for name in class_names if ":" in name or "\n" in name]
        if bad:
            raise ItaclipError(f"class name {bad[0]!r} cannot go into CVAT's labelmap.txt (':' separates "
                               "its fields): rename the class or leave out --export cvat")


def write_dataset_exports(out_dir: os.PathLike | str, items: Sequence[DatasetItem], class_names: Sequence[str],
                          formats: Sequence[str], image_url_prefix: str = "") -> dict[str, Path]:
    """Write the dataset-level file of each format in ``formats`` (others are ignored) for ``items``,
    whose per-image files must exist; returns the paths written."""
    paths = dataset_paths(out_dir)
    written: dict[str, Path] = {}
    if "coco" in formats:
        _write_coco(paths["coco"], items, class_names)
        written["coco"] = paths["coco"]
    if "labelstudio" in formats:
        _write_labelstudio(paths["labelstudio"], items, image_url_prefix)
        atomic_write_text(paths["labelstudio_config"], labelstudio_config(class_names))
        written["labelstudio"] = paths["labelstudio"]
        written["labelstudio_config"] = paths["labelstudio_config"]
    if "cvat" in formats:
        _write_cvat(paths["cvat"], items, class_names)
        written["cvat"] = paths["cvat"]
    return written


def _per_image(item: DatasetItem, fmt: str):
    path = export_paths(item.stem, item.out_dir)[fmt]
    data = read_json(path)
    if data is None:
        raise ItaclipError(f"{path} is missing or unreadable: run the same command again to redo that image")
    return data


def _json(obj) -> bytes:
    return json_bytes(obj).rstrip(b"\n")


def _write_coco(path: Path, items: Sequence[DatasetItem], class_names: Sequence[str]) -> None:
    # Streamed: a large run's annotations need not fit in memory, only its image entries.
    header = {
        "info": {"description": "itaclip open-vocabulary segmentation", "version": "1.0"},
        "licenses": [],
        "categories": [{"id": c + 1, "name": name, "supercategory": "itaclip"} for c, name in enumerate(class_names)],
    }
    images, next_id = [], 1
    with atomic_open(path) as handle:
        handle.write(_json(header)[:-1] + b',"annotations":[')
        for item in items:
            data = _per_image(item, "coco")
            image = data["images"][0]
            images.append({**image, "id": item.image_id, "file_name": text_file_name(item.rel)})
            for annotation in data["annotations"]:
                annotation = {**annotation, "id": next_id, "image_id": item.image_id}
                handle.write((b"," if next_id > 1 else b"") + _json(annotation))
                next_id += 1
        handle.write(b'],"images":' + _json(images) + b"}\n")


def image_url(prefix: str, rel: str) -> str:
    """How Label Studio finds an image: the prefix (a URL folder, or ``/data/local-files/?d=`` plus the
    folder under Label Studio's document root) and the URL-quoted relative path."""
    return prefix + quote(os.fsencode(rel), safe="/")  # the file's own bytes, also where they are not UTF-8


def _write_labelstudio(path: Path, items: Sequence[DatasetItem], prefix: str) -> None:
    with atomic_open(path) as handle:
        handle.write(b"[")
        for index, item in enumerate(items):
            task = _per_image(item, "labelstudio")[0]
            task["data"] = {**task["data"], "image": image_url(prefix, item.rel)}
            handle.write((b",\n" if index else b"") + _json(task))
        handle.write(b"]\n")


def _write_cvat(folder: Path, items: Sequence[DatasetItem], class_names: Sequence[str]) -> None:
    # Item names are UTF-8 lines: bytes that are not UTF-8 and control characters (a newline would
    # split default.txt) become %XX, in default.txt and in the mask's file name alike.
    names = [line_file_name(str(PurePosixPath(item.rel).with_suffix(""))) for item in items]
    seen: dict[str, str] = {}
    for name, item in zip(names, items):
        if name in seen:
            raise ItaclipError(f"{seen[name]} and {item.rel} both become the CVAT item {name!r}: rename one, or leave "
                               "out --export cvat")
        seen[name] = item.rel
    # The list and the label map last: a folder with them is complete.
    for name, item in zip(names, items):
        target = folder / "SegmentationClass" / f"{name}.png"
        try:
            _link_or_copy(item.out_dir / derived_name(item.stem, ".png"), target)
        except OSError as exc:
            raise ItaclipError(f"cannot write {target}: {exc.strerror or exc}") from None
    atomic_write_text(folder / "ImageSets" / "Segmentation" / "default.txt", "".join(f"{n}\n" for n in names))
    colors = palette(len(class_names))
    lines = ["# label:color_rgb:parts:actions"]
    lines += [f"{name}:{r},{g},{b}::" for name, (r, g, b) in zip(class_names, colors.tolist())]
    atomic_write_text(folder / "labelmap.txt", "\n".join(lines) + "\n")


def _link_or_copy(source: Path, target: Path) -> None:
    """Put ``source``'s content at ``target`` atomically: a hard link (no copy of the bytes) where the
    file system allows it, else a copy."""
    if not source.is_file():
        raise ItaclipError(f"{source} is missing: run the same command again to redo that image")
    if target.exists() and os.path.samefile(source, target):
        return  # linked by an earlier run, and the label PNG has not been rewritten since
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name[:64]}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # left by a failure, or by a rename between two links of one file

