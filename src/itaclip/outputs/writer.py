"""One writer for a segmented image's files and the manifest that says which settings made them.

Per image ``STEM`` in its output folder (names are a public contract):

* ``STEM.png`` — class index per pixel at the image's size: a palette PNG (uint8 indices shown
  in the PASCAL VOC colours, as VOC's own label maps; ``np.asarray(PIL.Image.open(path))`` gives the
  indices), a 16-bit greyscale PNG above 256 classes; written last, so its presence marks the image
  done (written even when an export fails: the image is then reported as failed and its exports
  are retried by the next run);
* ``STEM_overlay.png`` — colour overlay with a legend (unless ``overlay=False``);
* ``STEM.npz`` (with ``save_probs``) — ``class_names``, how the labels were made from the
  probabilities (:func:`label_rule`: ``prob_thd`` and ``labels_closed``) and, by ``probs_format``:
  ``float32`` (default): ``probs`` float32 (C, H, W), the probabilities after the area threshold;
  ``float16``: the same ``probs`` as float16 (half the size);
  ``topk:K``: the K most probable classes per pixel, most probable first: ``topk_indices``
  (K, H, W) uint8 (uint16 above 256 classes) and ``topk_probs`` (K, H, W) float16 (ties: lower
  class index first, as the argmax).
  The label map is the argmax of ``probs`` with pixels whose top probability is below ``prob_thd``
  set to 0, then, when ``labels_closed`` (the default, ``--no-closing`` turns it off), a 3×3
  grey-level closing of the class-index image, which changes the labels of some pixels along
  class borders: only without the closing is every label the (thresholded) argmax;
* exports (``coco``, ``labelstudio``, ``masks``, ``cvat``): see :mod:`itaclip.outputs.exports`.

Per output folder: ``itaclip-run.json``, the manifest (:func:`run_manifest`). A folder's images are
only resumed when the manifest's settings and output options equal the new run's.
"""

from __future__ import annotations

import os
import shlex
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


def label_rule(config) -> dict[str, np.ndarray]:
    """What ``STEM.npz`` records of how a :class:`~itaclip.engine.config.SegmenterConfig` turns its
    probabilities into labels: ``prob_thd`` (float64: a pixel whose top probability is below it is
    labelled 0) and ``labels_closed`` (bool: the labels were 3×3-closed after the argmax)."""
    return {"prob_thd": np.float64(config.prob_thd), "labels_closed": np.bool_(config.closing)}


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
                  image_file: Optional[str] = None, overlay_image: Optional[np.ndarray] = None,
                  config=None) -> dict[str, Path]:
    """Write one image's files atomically, the label map last; returns their paths by kind.

    Args:
        image: the (H, W, 3) uint8 RGB image that was segmented (for the overlay).
        result: a :class:`itaclip.SegmentationResult`.
        image_file: how exports refer to the image (default: ``stem``).
        overlay_image: the overlay, if the caller has already drawn it (the demo shows it too).
        config: the segmenter's :class:`~itaclip.engine.config.SegmenterConfig`: ``STEM.npz`` then records
            how the labels were made from the probabilities (:func:`label_rule`).
    """
    from .visualize import overlay, palette

    paths = output_paths(out_dir, stem, options)
    if options.save_probs:
        write_npz(paths["probs"], **probability_arrays(result.probs, options.probs_format),
                  class_names=np.array(result.class_names), **(label_rule(config) if config is not None else {}))
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


def run_manifest(settings: dict, options: OutputOptions, image_url_prefix: str = "") -> dict:
    """The manifest of an output folder: the prediction settings (weights identity, options that
    change outputs, vocabulary: :func:`itaclip.engine.settings.prediction_settings`), which files are
    written (with the Label Studio tasks' image URL prefix), and the package version (informative;
    not compared)."""
    from .. import __version__

    return {"itaclip": __version__, "settings": settings,
            "outputs": {"overlay": options.overlay, "save_probs": options.save_probs,
                        "probs_format": options.probs_format, "exports": list(options.exports),
                        "image_url_prefix": image_url_prefix}}


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


