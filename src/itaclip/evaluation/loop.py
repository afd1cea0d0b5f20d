"""The evaluation loop: run a segmenter over a dataset, persist one result per image, reduce the
confusion matrices (across ``torchrun`` processes too) and write the report.

Run directory
    ``<out>/<dataset>-<hash>/`` where ``hash`` digests every setting that can change a prediction
    (dataset and data root, weights, resolved :class:`~itaclip.engine.config.SegmenterConfig` without the
    pure-execution knobs, vocabulary with auxiliary texts, device type, on the CPU the thread
    count, format version). A run with other settings gets another directory, so results are never
    mixed. Every ``torchrun`` rank must compute the same settings, or the run stops.

Per-image results
    ``samples/<key>.npz`` holds the image's confusion matrix as exact sparse int64 triplets and
    the SHA-256 of their contents. It is written atomically (:mod:`itaclip.engine.files`) as soon as the
    image is done; a re-run with the same settings loads these and computes only the missing
    images. A file that cannot be read back, or whose contents no longer match their digest, is
    recomputed. Unreadable samples are listed in ``skipped`` (and retried by the next run).

Processes
    Under ``torchrun`` (``WORLD_SIZE`` > 1) rank r takes images r, r+N, r+2N, … of the selection;
    each rank sums the confusion matrices of its share (loaded or computed) and an integer
    all-reduce gives every rank the total: bit-for-bit the single-process matrix. Rank 0 writes
    ``results.json`` and ``results.md``.

Completeness
    ``complete`` is true only when every image of the dataset has a result or was reported as
    unreadable. With ``limit`` or after an interruption the report says ``"complete": false`` and
    the Markdown headline says PARTIAL: such a number is never a benchmark figure.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..datasets import Dataset, Sample, SampleError
from ..engine.errors import ItaclipError
from ..engine.files import atomic_write_bytes, npz_bytes, write_json, writing
from ..engine.images import read_image
from ..engine.settings import plain, prediction_settings, settings_hash
from .distributed import DistInfo, all_gather_objects, all_reduce_int64, require_same_on_all_ranks
from .metrics import confusion_matrix, dense_confusion, mean_iou, sparse_confusion, summarize
from .report import EvalResult, write_report

#: Bump when the meaning of a stored per-image file changes.
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------ settings


def run_settings(dataset: Dataset, segmenter, weights: str, extra: Optional[dict] = None) -> dict:
    """Everything that decides the predictions of this run, as plain JSON data."""
    vocab = segmenter.vocabulary
    if vocab is None:
        raise ItaclipError("the segmenter has no vocabulary: call set_vocabulary() first")
    settings = {
        "format": FORMAT_VERSION,
        "dataset": dataset.name,
        "data_root": str(dataset.root.resolve()),
        "device_type": segmenter.device.type,
        **prediction_settings(segmenter.config, vocab, weights),
    }
    if segmenter.device.type == "cpu":
        import torch

        # The thread count changes the order of fp32 reductions, which moves a few pixels' labels:
        # runs with other thread counts are other runs (docs/EVALUATION.md).
        settings["cpu_threads"] = torch.get_num_threads()
    if extra:
        settings["extra"] = extra
    return plain(settings)


def sample_filename(key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key.replace("/", "__"))
    return f"{safe}.npz"


# ------------------------------------------------------------------------------------ the loop


def sample_digest(key: str, num_classes: int, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray) -> str:
    """SHA-256 of a per-image result's contents: a file whose counts were altered after it was
    written no longer matches it (an integrity check, not a signature)."""
    digest = hashlib.sha256(f"{key}\n{num_classes}\n{len(rows)}\n".encode("utf-8"))
    for array in (rows, cols, counts):
        digest.update(np.ascontiguousarray(array, dtype="<i8").tobytes())
    return digest.hexdigest()


def load_sample_result(path: Path, key: str, num_classes: int) -> Optional[np.ndarray]:
    """The stored confusion matrix of image ``key``, or None when the file is missing, unreadable,
    another image's or altered (then the image is recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key or int(data["num_classes"]) != num_classes:
                return None
            rows, cols, counts = data["rows"], data["cols"], data["counts"]
            if str(data["sha256"]) != sample_digest(key, num_classes, rows, cols, counts):
                return None
            return dense_confusion(rows, cols, counts, num_classes)
    except Exception:  # truncated, corrupt, foreign or older file: recompute
        return None


