"""Exports of a label map that annotation tools import: COCO JSON (RLE), Label Studio, mask PNGs.

All functions are pure: they take a label map ``(H, W)`` of class indices and the class names, and
return JSON-ready dictionaries or arrays; :func:`write_exports` writes them atomically.

Formats (``STEM`` is the image's stem, files go to ``out_dir``):

``coco`` → ``STEM.coco.json``
    A COCO "instances"-style file, readable by ``pycocotools.coco.COCO``: one image, every class as
    a category (``category_id`` = class index + 1, since COCO reserves 0), and **one annotation per
    class present** (COCO-Stuff's convention for semantic segmentation: a class's pixels form one
    region, not one instance per connected component). ``segmentation`` is compressed RLE
    ``{"size": [H, W], "counts": str}`` from ``pycocotools.mask.encode``; ``iscrowd`` is 0 (as in
    COCO-Stuff), ``area`` and ``bbox`` (``[x, y, w, h]``) come from pycocotools as well. With
    probabilities, ``score`` is the mean probability of the class over its region.

``labelstudio`` → ``STEM.labelstudio.json``
    A list with one Label Studio task holding the masks as pre-annotations (``predictions``) for the
    ``BrushLabels`` tool: one result per class present, ``value = {"format": "rle", "rle": [...],
    "brushlabels": [name]}``. :func:`labelstudio_config` gives the matching labeling config.

``masks`` → ``STEM_masks/<index>_<name>.png``
    One binary PNG (0 / 255) per class present; ``<name>`` is the class name made file-safe (at
    most 64 characters; the index keeps names unique). The folder is filled file by file (each
    atomic) and files of an earlier result that are not part of this one are removed.

``cvat``
    No per-image file: the palette label PNG is already a CVAT segmentation mask; the run's CVAT
    folder is built from them (:mod:`itaclip.outputs.dataset`, as are the run-level COCO and Label
    Studio files).

Decoding any of them gives back the label map exactly (tests/test_exports.py does it).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from ..engine.errors import ItaclipError
from ..engine.files import atomic_write_bytes, encode_png, json_bytes

FORMATS = ("coco", "labelstudio", "masks", "cvat")

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------


def _check_labels(labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0:
        raise ItaclipError(f"label map must be a non-empty (H, W) array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ItaclipError(f"label map must hold integers, got {labels.dtype}")
    if len(class_names) == 0:
        raise ItaclipError("no class names given")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= len(class_names):
        raise ItaclipError(
            f"label map values must be in [0, {len(class_names) - 1}] for {len(class_names)} classes, "
            f"got [{low}, {high}]"
        )
    return labels


def _present(labels: np.ndarray) -> list[int]:
    return [int(c) for c in np.unique(labels)]


def _region_scores(labels: np.ndarray, probs: Optional[np.ndarray]) -> dict[int, float]:
    if probs is None:
        return {}
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[1:] != labels.shape:
        raise ItaclipError(f"probabilities must be (C, {labels.shape[0]}, {labels.shape[1]}), got {probs.shape}")
    scores = {c: round(float(probs[c][labels == c].mean()), 6) for c in _present(labels)}
    return {c: score for c, score in scores.items() if np.isfinite(score)}  # NaN is not JSON: no score


#: Longest class-name part of a mask file name (file systems allow 255 bytes; the index keeps
#: truncated names unique).
SAFE_NAME_MAX = 64


def safe_name(name: str) -> str:
    """A class name usable in a file name: runs of anything but letters, digits, ``-`` and ``.``
    become ``_`` (``"traffic light"`` → ``traffic_light``), cut to :data:`SAFE_NAME_MAX` characters."""
    cleaned = re.sub(r"[^\w.\-]+", "_", name.strip(), flags=re.ASCII).strip("._")
    return cleaned[:SAFE_NAME_MAX].rstrip("._") or "class"


def text_file_name(name: str) -> str:
    """A file name as JSON text: bytes that are not UTF-8 (kept by Python as surrogate escapes, e.g.
    a Latin-1 ``café.png``) become ``%XX``, as in a URL, so the JSON stays valid."""
    return re.sub("[\udc80-\udcff]", lambda m: f"%{ord(m.group()) - 0xDC00:02X}", name)


def line_file_name(name: str) -> str:
    """A file name as one line of UTF-8 text (CVAT's image lists): :func:`text_file_name`, and the
    control characters (a newline would split the line) as ``%XX`` too."""
    return re.sub("[\x00-\x1f\x7f]", lambda m: f"%{ord(m.group()):02X}", text_file_name(name))


#: The longest file name most file systems allow, in bytes.
NAME_MAX = 255


def derived_name(stem: str, suffix: str) -> str:
    """``stem + suffix``, or, when that is longer than :data:`NAME_MAX` bytes (an image name near the
    limit with a long suffix such as ``.labelstudio.json``), the stem cut short and marked with a
    hash of the whole stem, so each image still gets its own file and every run the same one."""
    name = stem + suffix
    if len(os.fsencode(name)) <= NAME_MAX:
        return name
    digest = hashlib.sha1(os.fsencode(stem)).hexdigest()[:10]
    keep = NAME_MAX - len(os.fsencode(suffix)) - len(digest) - 1
    # cut in bytes; a character cut in two decodes to surrogate escapes, which encode back to the same bytes
    return os.fsdecode(os.fsencode(stem)[:keep]) + "~" + digest + suffix


# --------------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------------


def coco_dict(
    labels: np.ndarray,
    class_names: Sequence[str],
    image_file: str,
    probs: Optional[np.ndarray] = None,
    image_id: int = 1,
) -> dict:
    """The COCO JSON of one label map (see the module docstring)."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise ItaclipError(
            "the COCO export needs pycocotools: pip install pycocotools"
        ) from None
    labels = _check_labels(labels, class_names)
    height, width = labels.shape
    scores = _region_scores(labels, probs)
    annotations = []
    for c in _present(labels):
        rle = mask_utils.encode(np.asfortranarray(labels == c, dtype=np.uint8))
        annotation = {
            "id": len(annotations) + 1,
            "image_id": image_id,
            "category_id": c + 1,
            "segmentation": {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")},
            "area": int(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "iscrowd": 0,
        }
        if c in scores:
            annotation["score"] = scores[c]
        annotations.append(annotation)
    return {
        "info": {"description": "itaclip open-vocabulary segmentation", "version": "1.0"},
        "licenses": [],
        "images": [{"id": image_id, "file_name": image_file, "height": int(height), "width": int(width)}],
        "categories": [
            {"id": c + 1, "name": name, "supercategory": "itaclip"} for c, name in enumerate(class_names)
        ],
        "annotations": annotations,
    }


# --------------------------------------------------------------------------------------------------
# Label Studio
# --------------------------------------------------------------------------------------------------
#
# Label Studio's brush RLE is the bit-packed run-length format of thi.ng/rle-pack, applied to the
# mask flattened as RGBA (each pixel repeated 4 times; Label Studio reads the 4th channel):
#   header: 32 bits value count, 5 bits (word size - 1) = 7, 4 × 4 bits (run-size bits - 1) for the
#   run-size classes [3, 4, 8, 16]; then per run: 1 bit "repeat", 2 bits class, (class bits) for
#   (length - 1), 8 bits value; a single value is "0", class 0, length 0, value. Runs longer than
#   2**16 are split into 2**16-long pieces. Bits are packed MSB first and padded with 1-8 zero bits.
#
# We encode by hand, vectorised, instead of calling the encoder in `label-studio-sdk`
# (`label_studio_sdk.converter.brush`, where the older `label-studio-converter` moved): that package
# pins OpenCV below the version itaclip installs and pulls in a large dependency tree (HTTP client,
# pydantic models, XML and NLP tools) for a 60-line function, and its encoder builds a Python
# string of '0'/'1' characters run by run, which is slow on large images. Our bytes equal the SDK
# encoder's; tests/test_label_studio_real.py checks that, and the masks, with Label Studio's own code.

_LS_RUN_BITS = (3, 4, 8, 16)
_LS_WORD = 8


def _pack_fields(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Concatenate unsigned integers of the given bit widths, MSB first, into bits (uint8 0/1)."""
    total = int(widths.sum())
    starts = np.cumsum(widths) - widths
    field = np.repeat(np.arange(len(widths)), widths)
    offset = np.arange(total) - starts[field]
    shift = (widths[field] - 1 - offset).astype(np.uint64)
    return ((values[field] >> shift) & np.uint64(1)).astype(np.uint8)


def labelstudio_rle(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE (a list of byte values) of a 2-D mask; nonzero pixels → 255."""
    flat = np.repeat(np.where(np.asarray(mask).ravel() != 0, 255, 0).astype(np.uint64), 4)
    num = len(flat)
    if num >= 2**32:
        raise ItaclipError("mask too large for Label Studio's RLE (2**32 values at most)")
    # runs of equal values
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [num]]))
    run_values = flat[starts]
    # split runs longer than 2**16 into full 2**16 pieces plus the rest
    pieces = (lengths - 1) // 2**16 + 1
    lengths = np.repeat(lengths, pieces)
    run_values = np.repeat(run_values, pieces)
    last = np.cumsum(pieces) - 1  # index of the last piece of each run
    full = np.ones(len(lengths), dtype=bool)
    full[last] = False
    rest = lengths - (pieces.repeat(pieces) - 1) * 2**16
    lengths = np.where(full, 2**16, rest)
    # size class of every run; a run of one value is the "single value" code (class 0, length 0)
    size_class = np.searchsorted(np.array([8, 16, 256]), lengths, side="left")
    run_bits = np.array(_LS_RUN_BITS)[size_class]
    repeat = (lengths > 1).astype(np.uint64)
    size_class = np.where(lengths > 1, size_class, 0).astype(np.uint64)
    run_bits = np.where(lengths > 1, run_bits, _LS_RUN_BITS[0])
    run_len = (lengths - 1).astype(np.uint64)
    code = (
        (repeat << (2 + run_bits + _LS_WORD).astype(np.uint64))
        | (size_class << (run_bits + _LS_WORD).astype(np.uint64))
        | (run_len << np.uint64(_LS_WORD))
        | run_values
    )
    header = [(num, 32), (_LS_WORD - 1, 5)] + [(b - 1, 4) for b in _LS_RUN_BITS]
    values = np.concatenate([np.array([v for v, _ in header], dtype=np.uint64), code])
    widths = np.concatenate([np.array([w for _, w in header]), 1 + 2 + run_bits + _LS_WORD])
    bits = _pack_fields(values, widths.astype(np.int64))
    bits = np.concatenate([bits, np.zeros(8 - len(bits) % 8, dtype=np.uint8)])
    return np.packbits(bits).tolist()


