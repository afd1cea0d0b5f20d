"""One writer for a segmented image's files and the manifest that says which settings made them.

Per image ``STEM`` in its output folder (names are a public contract):

* ``STEM.png`` — class index per pixel at the image's size: a palette PNG (uint8 indices shown
  in the PASCAL VOC colours, as VOC's own label maps; ``np.asarray(PIL.Image.open(path))`` gives the
  indices), a 16-bit greyscale PNG above 256 classes; written last, so its presence marks the image
  done (written even when an export fails: the image is then reported as failed and its exports
  are retried by the next run);
* ``STEM_overlay.png`` — colour overlay with a legend (unless ``overlay=False``);
* ``STEM.npz`` (with ``save_probs``) — ``class_names`` and, by ``probs_format``:
  ``float32`` (default): ``probs`` float32 (C, H, W), the map the labels' argmax is taken of;
  ``float16``: the same ``probs`` as float16 (half the size);
  ``topk:K``: the K most probable classes per pixel, most probable first: ``topk_indices``
  (K, H, W) uint8 (uint16 above 256 classes) and ``topk_probs`` (K, H, W) float16 (ties: lower
  class index first, as the argmax);
* exports (``coco``, ``labelstudio``, ``masks``, ``cvat``): see :mod:`itaclip.outputs.exports`.

Per output folder: ``itaclip-run.json``, the manifest (:func:`run_manifest`). A folder's images are
only resumed when the manifest's settings equal the new run's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..engine.errors import ItaclipError, one_line
from ..engine.files import read_json, write_json, write_npz, write_png
from .exports import derived_name, export_paths, normalize_formats, write_exports

MANIFEST_NAME = "itaclip-run.json"

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class OutputOptions:
    """Which files to write for each image."""

    overlay: bool = True
    save_probs: bool = False
    exports: tuple[str, ...] = field(default=())
    """Export formats: any of ``coco``, ``labelstudio``, ``masks``, ``cvat``."""
    probs_format: str = "float32"
    """How ``STEM.npz`` stores the probabilities: ``float32``, ``float16`` or ``topk:K``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "exports", tuple(normalize_formats(self.exports)))
        object.__setattr__(self, "probs_format", normalize_probs_format(self.probs_format))


def normalize_probs_format(text: str) -> str:
    """``float32``, ``float16`` or ``topk:K`` (K >= 1), else a one-line error."""
    name = str(text).strip().lower()
    if name in ("float32", "float16"):
        return name
    kind, _, count = name.partition(":")
    if kind == "topk" and count.isdigit() and int(count) >= 1:
        return f"topk:{int(count)}"
    raise ItaclipError(f"unknown probability format {text!r}: use float32, float16 or topk:K (e.g. topk:3)")


def probability_arrays(probs: np.ndarray, probs_format: str) -> dict[str, np.ndarray]:
    """The arrays ``STEM.npz`` holds for ``(C, H, W)`` float32 probabilities (see the module docstring)."""
    if probs_format == "float32":
        return {"probs": probs}
    if probs_format == "float16":
        return {"probs": probs.astype(np.float16)}
    count = min(int(probs_format.split(":")[1]), probs.shape[0])
    # A stable sort of the negated probabilities puts the lower class index first among equals, as argmax.
    order = np.argsort(-probs, axis=0, kind="stable")[:count]
    index_type = np.uint8 if probs.shape[0] <= 256 else np.uint16
    return {"topk_indices": order.astype(index_type),
            "topk_probs": np.take_along_axis(probs, order, axis=0).astype(np.float16)}


def output_paths(out_dir: PathLike, stem: str, options: OutputOptions) -> dict[str, Path]:
    """Every file (or folder) written for one image, by kind; ``label`` is always there."""
    out_dir = Path(out_dir)
    paths = {"label": out_dir / derived_name(stem, ".png")}
    if options.overlay:
        paths["overlay"] = out_dir / derived_name(stem, "_overlay.png")
    if options.save_probs:
        paths["probs"] = out_dir / derived_name(stem, ".npz")
    exports = export_paths(stem, out_dir)
    paths.update({fmt: exports[fmt] for fmt in options.exports if fmt in exports})
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
    from .visualize import overlay, palette

    paths = output_paths(out_dir, stem, options)
    if options.save_probs:
        write_npz(paths["probs"], **probability_arrays(result.probs, options.probs_format),
                  class_names=np.array(result.class_names))
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
    write_png(paths["label"], result.labels, palette=palette(256))
    if export_error is not None:  # the image is not done (is_done wants the exports): a rerun retries them
        raise ItaclipError(f"export failed ({one_line(export_error)}); the label map was written") from export_error
    return paths


# ------------------------------------------------------------------------------------ manifest


def run_manifest(settings: dict, options: OutputOptions) -> dict:
    """The manifest of an output folder: the prediction settings (weights identity, options that
    change outputs, vocabulary: :func:`itaclip.engine.settings.prediction_settings`), which files are
    written, and the package version (informative; not compared)."""
    from .. import __version__

    return {"itaclip": __version__, "settings": settings,
            "outputs": {"overlay": options.overlay, "save_probs": options.save_probs,
                        "probs_format": options.probs_format, "exports": list(options.exports)}}


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
    old_outputs, new_outputs = old.get("outputs") or {}, manifest["outputs"]
    if old_outputs.get("save_probs") and new_outputs["save_probs"] and \
            old_outputs.get("probs_format", "float32") != new_outputs["probs_format"]:
        changed.append("outputs.probs_format")  # the STEM.npz files already there hold the other one
    if changed:
        shown = ", ".join(name.removeprefix("config.") for name in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise ItaclipError(f"{out_dir} holds outputs made with other settings ({shown}{more} differ; see {path}): "
                           "use --overwrite to redo them, or another --out")


def write_manifest(out_dir: PathLike, manifest: dict) -> None:
    write_json(Path(out_dir) / MANIFEST_NAME, manifest)
