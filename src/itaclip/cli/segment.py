"""``itaclip segment``: label images or whole folders with any vocabulary.

For each image STEM it writes ``DIR/STEM.png`` (class index per pixel, original size),
``DIR/STEM_overlay.png`` (colour overlay with a legend) and, on request, ``DIR/STEM.npz``
(``probs``: float32 (C, H, W)) and exports. Images already done are skipped (resume); every file is
written atomically; one bad image never loses the others' results.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

from ..config import build_config
from ..errors import ItaclipError
from .options import (
    add_engine_arguments,
    add_model_arguments,
    add_vocabulary_arguments,
    build_segmenter,
    config_overrides,
)


class Job(NamedTuple):
    source: Path
    out_dir: Path
    stem: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_vocabulary_arguments(parser, required=False)
    parser.add_argument("--save-probs", action="store_true", help="also write STEM.npz with per-class probabilities")
    parser.add_argument("--export", action="append", default=[], metavar="FORMAT",
                        help="also write coco (RLE JSON), labelstudio (brush pre-annotations) or masks (PNG per class); repeatable")
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders of folder inputs")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    add_model_arguments(parser, default_preset="default")
    add_engine_arguments(parser)


def collect_jobs(inputs: list[str], out_dir: Path, recursive: bool) -> tuple[list[Job], list[str]]:
    """Images to process and input errors. Folder inputs keep their sub-folder layout under DIR."""
    from ..io import IMAGE_SUFFIXES

    jobs, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
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
            raise ItaclipError(f"{seen[key]} and {job.source} would both write {key}.png: rename one or segment them separately")
        seen[key] = job.source
    return jobs, errors


def expected_outputs(job: Job, save_probs: bool, formats: list[str]) -> list[Path]:
    from ..exports import export_paths

    outputs = [job.out_dir / f"{job.stem}.png", job.out_dir / f"{job.stem}_overlay.png"]
    if save_probs:
        outputs.append(job.out_dir / f"{job.stem}.npz")
    paths = export_paths(job.stem, job.out_dir)
    return outputs + [paths[f] for f in formats]


def write_outputs(job: Job, image, result, save_probs: bool, formats: list[str]) -> None:
    from ..exports import write_exports
    from ..io import write_npz, write_png
    from ..visualize import overlay

    if save_probs:
        write_npz(job.out_dir / f"{job.stem}.npz", probs=result.probs, class_names=result.class_names)
    if formats:
        write_exports(result.labels, result.class_names, job.stem, job.out_dir, formats,
                      image_file=job.source.name, probs=result.probs)
    write_png(job.out_dir / f"{job.stem}_overlay.png", overlay(image, result.labels, result.class_names))
    write_png(job.out_dir / f"{job.stem}.png", result.labels)  # last: its presence marks the image done


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..exports import normalize_formats
    from ..io import read_image

    build_config(args.preset, **config_overrides(args))  # bad options fail before any work
    formats = normalize_formats(args.export)
    out_dir = Path(args.out)
    jobs, errors = collect_jobs(args.images, out_dir, args.recursive)
    for message in errors:
        print(f"itaclip segment: error: {message}", file=sys.stderr)
    todo = [j for j in jobs if args.overwrite or not all(p.exists() for p in expected_outputs(j, args.save_probs, formats))]
    skipped = len(jobs) - len(todo)
    if skipped:
        print(f"itaclip segment: {skipped} image(s) already done in {out_dir} (use --overwrite to redo)", file=sys.stderr)
    if not todo:
        return 1 if errors else 0

    segmenter = build_segmenter(args)
    segmenter.set_vocabulary(args.classes, background=args.background, aux_texts=args.aux_texts)
    failed, done, start = len(errors), 0, time.perf_counter()
    bar = tqdm(todo, desc="images", unit="img", dynamic_ncols=True, disable=None)
    windows = tqdm(desc="windows", unit="win", leave=False, dynamic_ncols=True, disable=None)

    def on_progress(current: int, total: int) -> None:
        windows.total = total
        windows.n = current
        windows.refresh()

    for job in bar:
        bar.set_postfix_str(job.source.name)
        try:
            image = read_image(job.source)
            result = segmenter.segment(image, progress=on_progress)
            write_outputs(job, image, result, args.save_probs, formats)
            done += 1
        except (ItaclipError, OSError, ValueError) as exc:
            failed += 1
            tqdm.write(f"itaclip segment: error: {job.source}: {exc}", file=sys.stderr)
    windows.close()
    bar.close()
    elapsed = time.perf_counter() - start
    print(f"itaclip segment: {done} done, {skipped} skipped, {failed} failed in {elapsed:.1f} s"
          f" -> {out_dir}", file=sys.stderr)
    return 1 if failed else 0