def labelstudio_config(class_names: Sequence[str], from_name: str = "tag", to_name: str = "image") -> str:
    """A Label Studio labeling config matching :func:`labelstudio_task`."""
    from xml.sax.saxutils import quoteattr

    lines = [
        "<View>",
        f'  <Image name={quoteattr(to_name)} value="$image" zoom="true"/>',
        f"  <BrushLabels name={quoteattr(from_name)} toName={quoteattr(to_name)}>",
    ]
    lines += [f"    <Label value={quoteattr(name)}/>" for name in class_names]
    lines += ["  </BrushLabels>", "</View>"]
    return "\n".join(lines) + "\n"


def labelstudio_prediction(
    labels: np.ndarray,
    class_names: Sequence[str],
    image_file: str,
    probs: Optional[np.ndarray] = None,
    from_name: str = "tag",
    to_name: str = "image",
    model_version: str = "itaclip",
    classes: Optional[Iterable[int]] = None,
) -> dict:
    """One Label Studio prediction: a ``brushlabels`` result per class present (among ``classes``,
    default all), labelled ``class_names[c]``, with the mean probability as its score; the result
    ids are derived from ``image_file`` (the task's image) and the class."""
    labels = _check_labels(labels, class_names)
    height, width = labels.shape
    scores = _region_scores(labels, probs)
    wanted = None if classes is None else set(classes)
    results = []
    for c in _present(labels):
        if wanted is not None and c not in wanted:
            continue
        result = {
            # The same image gives the same file (a run split over processes equals one process's).
            "id": hashlib.sha1(f"{image_file}\0{c}".encode()).hexdigest()[:10],
            "from_name": from_name,
            "to_name": to_name,
            "type": "brushlabels",
            "origin": "prediction",
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {"format": "rle", "rle": labelstudio_rle(labels == c), "brushlabels": [class_names[c]]},
        }
        if c in scores:
            result["score"] = scores[c]
        results.append(result)
    prediction = {"model_version": model_version, "result": results}
    reported = [result["score"] for result in results if "score" in result]
    if reported:
        prediction["score"] = round(float(np.mean(reported)), 6)
    return prediction