def save_sample_result(path: Path, key: str, cm: np.ndarray, seconds: float) -> None:
    rows, cols, counts = sparse_confusion(cm)
    payload = npz_bytes(
        key=np.array(key),
        num_classes=np.array(cm.shape[0]),
        rows=rows,
        cols=cols,
        counts=counts,
        sha256=np.array(sample_digest(key, cm.shape[0], rows, cols, counts)),
        seconds=np.array(seconds),
    )
    with writing(path, resumable=True):
        atomic_write_bytes(path, payload)


def evaluate_sample(segmenter, dataset: Dataset, sample: Sample) -> np.ndarray:
    """The confusion matrix of one sample. Raises :class:`SampleError` if a file is unreadable and
    :class:`ItaclipError` if the files are inconsistent (size mismatch, foreign labels)."""
    if not sample.image.is_file():
        raise ItaclipError(f"image {sample.image} not found")
    try:
        image = read_image(sample.image)
    except ItaclipError as exc:
        raise SampleError(str(exc)) from None
    labels = dataset.load_label(sample)
    if labels.shape != image.shape[:2]:
        raise ItaclipError(
            f"label map {sample.label} is {labels.shape[1]}x{labels.shape[0]} but its image "
            f"{sample.image} is {image.shape[1]}x{image.shape[0]} (width x height): wrong or mismatched files"
        )
    result = segmenter.segment(image)
    return confusion_matrix(result.labels, labels, dataset.num_classes)


