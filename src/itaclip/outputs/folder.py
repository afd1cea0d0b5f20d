"""Segment many images into an output folder: resume, one manifest, per-image failures, progress.

The loop behind ``itaclip segment``: folder inputs keep their sub-folder layout under the output
folder; an image whose files all exist is skipped (resume) when the folder's manifest says it was
made with the same settings; one bad image is reported in one line and never stops the others.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

from ..errors import ItaclipError, one_line
from .writer import OutputOptions, is_done, write_outputs


class Job(NamedTuple):
    """One image: where it comes from and where its files go (``out_dir / stem*``)."""

    source: Path
    out_dir: Path
    stem: str


def collect_jobs(inputs: Sequence[str], out_dir: Path, recursive: bool) -> tuple[list[Job], list[str]]:
    """Images to process and input errors. Folder inputs keep their sub-folder layout under
    ``out_dir``; two images that would write the same files are an error."""
    from ..images import IMAGE_SUFFIXES

    jobs, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if _same(path, out_dir):
                raise ItaclipError(f"--out {out_dir} is the input folder {path}: outputs would mix with the images "
                                   "(and could replace them); choose another folder (a sub-folder is fine)")
            found = sorted(p for p in _walk(path, out_dir, recursive) if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{path}: no images found{'' if recursive else ' (use --recursive for sub-folders)'}")
            for image in found:
                rel = image.relative_to(path)
                jobs.append(Job(image, out_dir / rel.parent, image.stem))
        elif path.is_file():
            jobs.append(Job(path, out_dir, path.stem))
        else:
            errors.append(f"{path}: no such file or folder")
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = job.out_dir / job.stem
        if key in seen and seen[key] != job.source:
            raise ItaclipError(f"{seen[key]} and {job.source} would both write {key}.png: "
                               "rename one or segment them separately")
        seen[key] = job.source
    return jobs, errors


def _resolved(path: Path) -> Path:
    """The real path; a link loop (Python < 3.13 raises RuntimeError) or an unreadable link is
    taken as it stands."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def _same(a: Path, b: Path) -> bool:
    return _resolved(a) == _resolved(b)


def _walk(folder: Path, out_dir: Path, recursive: bool) -> list[Path]:
    """Files in ``folder`` (and its sub-folders with ``recursive``; symbolic links to folders are
    not followed, so link loops end). Output folders are never walked into, so outputs are never
    segmented again: ``out_dir`` itself and any folder holding an itaclip manifest."""
    from .writer import MANIFEST_NAME

    if not recursive:
        return [p for p in folder.iterdir() if p.is_file()]
    out_resolved = _resolved(out_dir)
    files = []
    for root, dirs, names in os.walk(folder):
        base = Path(root)
        dirs[:] = [d for d in dirs if not (base / d / MANIFEST_NAME).is_file()
                   and _resolved(base / d) != out_resolved]
        files += [base / name for name in names if (base / name).is_file()]
    return files


def refuse_overwriting_inputs(jobs: Sequence[Job], options: OutputOptions) -> None:
    """An input image is never replaced by an output (``segment out/a.png --out out/`` would write
    the label map over it): refuse up front."""
    from .writer import output_paths

    sources = {_resolved(job.source) for job in jobs}
    for job in jobs:
        for path in output_paths(job.out_dir, job.stem, options).values():
            if _resolved(path) in sources:
                raise ItaclipError(f"{path} is an input image and would be replaced by an output: "
                                   "choose another --out")


@dataclass
class FolderSummary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def line(self, out_dir: Path) -> str:
        return (f"{self.done} done, {self.skipped} skipped, {self.failed} failed in {self.seconds:.1f} s"
                f" -> {out_dir}")


def pending(jobs: Sequence[Job], options: OutputOptions, overwrite: bool) -> list[Job]:
    """Jobs whose files are not all there yet (every job with ``overwrite``)."""
    return [job for job in jobs if overwrite or not is_done(job.out_dir, job.stem, options)]


def segment_jobs(segmenter, jobs: Sequence[Job], options: OutputOptions, *,
                 report: Optional[Callable[[str], None]] = None, prefix: str = "itaclip segment",
                 max_pixels: Optional[int] = None) -> FolderSummary:
    """Segment each job's image and write its files; failures are reported in one line, counted
    and skipped (any error of one image: a broken file, an OpenCV error, memory, a full disk).

    ``max_pixels``: the pixel limit of image files (default :func:`itaclip.images.pixel_limit`)."""
    from ..images import read_image
    from ..progress import progress

    summary, start = FolderSummary(), time.perf_counter()
    bar = progress(len(jobs), "images", "img", prefix=prefix)
    say = report or bar.write
    for job in jobs:
        bar.set_postfix_str(job.source.name)
        try:
            image = read_image(job.source, max_pixels)
            result = segmenter.segment(image)
            write_outputs(job.out_dir, job.stem, image, result, options, image_file=job.source.name)
            summary.done += 1
        except Exception as exc:  # noqa: BLE001 - one image's failure, whatever it is, never stops the batch
            summary.failed += 1
            message = f"{job.source}: {one_line(exc)}"
            summary.errors.append(message)
            say(f"{prefix}: error: {message}")
        bar.update(1)
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary
