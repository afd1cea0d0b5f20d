"""Segment many images into an output folder: resume, one manifest, per-image failures, progress,
and the split of the images between ``torchrun`` processes.

The loop behind ``itaclip segment``. Inputs are images, folders and lists of image paths; outputs
mirror the input tree under the output folder: an image at ``ROOT/a/x.jpg`` writes ``OUT/a/x.png``
(and its other files), where ``ROOT`` is the input root: the one folder given, else the deepest
folder that holds every input (or ``input_root``). An image whose files all exist is skipped
(resume) when the folder's manifest says it was made with the same settings; one bad image is
reported in one line and never stops the others.

Processes: under ``torchrun`` (``WORLD_SIZE`` > 1) rank 0 lists the images and sends the list to
every rank; each rank checks which of every N-th image are done, the ranks share the results, and
image i of the images still to do goes to rank i mod N: each is done exactly once, by one process
that reads it and writes its files, and a resumed run is again split evenly. Every rank loads its
own model (``cuda:LOCAL_RANK`` on GPUs). Rank 0 writes the manifest once every rank has checked the
folder's and agrees on the settings, and, after all ranks are done, the run's dataset-level exports
(:mod:`.dataset`) and the summary.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, NamedTuple, Optional, Sequence

from ..engine.errors import ItaclipError, one_line
from ..progress import plural, rate_text
from .writer import OutputOptions, check_manifest, is_done, write_manifest, write_outputs


class Job(NamedTuple):
    """One image: where it comes from and where its files go (``out_dir / stem*``)."""

    source: Path
    out_dir: Path
    stem: str
    rel: str = ""
    """The image's path relative to the input root (``/``-separated): how exports name it."""


# ------------------------------------------------------------------------------------------ inputs


def read_file_list(path: str) -> list[str]:
    """Image paths from a list file, one per line (``-``: standard input). Blank lines are skipped;
    a relative path is relative to the current folder (as ``find`` prints them), not to the list."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ItaclipError(f"cannot read the file list {path}: {exc}") from None
    return [line.strip("\r") for line in text.splitlines() if line.strip()]


def _common_root(inputs: Sequence[Path]) -> Path:
    folders = [str(p) if p.is_dir() else os.path.dirname(str(p)) for p in inputs]
    return Path(os.path.commonpath(folders)) if folders else Path.cwd()


def collect_jobs(inputs: Sequence[str], out_dir: Path, recursive: bool,
                 input_root: Optional[str] = None) -> tuple[list[Job], list[str]]:
    """Images to process and input errors. Outputs mirror the inputs' paths relative to the input
    root (see the module docstring); an image given twice is done once; two images that would write
    the same files are an error."""
    from ..engine.images import IMAGE_SUFFIXES

    found: list[Path] = []
    errors: list[str] = []
    given: list[Path] = []
    refuse_out_among_inputs(inputs, out_dir)
    for item in inputs:
        path = Path(os.path.abspath(item))
        if path.is_dir():
            _is_output_folder(path)  # mixed inputs and outputs: an error
            images = sorted(p for p in _walk(path, out_dir, recursive) if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                errors.append(f"{item}: no images found{'' if recursive else ' (use --recursive for sub-folders)'}")
            found += images
            given.append(path)
        elif path.is_file():
            found.append(path)
            given.append(path)
        else:
            errors.append(f"{item}: no such file or folder")
    root = Path(os.path.abspath(input_root)) if input_root else _common_root(given)
    jobs: list[Job] = []
    seen: dict[Path, Path] = {}
    for image in found:
        try:
            rel = image.relative_to(root)
        except ValueError:
            errors.append(f"{image}: not under the input root {root}")
            continue
        job = Job(image, out_dir / rel.parent, image.stem, PurePosixPath(*rel.parts).as_posix())
        key = job.out_dir / job.stem
        if key in seen:
            if seen[key] == image:
                continue
            raise ItaclipError(f"{seen[key]} and {image} would both write {key}.png: "
                               "rename one or segment them separately")
        seen[key] = image
        jobs.append(job)
    return jobs, errors


def _resolved(path: Path) -> Path:
    """The real path; a link loop (Python < 3.13 raises RuntimeError) or an unreadable link is
    taken as it stands."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def refuse_out_among_inputs(inputs: Sequence[str], out_dir: Path) -> None:
    """Outputs never mix with the inputs: refuse an ``--out`` that is, or contains, an input folder
    or the folder of an input image (a later run over that tree would segment the outputs), and an
    ``--out`` inside the inputs' tree that already holds images itaclip did not write (they would
    be neither segmented nor kept apart). A new or output-only sub-folder is fine: the walk leaves
    it out (:func:`_walk`)."""
    from .writer import foreign_image

    out = _resolved(out_dir)
    folders: dict[Path, str] = {}  # each input's folder (a list may name many images of one folder)
    for item in inputs:
        path = _resolved(Path(os.path.abspath(item)))
        if path.is_dir():
            folders.setdefault(path, f"the input folder {item}")
        elif path.exists():
            folders.setdefault(path.parent, f"the folder of the input image {item}")
    inside = None
    for folder, what in folders.items():
        if out == folder:
            raise ItaclipError(f"--out {out_dir} is {what}: outputs would mix with the images (and a later run "
                               "over it would segment them); choose another folder (a new sub-folder is fine)")
        if folder.is_relative_to(out):
            raise ItaclipError(f"--out {out_dir} contains {what}: outputs would mix with the images (and a later "
                               "run over it would segment them); choose a folder outside the inputs' tree "
                               "(a new sub-folder is fine)")
        if inside is None and out.is_relative_to(folder):
            inside = what
    if inside is not None and out.is_dir():
        stranger = foreign_image(out)
        if stranger is not None:
            raise ItaclipError(f"--out {out_dir} lies inside {inside} and holds images itaclip did not write "
                               f"({stranger}): outputs would mix with them; choose a new folder")


