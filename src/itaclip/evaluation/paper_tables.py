"""The paper's ablation tables as data: each row is a set of settings over the dataset's paper
preset, with the figures the paper reports, so that ``itaclip eval --paper-table N`` can run the
rows and print them beside the paper's numbers (the runner:
:func:`itaclip.evaluation.runner.run_paper_table`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..engine.errors import ItaclipError
from .report import settings_lines


@dataclass(frozen=True)
class PaperRow:
    label: str
    paper: dict  # dataset → the paper's mIoU
    overrides: dict = field(default_factory=dict)
    weights: Optional[str] = None  # a backbone name (Table 10); None = the run's weights
    background: Optional[str] = None  # replaces the dataset's background set (Table 11)


@dataclass(frozen=True)
class PaperTable:
    number: str
    title: str
    rows: tuple
    note: str = ""
    any_dataset: tuple = ()
    """Datasets a comparison runs on besides those with paper figures (tables not in the paper)."""

    @property
    def datasets(self) -> list[str]:
        seen: list[str] = []
        for row in self.rows:
            seen += [d for d in row.paper if d not in seen]
        return seen + [d for d in self.any_dataset if d not in seen]

    @property
    def heading(self) -> str:
        return f"Paper Table {self.number}" if self.number.isdigit() else f"Comparison '{self.number}'"

    @property
    def default_dataset(self) -> Optional[str]:
        """The dataset when the table reports only one, else None."""
        return self.datasets[0] if len(self.datasets) == 1 else None

    def check_dataset(self, name: str) -> None:
        if name not in self.datasets:
            raise ItaclipError(f"{self.heading} reports {', '.join(self.datasets)}, not {name}")

    @property
    def uses_aux_texts(self) -> bool:
        """Whether some row varies the auxiliary texts' weight (the LTG rows of Table 6)."""
        return any("alpha" in row.overrides or row.label.startswith("LTG") for row in self.rows)


def _cols(stuff=None, obj=None, voc=None, context=None, **others) -> dict:
    out = {"coco_stuff": stuff, "coco_object": obj, "voc21": voc, "context60": context, **others}
    return {k: v for k, v in out.items() if v is not None}


NO_PAMR = {"pamr_steps": 0}

#: The paper's tables as settings. Every row runs the dataset's paper preset plus the row's overrides
#: (and any method flag given on the command line, which the row's own overrides win over).
PAPER_TABLES: dict[str, PaperTable] = {
    "1": PaperTable(
        "1",
        "Main results (paper preset; Cityscapes from the authors' README)",
        (PaperRow("ITACLIP", _cols(27.0, 37.7, 67.9, 37.5, cityscapes=40.2)),),
    ),
    "2": PaperTable(
        "2",
        "Self-self attention combinations (Pascal VOC)",
        tuple(
            PaperRow(label, {"voc21": fig}, {"attention": att})
            for label, att, fig in [
                ("q-k", "q-k", 19.0),
                ("q-q", "q-q", 58.9),
                ("k-k", "k-k", 52.2),
                ("v-v", "v-v", 57.7),
                ("q-q + k-k", "q-q+k-k", 67.9),
                ("q-q + v-v", "q-q+v-v", 64.9),
                ("q-q + k-k + v-v", "q-q+k-k+v-v", 66.4),
            ]
        ),
    ),
    "3": PaperTable(
        "3",
        "Removing the feed-forward block of the last layer",
        (
            PaperRow("FFN kept", _cols(26.3, 36.9, 66.3, 36.3), {"remove_ffn": False}),
            PaperRow("FFN removed", _cols(27.0, 37.7, 67.9, 37.5), {"remove_ffn": True}),
        ),
    ),
    "4": PaperTable(
        "4",
        "Intermediate layers l' (Pascal VOC, without PAMR)",
        tuple(
            PaperRow(label, {"voc21": fig}, {**NO_PAMR, "intermediate_layers": layers})
            for label, layers, fig in [
                ("none", (), 65.0),
                ("{7}", (7,), 65.4),
                ("{8}", (8,), 65.5),
                ("{7, 8}", (7, 8), 65.5),
                ("{7, 8, 10}", (7, 8, 10), 65.6),
                ("{7, 8, 9, 10}", (7, 8, 9, 10), 65.5),
            ]
        ),
        "PAMR off in every row, as in the paper.",
    ),
    "5": PaperTable(
        "5",
        "Post-processing (PAMR)",
        (
            PaperRow("PAMR off", _cols(26.3, 36.4, 65.6, 36.0), NO_PAMR),
            PaperRow("PAMR on", _cols(27.0, 37.7, 67.9, 37.5), {}),
        ),
    ),
    "6": PaperTable(
        "6",
        "Image Engineering (IE) and LLM-based Text Generation (LTG), without PAMR",
        (
            PaperRow(
                "LTG off, IE off",
                {"context60": 34.3, "coco_stuff": 24.5},
                {**NO_PAMR, "alpha": 0.0, "image_engineering": False},
            ),
            PaperRow(
                "LTG on, IE off",
                {"context60": 34.6, "coco_stuff": 24.8},
                {**NO_PAMR, "image_engineering": False},
            ),
            PaperRow("LTG on, IE on", {"context60": 35.4, "coco_stuff": 25.4}, dict(NO_PAMR)),
        ),
        "LTG = the preset's auxiliary texts with its α; LTG off = α 0. PAMR off in every row.",
    ),
    "7": PaperTable(
        "7",
        "Sliding-window stride",
        tuple(
            PaperRow(f"stride {s}", _cols(*figs), {"stride": s})
            for s, figs in [
                (224, (25.3, 36.7, 66.1, 36.9)),
                (112, (26.6, 37.4, 67.1, 37.4)),
                (56, (26.9, 37.7, 67.9, 37.5)),
                (28, (27.0, 37.7, 67.9, 37.5)),
            ]
        ),
    ),
    "8": PaperTable(
        "8",
        "λ and α (Pascal Context, without PAMR)",
        tuple(
            PaperRow(f"λ {lam}, α {alpha}", {"context60": fig}, {**NO_PAMR, "lam": lam, "alpha": alpha})
            for lam, alpha, fig in [
                (0.75, 0.15, 36.0),
                (0.6, 0.15, 35.9),
                (0.5, 0.15, 35.8),
                (0.75, 0.2, 35.9),
                (0.5, 0.2, 35.7),
                (0.6, 0.2, 35.9),
                (0.6, 0.1, 35.9),
                (0.5, 0.1, 35.8),
            ]
        ),
        "PAMR off in every row, as in the paper.",
    ),
    "10": PaperTable(
        "10",
        "Visual backbone (Pascal VOC)",
        (
            PaperRow("ViT-L/14", {"voc21": 53.3}, weights="ViT-L/14"),
            PaperRow("ViT-B/32", {"voc21": 56.7}, weights="ViT-B/32"),
            PaperRow("ViT-B/16", {"voc21": 67.9}, weights="ViT-B/16"),
        ),
        "Local checkpoints: --backbone ViT-L/14=PATH (repeatable); the ViT-B/16 row uses --weights.",
    ),
    "backbones": PaperTable(
        "backbones",
        "CLIP backbones (not in the paper; OpenAI rows are Table 10's)",
        (
            PaperRow("OpenAI ViT-B/16", {"voc21": 67.9}, weights="ViT-B/16"),
            PaperRow("OpenAI ViT-L/14", {"voc21": 53.3}, weights="ViT-L/14"),
            PaperRow("LAION-2B ViT-B/16", {}, weights="ViT-B-16:laion2b_s34b_b88k"),
            PaperRow("DFN-2B ViT-B/16", {}, weights="ViT-B-16:dfn2b"),
            PaperRow("MetaCLIP-2.5B ViT-B/16", {}, weights="ViT-B-16:metaclip_fullcc"),
        ),
        "Every backbone with the dataset's paper preset. Weights are downloaded once (open_clip's cache); "
        "local copies: --backbone ViT-B-16:dfn2b=PATH (any --weights form); the ViT-B/16 row uses --weights.",
        any_dataset=("voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff", "cityscapes", "ade20k"),
    ),
    "11": PaperTable(
        "11",
        "Background set (COCO-Object)",
        (
            PaperRow("the word 'background' as class 0", {"coco_object": 34.5}, background="background"),
            PaperRow("background set (paper appendix)", {"coco_object": 37.7}),
        ),
    ),
}