def labelstudio_task(
    labels: np.ndarray,
    class_names: Sequence[str],
    image_file: str,
    probs: Optional[np.ndarray] = None,
    from_name: str = "tag",
    to_name: str = "image",
    model_version: str = "itaclip",
) -> dict:
    """One Label Studio task with the label map as brush pre-annotations (see the module docstring)."""
    prediction = labelstudio_prediction(labels, class_names, image_file, probs, from_name, to_name, model_version)
    return {"data": {to_name: image_file}, "predictions": [prediction]}


# --------------------------------------------------------------------------------------------------
# mask PNGs
# --------------------------------------------------------------------------------------------------


def mask_images(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"<index>_<name>.png": uint8 mask (0/255)}`` for every class present."""
    labels = _check_labels(labels, class_names)
    return {
        f"{c}_{safe_name(class_names[c])}.png": np.where(labels == c, 255, 0).astype(np.uint8)
        for c in _present(labels)
    }


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def normalize_formats(formats: Union[str, Iterable[str], None]) -> list[str]:
    """``"coco"``, ``"coco,masks"`` or a list → validated, de-duplicated list (order kept)."""
    if formats is None:
        return []
    if isinstance(formats, str):
        formats = [formats]
    out: list[str] = []
    for item in formats:
        for name in str(item).split(","):
            name = name.strip().lower().replace("-", "").replace("_", "")
            if not name:
                continue
            if name not in FORMATS:
                raise ItaclipError(f"unknown export format {name!r}; choose from {', '.join(FORMATS)}")
            if name not in out:
                out.append(name)
    return out


def export_paths(stem: str, out_dir: PathLike) -> dict[str, Path]:
    """Where :func:`write_exports` puts each format."""
    out_dir = Path(out_dir)
    return {
        "coco": out_dir / derived_name(stem, ".coco.json"),
        "labelstudio": out_dir / derived_name(stem, ".labelstudio.json"),
        "masks": out_dir / derived_name(stem, "_masks"),
    }


def _write_mask_folder(folder: Path, masks: dict[str, np.ndarray]) -> None:
    """Fill ``folder`` with the mask PNGs one atomic file at a time, then remove the files an earlier
    run left there that are not part of this result. Never renaming the folder itself means that
    two processes writing the same folder at once both succeed, and that the folder never vanishes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        atomic_write_bytes(folder / name, encode_png(mask))
    for stale in folder.glob("*.png"):
        if stale.name not in masks:
            stale.unlink(missing_ok=True)