def _output_differences(old: dict, new: dict) -> list[str]:
    """Which output options of a manifest (``outputs``) a new run changes. Keys an older manifest
    does not record are not compared."""
    changed = [key for key in ("overlay", "save_probs") if key in old and bool(old[key]) != new[key]]
    if "exports" in old and sorted(old["exports"] or []) != sorted(new["exports"]):
        changed.append("exports")
    if old.get("save_probs") and new["save_probs"] and old.get("probs_format", "float32") != new["probs_format"]:
        changed.append("probs_format")
    if "image_url_prefix" in old and "labelstudio" in new["exports"] \
            and old["image_url_prefix"] != new["image_url_prefix"]:
        changed.append("image_url_prefix")
    return changed


def output_flags(outputs: dict) -> str:
    """The ``itaclip segment`` flags that write a manifest's ``outputs``."""
    flags = [] if outputs.get("overlay", True) else ["--no-overlay"]
    if outputs.get("save_probs"):
        fmt = outputs.get("probs_format", "float32")
        flags.append("--save-probs" if fmt == "float32" else f"--probs-format {fmt}")
    if outputs.get("exports"):
        flags.append(f"--export {','.join(outputs['exports'])}")
    if outputs.get("image_url_prefix") and "labelstudio" in (outputs.get("exports") or []):
        flags.append(f"--image-url-prefix {shlex.quote(outputs['image_url_prefix'])}")
    return " ".join(flags) or "no output flags"


def check_manifest(out_dir: PathLike, manifest: dict, overwrite: bool) -> None:
    """Refuse to resume a folder made with other settings or other output options (unless
    ``overwrite``: its images are redone): a resume that left out ``--export coco`` would leave the
    new images out of ``coco.json`` without a word."""
    path = Path(out_dir) / MANIFEST_NAME
    if overwrite or not path.is_file():
        return
    old = read_json(path)
    if not isinstance(old, dict) or not isinstance(old.get("settings"), dict):
        raise ItaclipError(f"{path} is not an itaclip manifest: remove it, or use --overwrite")
    changed = _differences(old["settings"], manifest["settings"])
    old_outputs = old.get("outputs") if isinstance(old.get("outputs"), dict) else {}
    changed_outputs = _output_differences(old_outputs, manifest["outputs"])
    if changed:
        changed += [f"outputs.{name}" for name in changed_outputs]
        shown = ", ".join(name.removeprefix("config.") for name in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        verb = "differs" if len(changed) == 1 else "differ"
        raise ItaclipError(f"{out_dir} holds outputs made with other settings ({shown}{more} {verb}; see {path}): "
                           "use --overwrite to redo them, or another --out")
    if changed_outputs:
        raise ItaclipError(f"{out_dir} was made with other output options (other {', '.join(changed_outputs)}): "
                           f"resume it with the same ones ({output_flags(old_outputs)}), or use --overwrite to "
                           "redo every image, or another --out")


def _written_by_itaclip(path: Path) -> bool:
    """Whether an image file is one that ``write_outputs`` writes: a label map (a palette or 16-bit
    PNG, also CVAT's links to them), an overlay (``*_overlay.png``) or a class mask (a greyscale PNG
    in ``STEM_masks/``). Only the PNG header is read."""
    from PIL import Image

    if path.suffix.lower() != ".png":
        return False
    if path.name.endswith("_overlay.png"):
        return True
    try:
        with Image.open(path) as png:
            mode = png.mode
    except Exception:  # noqa: BLE001 - not a PNG Pillow can open: not one itaclip wrote (writes are atomic)
        return False
    return mode in ("P", "I;16", "I") or (mode == "L" and path.parent.name.endswith("_masks"))


def foreign_image(folder: PathLike) -> Optional[Path]:
    """The first image file under ``folder`` (sub-folders included, links to folders not followed)
    that itaclip does not write, or None: a folder holding a manifest and such an image mixes
    inputs with outputs."""
    from ..engine.images import IMAGE_SUFFIXES

    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if path.suffix.lower() in IMAGE_SUFFIXES and not _written_by_itaclip(path):
                return path
    return None


def write_manifest(out_dir: PathLike, manifest: dict) -> None:
    write_json(Path(out_dir) / MANIFEST_NAME, manifest)
