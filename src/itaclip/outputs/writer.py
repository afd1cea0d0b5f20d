"""One writer for a segmented image's files and the manifest that says which settings made them.

Per image ``STEM`` in its output folder (names are a public contract):

* ``STEM.png`` — class index per pixel at the image's size (uint8, uint16 above 256 classes);
  written last, so its presence marks the image done (written even when an export fails: the
  image is then reported as failed and its exports are retried on the next run);
* ``STEM_overlay.png`` — colour overlay with a legend (unless ``overlay=False``);
* ``STEM.npz`` — ``probs`` float32 (C, H, W), the map the labels' argmax is taken of, and
  ``class_names`` (with ``save_probs``);
* exports (``coco``, ``labelstudio``, ``masks``): see :mod:`itaclip.outputs.exports`.

Per output folder: ``itaclip-run.json``, the manifest (:func:`run_manifest`). A folder's images are
only resumed when the manifest's settings equal the new run's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import ItaclipError, one_line
from ..files import read_json, write_json, write_npz, write_png
from .exports import export_paths, normalize_formats, write_exports

MANIFEST_NAME = "itaclip-run.json"

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class OutputOptions:
    """Which files to write for each image."""

    overlay: bool = True
    save_probs: bool = False
    exports: tuple[str, ...] = field(default=())
    """Export formats: any of ``coco``, ``labelstudio``, ``masks``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "exports", tuple(normalize_formats(self.exports)))


def output_paths(out_dir: PathLike, stem: str, options: OutputOptions) -> dict[str, Path]:
    """Every file (or folder) written for one image, by kind; ``label`` is always there."""
    out_dir = Path(out_dir)
    paths = {"label": out_dir / f"{stem}.png"}
    if options.overlay:
        paths["overlay"] = out_dir / f"{stem}_overlay.png"
    if options.save_probs:
        paths["probs"] = out_dir / f"{stem}.npz"
    exports = export_paths(stem, out_dir)
    paths.update({fmt: exports[fmt] for fmt in options.exports})
    return paths


def is_done(out_dir: PathLike, stem: str, options: OutputOptions) -> bool:
    return all(path.exists() for path in output_paths(out_dir, stem, options).values())


def write_outputs(out_dir: PathLike, stem: str, image: np.ndarray, result, options: OutputOptions,
                  image_file: Optional[str] = None, overlay_image: Optional[np.ndarray] = None) -> dict[str, Path]:
    """Write one image's files atomically, the label map last; returns their paths by kind.

    Args:
        image: the (H, W, 3) uint8 RGB image that was segmented (for the overlay).
        result: a :class:`itaclip.SegmentationResult`.
        image_file: how exports refer to the image (default: ``stem``).
        overlay_image: the overlay, if the caller has already drawn it (the demo shows it too).
    """
    from .visualize import overlay

    paths = output_paths(out_dir, stem, options)
    if options.save_probs:
        write_npz(paths["probs"], probs=result.probs, class_names=np.array(result.class_names))
    export_error = None
    if options.exports:
        try:
            write_exports(result.labels, result.class_names, stem, out_dir, options.exports,
                          image_file=image_file if image_file is not None else stem, probs=result.probs)
        except Exception as exc:  # noqa: BLE001 - a failed export must not lose the label map
            export_error = exc
    if options.overlay:
        if overlay_image is None:
            overlay_image = overlay(image, result.labels, result.class_names)
        write_png(paths["overlay"], overlay_image)
    write_png(paths["label"], result.labels)
    if export_error is not None:  # the image is not done (is_done wants the exports): a rerun retries them
        raise ItaclipError(f"export failed ({one_line(export_error)}); the label map was written") from export_error
    return paths


# ------------------------------------------------------------------------------------ manifest


def run_manifest(settings: dict, options: OutputOptions) -> dict:
    """The manifest of an output folder: the prediction settings (weights identity, options that
    change outputs, vocabulary: :func:`itaclip.settings.prediction_settings`), which files are
    written, and the package version (informative; not compared)."""
    from .. import __version__

    return {"itaclip": __version__, "settings": settings,
            "outputs": {"overlay": options.overlay, "save_probs": options.save_probs,
                        "exports": list(options.exports)}}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out: list[str] = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def check_manifest(out_dir: PathLike, manifest: dict, overwrite: bool) -> None:
    """Refuse to resume a folder made with other settings (unless ``overwrite``: its images are
    redone). Which files are written may differ between runs; what they hold may not."""
    path = Path(out_dir) / MANIFEST_NAME
    if overwrite or not path.is_file():
        return
    old = read_json(path)
    if not isinstance(old, dict) or not isinstance(old.get("settings"), dict):
        raise ItaclipError(f"{path} is not an itaclip manifest: remove it, or use --overwrite")
    changed = _differences(old["settings"], manifest["settings"])
    if changed:
        shown = ", ".join(name.removeprefix("config.") for name in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise ItaclipError(f"{out_dir} holds outputs made with other settings ({shown}{more} differ; see {path}): "
                           "use --overwrite to redo them, or another --out")


def write_manifest(out_dir: PathLike, manifest: dict) -> None:
    write_json(Path(out_dir) / MANIFEST_NAME, manifest)