def write_exports(
    labels: np.ndarray,
    class_names: Sequence[str],
    stem: str,
    out_dir: PathLike,
    formats: Union[str, Iterable[str]],
    *,
    image_file: Optional[str] = None,
    probs: Optional[np.ndarray] = None,
) -> dict[str, Path]:
    """Write the label map in each requested format to ``out_dir``; returns ``{format: path}``.

    ``formats``: any of ``coco``, ``labelstudio``, ``masks``, ``cvat`` (a list, or one comma-separated
    str; ``cvat`` writes nothing per image).
    ``image_file``: how the exports refer to the image (COCO ``file_name``, Label Studio
    ``data.image``, e.g. a URL or ``/data/local-files/?d=...``); defaults to ``stem``.
    ``probs``: optional ``(C, H, W)`` probabilities; adds a mean-probability ``score`` per region.
    Files are written atomically (temporary file, then ``os.replace``), mask PNGs one by one.
    """
    formats = normalize_formats(formats)
    labels = _check_labels(labels, class_names)
    class_names = [str(n) for n in class_names]
    image_file = text_file_name(image_file if image_file is not None else stem)
    paths = export_paths(stem, out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "cvat":
            continue  # nothing per image: see the module docstring
        path = paths[fmt]
        if fmt == "coco":
            atomic_write_bytes(path, json_bytes(coco_dict(labels, class_names, image_file, probs)))
        elif fmt == "labelstudio":
            atomic_write_bytes(path, json_bytes([labelstudio_task(labels, class_names, image_file, probs)]))
        elif fmt == "masks":
            _write_mask_folder(path, mask_images(labels, class_names))
        written[fmt] = path
    return written
