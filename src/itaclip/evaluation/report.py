"""What an evaluation run reports: :class:`EvalResult`, its JSON and Markdown forms, the one-line
summary, and the files of the run directory (``results.json``, ``results.md``, ``confusion.npy``)."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..engine.files import atomic_write_bytes, json_bytes, npy_bytes, writing

#: Settings shown in the Markdown report's settings line, in this order (those the config has).
REPORTED_SETTINGS = (
    "method",
    "attention",
    "remove_ffn",
    "intermediate_layers",
    "image_engineering",
    "alpha",
    "lam",
    "short_side",
    "crop",
    "stride",
    "gaussian_std",
    "res_cls",
    "kk_weight",
    "rcs_weights",
    "sfr_thd",
    "sfr_weights",
    "entity_decay",
    "pamr_steps",
    "tlp",
    "tlp_grid",
    "logit_scale",
    "prob_thd",
    "area_thd",
    "closing",
    "precision",
)


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


def fmt(value) -> str:
    """A percentage with two decimals, or a dash for a missing one."""
    return "–" if value is None else f"{value:.2f}"


def markdown_report(result: EvalResult, title: str = "") -> str:
    m = result.metrics
    lines = [f"# {title or result.dataset}", ""]
    if result.complete:
        lines.append(
            f"**mIoU {fmt(m.get('mIoU'))}** · mAcc {fmt(m.get('mAcc'))} · aAcc {fmt(m.get('aAcc'))} "
            f"— complete: {result.images_evaluated} of {result.images_total} images"
            + (f", {len(result.skipped)} unreadable and skipped" if result.skipped else "")
        )
    else:
        lines.append(
            f"**PARTIAL — not a final number.** mIoU {fmt(m.get('mIoU'))} over "
            f"{result.images_evaluated} of {result.images_total} images ({result.note})"
        )
    lines += [
        "",
        f"Run directory: `{result.run_dir}` · {result.world_size} process(es) · {result.seconds:.1f} s",
        "",
    ]
    if result.settings.get("config"):
        shown = reported_settings(result.settings)
        lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in shown.items()), ""]
    if result.skipped:
        lines += (
            ["Skipped (unreadable):", ""] + [f"- `{s['key']}`: {s['error']}" for s in result.skipped] + [""]
        )
    lines += ["| class | IoU | Acc |", "|---|---:|---:|"]
    for row in m.get("per_class", []):
        lines.append(f"| {row['class']} | {fmt(row['IoU'])} | {fmt(row['Acc'])} |")
    return "\n".join(lines) + "\n"


def reported_settings(settings: dict, weights: Optional[str] = None) -> dict[str, str]:
    """What a report says produced a run's numbers, in a fixed order: the weights (``weights`` as
    given, else their identity: a name or a checkpoint's SHA-256), the method and its options in
    :data:`REPORTED_SETTINGS`, the device type and, on the CPU, the thread count."""
    cfg = settings.get("config", {})
    shown = {"weights": str(weights or settings.get("weights", "?")), "method": str(cfg.get("method", "itaclip"))}
    shown.update((key, str(cfg[key])) for key in REPORTED_SETTINGS if key in cfg and key != "method")
    if settings.get("device_type"):
        shown["device"] = str(settings["device_type"])
    if "cpu_threads" in settings:
        shown["cpu_threads"] = str(settings["cpu_threads"])
    return shown


def settings_lines(rows: list[dict]) -> list[str]:
    """Markdown lines under a results table saying which settings produced "ours": those every row
    shares, then, per row, the ones it sets itself. ``rows`` carry ``settings`` (a run's settings),
    optionally ``weights`` (as given) and their label under ``label``."""
    shown = [reported_settings(r["settings"], r.get("weights")) for r in rows if r.get("settings")]
    if not shown:
        return []
    common = {k: v for k, v in shown[0].items() if all(s.get(k) == v for s in shown[1:])}
    lines = ["", "Settings of ours: " + ", ".join(f"{k}={v}" for k, v in common.items())
             + (" (each row also sets its own, below)" if len(common) < max(map(len, shown)) else "") + "."]
    own_lines = []
    for r, settings in zip((r for r in rows if r.get("settings")), shown):
        own = {k: v for k, v in settings.items() if common.get(k) != v}
        if own:
            own_lines.append(f"- {r['label']}: " + ", ".join(f"{k}={v}" for k, v in own.items()))
    return lines + ([""] + own_lines if own_lines else [])


def write_report(result: EvalResult, title: str = "") -> None:
    """``results.json``, ``results.md`` and ``confusion.npy`` in the run directory, each atomically."""
    payloads = {
        "results.json": json_bytes(result.to_json(), indent=2),
        "results.md": markdown_report(result, title).encode("utf-8"),
        "confusion.npy": npy_bytes(result.confusion),
    }
    for name, data in payloads.items():
        path = result.run_dir / name
        with writing(path, resumable=True):
            atomic_write_bytes(path, data)


def summary_line(result: EvalResult) -> str:
    m = result.metrics
    status = "complete" if result.complete else f"PARTIAL, not final ({result.note})"
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    return (
        f"{result.dataset}: mIoU {fmt(m.get('mIoU'))}  mAcc {fmt(m.get('mAcc'))}  "
        f"aAcc {fmt(m.get('aAcc'))}  "
        f"[{result.images_evaluated}/{result.images_total} images{skipped}; {status}]"
    )