def table_listing() -> str:
    """Every table with its rows and the paper's figures (``--paper-table list``)."""
    lines = []
    for table in PAPER_TABLES.values():
        lines.append(f"Table {table.number}: {table.title} — datasets {', '.join(table.datasets)}")
        for row in table.rows:
            figs = ", ".join(f"{d} {v}" for d, v in row.paper.items())
            weights = f"  [{row.weights}]" if row.weights else ""
            lines.append(f"    {row.label:40s} {figs}{weights}")
    return "\n".join(lines) + "\n"


PARTIAL_NOTE = "PARTIAL — rows marked * cover only part of the dataset; not final numbers."


def miou_cells(ours: Optional[float], complete: bool, reference: Optional[float],
               reference_format: str) -> tuple[str, str, str]:
    """Markdown cells (ours, reference, Δ) of a results table: '–' for a missing number, '*' on a
    row that covers only part of the data."""
    ours_cell = "–" if ours is None else f"{ours:.2f}" + ("" if complete else "*")
    reference_cell = "–" if reference is None else format(reference, reference_format)
    delta = "" if ours is None or reference is None else f"{ours - reference:+.2f}"
    return ours_cell, reference_cell, delta


def partial_footnote(rows: list[dict], images_total: int) -> list[str]:
    """The footnote of a table with partial rows: how many images they cover."""
    if all(r["complete"] for r in rows):
        return []
    return ["", f"* evaluated on {min(r['images'] for r in rows)}–{max(r['images'] for r in rows)} "
                f"of {images_total} images"]


def format_table(table: PaperTable, dataset: str, images_total: int, rows: list[dict],
                 texts_used: str = "") -> str:
    """Markdown: our mIoU per row beside the paper's, marking rows that cover part of the data."""
    complete = all(r["complete"] for r in rows)
    lines = [f"{table.heading}: {table.title} — {dataset}", ""]
    if table.note:
        lines += [table.note, ""]
    if texts_used:
        lines += [f"Auxiliary texts: {texts_used}.", ""]
    if not complete:
        lines += [PARTIAL_NOTE, ""]
    lines += ["| setting | mIoU (ours) | paper | Δ |", "|---|---:|---:|---:|"]
    for r in rows:
        ours, paper, delta = miou_cells(r["ours"], r["complete"], r["paper"], ".1f")
        lines.append(f"| {r['row']} | {ours} | {paper} | {delta} |")
    lines += partial_footnote(rows, images_total)
    lines += settings_lines([{**r, "label": r["row"]} for r in rows])
    return "\n".join(lines) + "\n"
