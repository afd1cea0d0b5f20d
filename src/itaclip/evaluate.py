"""The benchmark harness: run a segmenter over a dataset, persist one result per image, reduce the
confusion matrices (across ``torchrun`` processes too) and write the report.

Run directory
    ``<out>/<dataset>-<hash>/`` where ``hash`` digests every setting that can change a prediction
    (dataset and data root, weights, resolved :class:`~itaclip.config.SegmenterConfig` without the
    pure-execution knobs, vocabulary with auxiliary texts, device type, format version). A run with
    other settings gets another directory, so results are never mixed.

Per-image results
    ``samples/<key>.npz`` holds the image's confusion matrix as exact sparse int64 triplets. It is
    written atomically (temporary file + rename) as soon as the image is done; a re-run with the
    same settings loads these and computes only the missing images. A file that cannot be read back
    is recomputed. Unreadable samples are listed in ``skipped`` (and retried by the next run).

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

import dataclasses
import datetime as _dt
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .datasets import Dataset, Sample, SampleError
from .errors import ItaclipError
from .files import atomic_write_bytes, npz_bytes, write_json
from .images import read_image
from .metrics import confusion_matrix, dense_confusion, mean_iou, sparse_confusion, summarize
from .settings import plain, prediction_settings, settings_hash

#: Bump when the meaning of a stored per-image file changes.
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------ distributed runtime


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistInfo:
    """Rank, world size and local rank from torchrun's environment (defaults: one process)."""

    def env_int(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        try:
            return int(value) if value.strip() else default
        except ValueError:
            raise ItaclipError(f"environment variable {name}={value!r} is not an integer") from None

    world = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK", 0)
    local = env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ItaclipError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def resolve_rank_device(device: Optional[str], info: DistInfo) -> str:
    """The device of this process: ``cuda:LOCAL_RANK`` when CUDA is chosen (or is the default)."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" or (info.distributed and device.startswith("cuda")):
        if info.distributed:
            return f"cuda:{info.local_rank}"
    return device


def init_distributed(device: str) -> DistInfo:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA) when ``WORLD_SIZE`` > 1."""
    info = dist_env()
    if not info.distributed:
        return info
    import torch
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise ItaclipError(f"WORLD_SIZE={info.world_size} but {name} is not set: start with torchrun")
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=info.rank,
            world_size=info.world_size,
            timeout=_dt.timedelta(hours=24),
        )
    return dataclasses.replace(info, backend=backend)


def shutdown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _all_reduce_int64(array: np.ndarray, info: DistInfo, device: str) -> np.ndarray:
    if not info.distributed:
        return array
    import torch
    import torch.distributed as dist

    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def _all_gather_objects(obj, info: DistInfo) -> list:
    if not info.distributed:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


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


# ------------------------------------------------------------------------------------ results