def _is_output_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an itaclip manifest (an earlier output folder); an error when it also
    holds images itaclip did not write: a folder of inputs is never left out because a manifest
    sits in it."""
    from .writer import MANIFEST_NAME, foreign_image

    if not (folder / MANIFEST_NAME).is_file():
        return False
    stranger = foreign_image(folder)
    if stranger is not None:
        raise ItaclipError(f"{folder} holds an itaclip {MANIFEST_NAME} and also images itaclip did not write "
                           f"({stranger}): outputs and inputs are mixed there; move the outputs and "
                           f"{MANIFEST_NAME} out of it, then run again")
    return True


def _walk(folder: Path, out_dir: Path, recursive: bool) -> list[Path]:
    """Files in ``folder`` (and its sub-folders with ``recursive``; symbolic links to folders are
    not followed, so link loops end). Output folders are never walked into, so outputs are never
    segmented again: ``out_dir`` itself and any earlier output folder (it holds a manifest and no
    image itaclip did not write; one that holds both is an error, :func:`_is_output_folder`)."""
    if not recursive:
        return [p for p in folder.iterdir() if p.is_file()]
    out_resolved = _resolved(out_dir)
    files = []
    for root, dirs, names in os.walk(folder):
        base = Path(root)
        dirs[:] = [d for d in dirs if _resolved(base / d) != out_resolved and not _is_output_folder(base / d)]
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


# ----------------------------------------------------------------------------------------- the loop


@dataclass
class FolderSummary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    failures: list[Path] = field(default_factory=list)
    """The sources of the failed images."""
    processes: int = 1

    def line(self, out_dir: Path) -> str:
        extras = [rate_text(self.done / self.seconds, "image", "images")] if self.done and self.seconds > 0 else []
        extras += [f"{self.processes} processes"] if self.processes > 1 else []
        note = f" ({', '.join(extras)})" if extras else ""
        return (f"{self.done} done, {self.skipped} skipped, {self.failed} failed in {self.seconds:.1f} s{note}"
                f" -> {out_dir}")

    @classmethod
    def merged(cls, parts: Sequence["FolderSummary"]) -> "FolderSummary":
        """The summary of processes that ran side by side (the run took as long as the slowest)."""
        return cls(done=sum(p.done for p in parts), skipped=sum(p.skipped for p in parts),
                   failed=sum(p.failed for p in parts), seconds=max((p.seconds for p in parts), default=0.0),
                   errors=[e for p in parts for e in p.errors], failures=[f for p in parts for f in p.failures],
                   processes=len(parts))


def pending(jobs: Sequence[Job], options: OutputOptions, overwrite: bool) -> list[Job]:
    """Jobs whose files are not all there yet (every job with ``overwrite``)."""
    return [job for job in jobs if overwrite or not is_done(job.out_dir, job.stem, options)]


def segment_jobs(segmenter, jobs: Sequence[Job], options: OutputOptions, *,
                 report: Optional[Callable[[str], None]] = None, prefix: str = "itaclip segment",
                 log_lines: bool = False, max_pixels: Optional[int] = None) -> FolderSummary:
    """Segment each job's image and write its files; failures are reported in one line, counted
    and skipped (any error of one image: a broken file, an OpenCV error, memory, a full disk).
    Progress: a bar in a terminal, else (or with ``log_lines``) a line with images/s and ETA every
    few seconds. ``max_pixels``: the pixel limit of image files (default
    :func:`itaclip.engine.images.pixel_limit`)."""
    from ..engine.images import read_image
    from ..progress import progress

    summary, start = FolderSummary(), time.perf_counter()
    bar = progress(len(jobs), "images", "img", prefix=prefix, lines=log_lines)
    say = report or (lambda message: bar.write(message, file=sys.stderr))  # tqdm writes to stdout by default
    for job in jobs:
        bar.set_postfix_str(job.source.name)
        try:
            image = read_image(job.source, max_pixels)
            result = segmenter.segment(image)
            write_outputs(job.out_dir, job.stem, image, result, options, image_file=job.rel or job.source.name,
                          config=segmenter.config)
            summary.done += 1
        except Exception as exc:  # noqa: BLE001 - one image's failure, whatever it is, never stops the batch
            summary.failed += 1
            summary.failures.append(job.source)
            message = f"{job.source}: {_reason(exc, job.source)}"
            summary.errors.append(message)
            say(f"{prefix}: error: {message}")
        bar.update(1)
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _reason(exc: BaseException, source: Path) -> str:
    """What went wrong with one image, without its path (the error line starts with it): image
    readers name the file in their messages (``cannot read image PATH: truncated``)."""
    text = one_line(exc)
    for named in (f": {source}", f" {source}"):
        text = text.replace(named, "")
    return text


# ------------------------------------------------------------------------------------ a whole run


@dataclass(frozen=True)
class FolderRun:
    """What ``itaclip segment`` was asked to do, resolved (no model loaded yet)."""

    inputs: Sequence[str]
    out_dir: Path
    options: OutputOptions
    manifest: dict
    class_names: Sequence[str]
    files_from: Optional[str] = None
    input_root: Optional[str] = None
    recursive: bool = False
    overwrite: bool = False
    image_url_prefix: str = ""
    max_pixels: Optional[int] = None
    """Pixel limit of image files (default :func:`itaclip.engine.images.pixel_limit`)."""


def _first_problem(problems: Sequence[Optional[str]]) -> None:
    for problem in problems:
        if problem:
            raise ItaclipError(problem)


def _attempt(action: Callable[[], object]) -> tuple[object, Optional[str]]:
    """``(result, None)``, or ``(None, message)`` when ``action`` raises an ItaclipError: each rank's
    problems are shared before any raises, so that all stop together instead of waiting for one."""
    try:
        return action(), None
    except ItaclipError as exc:
        return None, str(exc)


def run_folder(run: FolderRun, load_segmenter: Callable[[str], object], device: Optional[str] = None,
               log: Callable[[str], None] = print) -> FolderSummary:
    """Segment the run's images (split between the ``torchrun`` processes, if any) and write the
    dataset-level exports; returns the summary of all processes, on every process.

    ``load_segmenter(device)`` gives a :class:`itaclip.Segmenter` with its vocabulary set; it is only
    called when this process has images to do. ``log`` prints rank 0's messages.
    """
    from ..evaluation.distributed import all_gather_objects, distributed_session
    from .dataset import DatasetItem, check_dataset_formats, write_dataset_exports

    check_dataset_formats(run.options.exports, run.class_names)
    with distributed_session(device) as (info, device):
        rank, world = info.rank, info.world_size
        tag = f" [rank {rank}/{world}]" if info.distributed else ""

        def collect():
            inputs = list(run.inputs) + (read_file_list(run.files_from) if run.files_from else [])
            if not inputs:
                raise ItaclipError("no images given: name images or folders, or give --files-from LIST")
            jobs, errors = collect_jobs(inputs, run.out_dir, run.recursive, run.input_root)
            if errors and not jobs:  # nothing to do: a bad input, not a failed image (exit code 2)
                raise ItaclipError("; ".join(errors))
            refuse_overwriting_inputs(jobs, run.options)
            return jobs, errors

        # Rank 0 lists the images (it alone reads a list from standard input); every rank gets its list.
        jobs_and_errors, problem = _from_rank_zero(_attempt(collect) if info.is_main else None, info)
        _first_problem([problem])
        jobs, input_errors = jobs_and_errors
        if info.is_main:
            for message in input_errors:
                log(f"error: {message}")

        # Every rank checks the folder's manifest before rank 0 may write it, and all agree on it.
        _, problem = _attempt(lambda: check_manifest(run.out_dir, run.manifest, run.overwrite))
        agreed = all_gather_objects((run.manifest["settings"], problem), info)
        _first_problem([p for _, p in agreed])
        differ = sorted(k for settings, _ in agreed for k in settings if settings[k] != agreed[0][0].get(k))
        if differ:
            raise ItaclipError(f"the torchrun processes were given different settings ({', '.join(differ)}): "
                               "give every node the same weights, classes and options")

        # Each rank checks every world-th image; image i of those still to do goes to rank i mod world.
        mine = [run.overwrite or not is_done(job.out_dir, job.stem, run.options) for job in jobs[rank::world]]
        flags = all_gather_objects(mine, info)
        todo_all = [job for index, job in enumerate(jobs) if flags[index % world][index // world]]
        todo = todo_all[rank::world]
        skipped = len(jobs) - len(todo_all)
        if info.is_main and skipped:
            log(f"{skipped} image(s) already done in {run.out_dir} with the same settings "
                "(use --overwrite to redo)")
        if info.is_main and info.distributed and todo_all:
            log(f"{len(todo_all)} image(s) to do by {world} processes")

        if todo_all:  # a file, a read-only folder or a full disk: said before any model loads
            from ..engine.files import check_output_folder

            _first_problem([p for _, p in all_gather_objects(
                _attempt(lambda: check_output_folder(run.out_dir)), info)])
        summary = FolderSummary()
        if info.is_main and todo_all and not todo:
            write_manifest(run.out_dir, run.manifest)
        if todo:
            segmenter = load_segmenter(device)
            if info.is_main:  # once the model loaded: a run that cannot start leaves the folder as it was
                write_manifest(run.out_dir, run.manifest)
                log(f"text features of {len(run.class_names)} classes: {segmenter.text_source}")
            summary = segment_jobs(segmenter, todo, run.options, prefix=f"itaclip segment{tag}",
                                   log_lines=info.distributed, max_pixels=run.max_pixels)
        summary = FolderSummary.merged(all_gather_objects(summary, info))  # waits for every rank
        summary.skipped, summary.failed = skipped, summary.failed + len(input_errors)

        dataset_formats = [f for f in run.options.exports if f in ("coco", "labelstudio", "cvat")]
        if info.is_main and dataset_formats and jobs:
            failed = set(summary.failures)
            items = [DatasetItem(index, job.rel, job.out_dir, job.stem) for index, job in enumerate(jobs, 1)
                     if job.source not in failed and is_done(job.out_dir, job.stem, run.options)]
            try:
                written = write_dataset_exports(run.out_dir, items, run.class_names, dataset_formats,
                                                run.image_url_prefix)
            except ItaclipError as exc:  # the images' own files are all there: report, do not lose the summary
                log(f"error: the run-level exports were not written: {exc}")
                summary.failed += 1
                written = {}
            for name, path in written.items():
                log(f"{name}: {path} ({plural(len(items), 'image')})")
        return summary


def _from_rank_zero(obj, info):
    """Rank 0's ``obj`` on every rank (a broadcast: a long image list is sent once per rank, where
    gathering it would make every rank hold one copy per rank)."""
    if not info.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
