"""Several methods on one dataset: each with its authors' setting for that dataset, on the same
harness (:func:`itaclip.evaluation.loop.evaluate`), in one table with the mIoU each method's authors (or
the ITACLIP paper) published beside ours.

The published figures are facts taken from the sources named with them: ViT-B/16 CLIP weights,
their own evaluation code. They were obtained on GPUs in fp16 (ours: fp32 unless asked), so a
difference of a few tenths is expected; a larger one deserves a look.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..engine.errors import ItaclipError
from ..engine.files import atomic_write_text, write_json
from ..engine.methods import get_method, list_methods
from .paper_tables import PARTIAL_NOTE, miou_cells, partial_footnote
from .report import settings_lines


def parse_methods(text: str) -> list[str]:
    """``"clip,sclip,naclip"`` → the method names, checked; ``"all"`` → every method."""
    names = list_methods() if text.strip().lower() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ItaclipError("no methods given: e.g. 'clip,sclip,naclip' or 'all'")
    for name in names:
        get_method(name)
    if len(set(names)) != len(names):
        raise ItaclipError(f"a method is named twice in {text!r}")
    return names


def compare_methods(dataset, base_segmenter, methods: Sequence[str], evaluate_one: Callable,
                    overrides: Optional[dict] = None, log: Callable[[str], None] = lambda message: None,
                    weights: Optional[str] = None) -> list[dict]:
    """Evaluate each method with its own preset for ``dataset`` (and ``overrides``), sharing the
    loaded model of ``base_segmenter``; ``evaluate_one(segmenter, title)`` runs the harness and
    returns its :class:`~itaclip.evaluation.report.EvalResult`. One row per method, with the
    run's settings (and ``weights``, the name the table shows for them)."""
    rows = []
    for number, name in enumerate(methods, 1):
        method = get_method(name)
        log(f"method {number}/{len(methods)}: {method.title}")
        segmenter = base_segmenter.for_method(name, dataset.spec.preset, **(overrides or {}))
        segmenter.set_vocabulary()
        result = evaluate_one(segmenter, f"{dataset.spec.title} — {method.title}")
        published = method.published.get(dataset.name)
        rows.append({
            "method": name,
            "title": method.title,
            "ours": result.miou,
            "published": published.miou if published else None,
            "source": published.source if published else None,
            "complete": result.complete,
            "images": result.images_evaluated,
            "run_dir": str(result.run_dir),
            "weights": weights,
            "settings": result.settings,
        })
    return rows


def comparison_markdown(dataset_name: str, title: str, rows: Sequence[dict], total_images: int) -> str:
    """The table: one line per method, our mIoU beside the published one, sources as notes."""
    complete = all(r["complete"] for r in rows)
    lines = [f"Method comparison on {title} ({dataset_name}), each method with its authors' setting", ""]
    if not complete:
        lines += [PARTIAL_NOTE, ""]
    lines += ["| method | mIoU (ours) | published | Δ | source |", "|---|---:|---:|---:|---|"]
    for r in rows:
        ours, published, delta = miou_cells(r["ours"], r["complete"], r["published"], "g")
        lines.append(f"| {r['title']} | {ours} | {published} | {delta} | {r['source'] or ''} |")
    lines += partial_footnote(list(rows), total_images)
    lines += settings_lines([{**r, "label": r["title"]} for r in rows])
    return "\n".join(lines) + "\n"


def write_comparison(out_dir: os.PathLike | str, dataset_name: str, title: str, rows: Sequence[dict],
                     total_images: int) -> Path:
    """``<out>/compare_<dataset>.md`` and ``.json`` (written atomically); returns the Markdown path."""
    out = Path(out_dir).expanduser()
    markdown = out / f"compare_{dataset_name}.md"
    atomic_write_text(markdown, comparison_markdown(dataset_name, title, rows, total_images))
    record = {"dataset": dataset_name, "rows": list(rows), "complete": all(r["complete"] for r in rows)}
    write_json(out / f"compare_{dataset_name}.json", record)
    return markdown