@dataclass
class EvalResult:
    dataset: str
    run_dir: Path
    complete: bool
    images_total: int
    images_selected: int
    images_evaluated: int
    skipped: list[dict]
    confusion: np.ndarray
    class_names: list[str]
    settings: dict
    seconds: float
    world_size: int = 1
    note: str = ""
    metrics: dict = field(default_factory=dict)

    @property
    def miou(self) -> Optional[float]:
        return self.metrics.get("mIoU")

    @property
    def images_pending(self) -> int:
        return self.images_selected - self.images_evaluated - len(self.skipped)

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "complete": self.complete,
            "status": "complete" if self.complete else "partial",
            "note": self.note,
            "mIoU": self.metrics.get("mIoU"),
            "mAcc": self.metrics.get("mAcc"),
            "aAcc": self.metrics.get("aAcc"),
            "images_total": self.images_total,
            "images_selected": self.images_selected,
            "images_evaluated": self.images_evaluated,
            "images_skipped": len(self.skipped),
            "images_pending": self.images_pending,
            "skipped": self.skipped,
            "per_class": self.metrics.get("per_class", []),
            "run_dir": str(self.run_dir),
            "settings_hash": self.run_dir.name.rsplit("-", 1)[-1],
            "settings": self.settings,
            "world_size": self.world_size,
            "seconds": round(self.seconds, 3),
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def markdown_report(result: EvalResult, title: str = "") -> str:
    m = result.metrics
    lines = [f"# {title or result.dataset}", ""]
    if result.complete:
        lines.append(
            f"**mIoU {_fmt(m.get('mIoU'))}** · mAcc {_fmt(m.get('mAcc'))} · aAcc {_fmt(m.get('aAcc'))} "
            f"— complete: {result.images_evaluated} of {result.images_total} images"
            + (f", {len(result.skipped)} unreadable and skipped" if result.skipped else "")
        )
    else:
        lines.append(
            f"**PARTIAL — not a final number.** mIoU {_fmt(m.get('mIoU'))} over "
            f"{result.images_evaluated} of {result.images_total} images ({result.note})"
        )
    lines += [
        "",
        f"Run directory: `{result.run_dir}` · {result.world_size} process(es) · {result.seconds:.1f} s",
        "",
    ]
    cfg = result.settings.get("config", {})
    if cfg:
        keys = [
            "attention",
            "remove_ffn",
            "intermediate_layers",
            "image_engineering",
            "alpha",
            "lam",
            "short_side",
            "crop",
            "stride",
            "pamr_steps",
            "logit_scale",
            "prob_thd",
            "area_thd",
            "closing",
            "precision",
        ]
        lines.append(
            "Settings: "
            + ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg)
            + f"; weights {result.settings.get('weights', '?')}"
        )
        lines.append("")
    if result.skipped:
        lines += (
            ["Skipped (unreadable):", ""] + [f"- `{s['key']}`: {s['error']}" for s in result.skipped] + [""]
        )
    lines += ["| class | IoU | Acc |", "|---|---:|---:|"]
    for row in m.get("per_class", []):
        lines.append(f"| {row['class']} | {_fmt(row['IoU'])} | {_fmt(row['Acc'])} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ the loop


def _load_sample_result(path: Path, key: str, num_classes: int) -> Optional[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key or int(data["num_classes"]) != num_classes:
                return None
            return dense_confusion(data["rows"], data["cols"], data["counts"], num_classes)
    except Exception:  # truncated, corrupt or foreign file: recompute
        return None


def _save_sample_result(path: Path, key: str, cm: np.ndarray, seconds: float) -> None:
    rows, cols, counts = sparse_confusion(cm)
    payload = npz_bytes(
        key=np.array(key),
        num_classes=np.array(cm.shape[0]),
        rows=rows,
        cols=cols,
        counts=counts,
        seconds=np.array(seconds),
    )
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
    run_dir = Path(out_dir).expanduser() / f"{dataset.name}-{settings_hash(settings)}"
    samples_dir = run_dir / "samples"
    if restart and info.is_main and samples_dir.is_dir():
        for stale in samples_dir.glob("*.npz"):
            stale.unlink(missing_ok=True)
    if info.distributed and restart:
        _all_gather_objects(None, info)  # barrier: nobody reads before rank 0 has cleared
    samples_dir.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        atomic_write_bytes(
            run_dir / "settings.json", (json.dumps(settings, indent=2, sort_keys=True) + "\n").encode()
        )

    selected = dataset.samples if limit is None else dataset.samples[:limit]
    mine = list(range(info.rank, len(selected), info.world_size))
    num_classes = dataset.num_classes
    device = str(segmenter.device)

    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    todo: list[int] = []
    for index in mine:
        sample = selected[index]
        path = samples_dir / sample_filename(sample.key)
        cm = _load_sample_result(path, sample.key, num_classes) if path.is_file() else None
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
        from tqdm import tqdm

        bar = tqdm(
            total=len(mine),
            initial=resumed,
            unit="img",
            dynamic_ncols=True,
            desc=f"{dataset.name}" + (f" [rank 0/{info.world_size}]" if info.distributed else ""),
        )
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
                if bar is not None:
                    bar.write(message, file=sys.stderr)
                    bar.update()
                else:
                    log(message)
                continue
            _save_sample_result(
                samples_dir / sample_filename(sample.key), sample.key, cm, time.perf_counter() - t0
            )
            total += cm
            evaluated_now += 1
            if bar is not None:
                bar.update()
                postfix = f"{miou_label} {100 * mean_iou(total):.2f}"
                if skipped:
                    postfix += f", skipped {len(skipped)}"
                bar.set_postfix_str(postfix)
    except KeyboardInterrupt:
        if info.distributed:
            raise
        interrupted = True
    finally:
        if bar is not None:
            bar.close()

    evaluated = resumed + evaluated_now
    # Integer reduction across processes: exact, independent of the sharding.
    total = _all_reduce_int64(total, info, device)
    counts = _all_reduce_int64(np.array([evaluated], dtype=np.int64), info, device)
    evaluated = int(counts[0])
    skipped = [s for part in _all_gather_objects(skipped, info) for s in part]
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


def write_report(result: EvalResult, title: str = "") -> None:
    data = result.to_json()
    write_json(result.run_dir / "results.json", data)
    atomic_write_bytes(result.run_dir / "results.md", markdown_report(result, title).encode())
    import io as _io

    buffer = _io.BytesIO()
    np.save(buffer, result.confusion)
    atomic_write_bytes(result.run_dir / "confusion.npy", buffer.getvalue())


def summary_line(result: EvalResult) -> str:
    m = result.metrics
    status = "complete" if result.complete else f"PARTIAL, not final ({result.note})"
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    return (
        f"{result.dataset}: mIoU {_fmt(m.get('mIoU'))}  mAcc {_fmt(m.get('mAcc'))}  "
        f"aAcc {_fmt(m.get('aAcc'))}  "
        f"[{result.images_evaluated}/{result.images_total} images{skipped}; {status}]"
    )
