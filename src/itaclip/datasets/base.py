"""What a benchmark dataset is to the harness: a list of (image, label map) samples and a rule that
turns a stored label map into evaluation labels (0 … C-1, 255 = ignore)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..engine.errors import ItaclipError

#: The label of pixels that no metric counts (MMSegmentation's convention).
IGNORE_INDEX = 255


class SampleError(Exception):
    """One sample cannot be read (corrupt or unreadable file): reported, skipped and counted."""


@dataclass(frozen=True)
class Sample:
    key: str
    """Stable identifier (file stem; ``city/stem`` for Cityscapes)."""
    image: Path
    label: Path


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: dataset name → layout loader, preset and label conventions."""

    name: str
    title: str
    preset: str
    num_classes: int
    finder: Callable[["DatasetSpec", Path], "Dataset"] = field(repr=False, compare=False)
    """``finder(spec, data_root)`` → :class:`Dataset`; raises :class:`ItaclipError` on a wrong layout."""
    layout: str
    """One-line description of the expected on-disk layout (shown in errors and docs)."""
    reduce_zero_label: bool = False
    """Label 0 is ignored and the rest shifted down by one (VOC20, Context59, ADE20K)."""
    mmseg_root: str = ""
    """The data root MMSegmentation's configs use (docs)."""


@dataclass
class Dataset:
    spec: DatasetSpec
    root: Path
    samples: list[Sample] = field(default_factory=list)
    label_transforms: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    """Per-sample transforms keyed by sample key (e.g. Cityscapes labelIds → trainIds fallback)."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def load_label(self, sample: Sample) -> np.ndarray:
        """The evaluation labels of ``sample``: (H, W) uint8, 0 … C-1 and 255.

        Raises :class:`SampleError` for an unreadable file and :class:`ItaclipError` for a file
        that is readable but not a label map of this dataset.
        """
        raw = read_label_map(sample.label)
        transform = self.label_transforms.get(sample.key)
        if transform is not None:
            raw = transform(raw)
        labels = convert_labels(raw, self.spec)
        bad = (labels != IGNORE_INDEX) & (labels >= self.num_classes)
        if bad.any():
            values = np.unique(raw[bad])[:5].tolist()
            raise ItaclipError(
                f"label map {sample.label} holds values {values} outside the {self.num_classes} classes of "
                f"{self.name} (255 = ignore): wrong dataset or label files ({self.spec.layout})"
            )
        return labels


def read_label_map(path: Path) -> np.ndarray:
    """A stored label map as (H, W) uint8 class ids, read as MMSegmentation does (Pillow, palette
    indices kept). RGB colour masks are an error (they are not class ids)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ItaclipError(f"label map {path} does not exist")
    try:
        with Image.open(path) as img:
            mode = img.mode
            array = np.array(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise SampleError(f"cannot read label map {path}: {exc}") from None
    if array.ndim != 2:
        raise ItaclipError(
            f"label map {path} has {array.shape[2] if array.ndim == 3 else array.ndim} channels "
            f"(mode {mode}); "
            "expected a single-channel PNG of class ids (palette or greyscale), not a colour rendering"
        )
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ItaclipError(f"label map {path} holds values above 255 (mode {mode}): not a class-id map")
        array = array.astype(np.uint8)
    return array


def convert_labels(raw: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    return reduce_zero_label(raw) if spec.reduce_zero_label else raw


def reduce_zero_label(labels: np.ndarray) -> np.ndarray:
    """MMSegmentation's rule: 0 → 255 (ignored), every other label minus one, 255 stays 255."""
    labels = labels.astype(np.int16)
    out = labels - 1
    out[labels == 0] = IGNORE_INDEX
    out[labels == IGNORE_INDEX] = IGNORE_INDEX
    return out.astype(np.uint8)


def lookup_table(mapping: dict[int, int], default: int = IGNORE_INDEX) -> np.ndarray:
    table = np.full(256, default, dtype=np.uint8)
    for src, dst in mapping.items():
        table[src] = dst
    return table


# ---------------------------------------------------------------------------------------------
# Layout helpers


def pick_root(
    data_root: Path, candidates: Sequence[str], required: Sequence[str], spec_name: str, layout: str
) -> Path:
    """The first of ``data_root/<candidate>`` that holds every ``required`` path.

    Users may point ``--data-root`` at MMSegmentation's data root for the dataset or at a folder
    above it (``data/`` or ``VOCdevkit/``).
    """
    if not data_root.exists():
        raise ItaclipError(f"data root {data_root} does not exist")
    if not data_root.is_dir():
        raise ItaclipError(f"data root {data_root} is not a directory")
    for candidate in candidates:
        base = data_root / candidate if candidate else data_root
        if all((base / r).exists() for r in required):
            return base
    # Name the first thing missing under the most plausible root.
    for candidate in candidates:
        base = data_root / candidate if candidate else data_root
        if base.is_dir() and any((base / r).exists() for r in required):
            missing = next(r for r in required if not (base / r).exists())
            raise ItaclipError(f"{spec_name}: {base / missing} not found (expected layout: {layout})")
    raise ItaclipError(f"{spec_name}: {data_root} does not hold the expected layout: {layout}")


def check_samples(name: str, samples: list[Sample], where: Path) -> list[Sample]:
    """Fail with one line naming the first missing file; no sample is dropped silently."""
    if not samples:
        raise ItaclipError(f"{name}: no images found under {where}")
    for what, paths in (("image", [s.image for s in samples]), ("label map", [s.label for s in samples])):
        missing = [p for p in paths if not p.is_file()]
        if missing:
            extra = f" ({len(missing)} of {len(samples)} {what}s missing)" if len(missing) > 1 else ""
            raise ItaclipError(f"{name}: {what} {missing[0]} not found{extra}")
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ItaclipError(f"{name}: image {dup} is listed twice")
    return samples


def read_split_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ItaclipError(f"cannot read split file {path}: {exc}") from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]