def evaluate(
    dataset: Dataset,
    segmenter,
    out_dir: os.PathLike | str,
    *,
    weights: str,
    limit: Optional[int] = None,
    info: DistInfo = DistInfo(),
    progress: bool = True,
    extra_settings: Optional[dict] = None,
    restart: bool = False,
    title: str = "",
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True),
) -> EvalResult:
    """Evaluate ``segmenter`` (vocabulary set) on ``dataset``; resumable; torchrun-aware.

    Every rank must call this with the same arguments. Returns the reduced result on every rank;
    rank 0 also writes ``results.json`` and ``results.md`` into the run directory.
    """
    vocab = segmenter.vocabulary
    if vocab is None:
        raise ItaclipError("the segmenter has no vocabulary: call set_vocabulary() first")
    if vocab.num_classes != dataset.num_classes:
        raise ItaclipError(
            f"the vocabulary has {vocab.num_classes} classes but {dataset.name} has {dataset.num_classes}: "
            "use the dataset's class file (one line per class)"
        )
    if limit is not None and limit < 1:
        raise ItaclipError(f"--limit must be at least 1, got {limit}")
    settings = run_settings(dataset, segmenter, weights, extra_settings)
    # All ranks share one run directory: they must agree on its identity (the CPU thread count
    # is part of it and comes from each process's environment).
    require_same_on_all_ranks(
        settings, info, "every process must run the same command with the same OMP_NUM_THREADS"
    )
    run_dir = Path(out_dir).expanduser() / f"{dataset.name}-{settings_hash(settings)}"
    samples_dir = run_dir / "samples"
    with writing(samples_dir, resumable=True):
        if restart and info.is_main and samples_dir.is_dir():
            for stale in samples_dir.glob("*.npz"):
                stale.unlink(missing_ok=True)
        if info.distributed and restart:
            all_gather_objects(None, info)  # barrier: nobody reads before rank 0 has cleared
        samples_dir.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        with writing(run_dir / "settings.json", resumable=True):
            write_json(run_dir / "settings.json", settings)

    selected = dataset.samples if limit is None else dataset.samples[:limit]
    mine = list(range(info.rank, len(selected), info.world_size))
    num_classes = dataset.num_classes
    device = str(segmenter.device)

    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    todo: list[int] = []
    for index in mine:
        sample = selected[index]
        path = samples_dir / sample_filename(sample.key)
        cm = load_sample_result(path, sample.key, num_classes) if path.is_file() else None
        if cm is None:
            todo.append(index)
        else:
            total += cm
    resumed = len(mine) - len(todo)
    if info.is_main and resumed:
        log(f"resuming {run_dir}: {resumed} of {len(mine)} image(s) of this process already done")

    skipped: list[dict] = []
    evaluated_now = 0
    interrupted = False
    start = time.perf_counter()
    bar = None
    miou_label = "mIoU (rank 0's share)" if info.distributed else "mIoU"
    if progress and info.is_main:
        from ..progress import progress as progress_display

        desc = dataset.name + (f" [rank 0/{info.world_size}]" if info.distributed else "")
        bar = progress_display(len(mine), desc, "img", prefix="itaclip eval", initial=resumed)
        if resumed:
            bar.set_postfix_str(f"{miou_label} {100 * mean_iou(total):.2f}")
    try:
        for index in todo:
            sample = selected[index]
            t0 = time.perf_counter()
            try:
                cm = evaluate_sample(segmenter, dataset, sample)
            except SampleError as exc:
                skipped.append({"key": sample.key, "error": str(exc)})
                message = f"skipped {sample.key}: {exc}"
                if bar is None:
                    log(message)
                    continue
                bar.write(message, file=sys.stderr)
            else:
                save_sample_result(
                    samples_dir / sample_filename(sample.key), sample.key, cm, time.perf_counter() - t0
                )
                total += cm
                evaluated_now += 1
            if bar is not None:  # the postfix first: the line written by update() shows this image's result
                postfix = f"{miou_label} {100 * mean_iou(total):.2f}"
                if skipped:
                    postfix += f", skipped {len(skipped)}"
                bar.set_postfix_str(postfix)
                bar.update()
    except KeyboardInterrupt:
        if info.distributed:
            raise
        interrupted = True
    finally:
        if bar is not None:
            bar.close()

    evaluated = resumed + evaluated_now
    # Integer reduction across processes: exact, independent of the sharding.
    total = all_reduce_int64(total, info, device)
    counts = all_reduce_int64(np.array([evaluated], dtype=np.int64), info, device)
    evaluated = int(counts[0])
    skipped = [s for part in all_gather_objects(skipped, info) for s in part]
    skipped.sort(key=lambda s: s["key"])

    done_all = evaluated + len(skipped) == len(selected)
    complete = done_all and len(selected) == len(dataset.samples) and not interrupted
    if interrupted:
        pending = len(selected) - evaluated - len(skipped)
        note = f"interrupted: {pending} image(s) pending; re-run the same command to resume"
    elif len(selected) < len(dataset.samples):
        note = f"--limit {limit}: {len(selected)} of {len(dataset.samples)} images selected"
    elif not done_all:
        note = f"{len(selected) - evaluated - len(skipped)} image(s) pending"
    else:
        note = ""
    result = EvalResult(
        dataset=dataset.name,
        run_dir=run_dir,
        complete=complete,
        images_total=len(dataset.samples),
        images_selected=len(selected),
        images_evaluated=evaluated,
        skipped=skipped,
        confusion=total,
        class_names=list(vocab.names),
        settings=settings,
        seconds=time.perf_counter() - start,
        world_size=info.world_size,
        note=note,
    )
    result.metrics = summarize(total, result.class_names)
    if info.is_main:
        write_report(result, title=title)
    if interrupted:
        raise KeyboardInterrupt
    return result
