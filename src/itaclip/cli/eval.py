"""``itaclip eval``: mIoU on a benchmark dataset, resumable, ``torchrun``-ready, and the paper's
ablation tables from flags alone.

    itaclip eval --dataset voc21 --data-root data/VOCdevkit/VOC2012
    torchrun --standalone --nproc-per-node 4 --no-python itaclip eval --dataset coco_stuff \
        --data-root data/coco_stuff164k
    itaclip eval --paper-table 2 --dataset voc21 --data-root data/VOCdevkit/VOC2012 --stride 56
    itaclip eval --convert-coco-object --data-root data/coco_stuff164k

Results go to ``--out/<dataset>-<settings hash>/`` (``results.json``, ``results.md`` with per-class
IoU, ``samples/`` with one file per image). Re-running the same command resumes; other settings
get another directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import ItaclipError
from .options import add_engine_arguments, add_model_arguments, add_vocabulary_arguments, config_overrides

DEFAULT_OUT = "itaclip-eval"


# ------------------------------------------------------------------------------ paper tables


@dataclass(frozen=True)
class PaperRow:
    label: str
    paper: dict  # dataset → the paper's mIoU
    overrides: dict = field(default_factory=dict)
    weights: Optional[str] = None  # a backbone name (Table 10); None = --weights
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


def _cols(stuff=None, obj=None, voc=None, context=None, **others) -> dict:
    out = {"coco_stuff": stuff, "coco_object": obj, "voc21": voc, "context60": context, **others}
    return {k: v for k, v in out.items() if v is not None}


NO_PAMR = {"pamr_steps": 0}

#: The paper's tables, as flags. Every row runs the dataset's paper preset plus the row's overrides
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


# ------------------------------------------------------------------------------------ arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  itaclip eval --dataset voc21 --data-root data/VOCdevkit/VOC2012\n"
        "  torchrun --standalone --nproc-per-node 4 --no-python itaclip eval --dataset coco_stuff \\\n"
        "      --data-root data/coco_stuff164k --device cuda\n"
        "  itaclip eval --paper-table 7 --dataset context60 --data-root data/VOCdevkit/VOC2010\n"
        "  itaclip eval --convert-coco-object --data-root data/coco_stuff164k\n"
        "datasets: voc21 voc20 context60 context59 coco_stuff coco_object cityscapes ade20k "
        "(layouts: itaclip eval --list-datasets; docs/EVALUATION.md)"
    )
    group = parser.add_argument_group("evaluation")
    group.add_argument(
        "--dataset",
        metavar="NAME",
        help="voc21, voc20, context60, context59, coco_stuff, coco_object, cityscapes or ade20k",
    )
    group.add_argument(
        "--data-root",
        metavar="DIR",
        help="the dataset's folder in MMSegmentation's layout "
        "(e.g. data/VOCdevkit/VOC2012) or a folder above it",
    )
    group.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help="results folder; each setting gets DIR/<dataset>-<hash>/ (default: %(default)s)",
    )
    group.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="evaluate only the first N images (a partial, non-final number)",
    )
    group.add_argument(
        "--restart",
        action="store_true",
        help="discard this setting's stored per-image results and start over",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument(
        "--paper-table",
        metavar="N",
        choices=[*PAPER_TABLES, "list"],
        help="run the rows of paper table N (1-8, 10, 11; 'backbones': OpenAI, LAION, DFN and MetaCLIP "
        "CLIPs; 'list' shows them) and print them beside the paper's figures; the paper's auxiliary texts "
        "are used when they can be had (--aux-texts authors)",
    )
    group.add_argument(
        "--backbone",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="local weights for a Table 10 or 'backbones' row, e.g. ViT-B/32=/ckpt/ViT-B-32.pt or "
        "ViT-B-16:dfn2b=/models/dfn2b-hf (any --weights form)",
    )
    group.add_argument(
        "--convert-coco-object",
        action="store_true",
        help="write COCO-Object label maps (*_instanceTrainIds.png) from COCO-Stuff's under "
        "--data-root, then exit",
    )
    group.add_argument(
        "--nproc", type=int, default=1, metavar="N", help="worker processes for --convert-coco-object"
    )
    group.add_argument(
        "--list-datasets", action="store_true", help="print the datasets and their layouts, then exit"
    )
    add_model_arguments(parser, default_preset=None)
    add_vocabulary_arguments(parser, required=False)
    add_engine_arguments(parser)


# ------------------------------------------------------------------------------------ helpers


def _say(info, message: str) -> None:
    if info.is_main:
        print(message, file=sys.stderr, flush=True)


def dataset_vocabulary(spec, classes=None, background=None, aux_texts=None):
    """The vocabulary for a dataset: its preset's built-in list (or ``classes``), by the rules of
    :func:`itaclip.vocabulary.resolve_vocabulary`; ``"none"`` as ``aux_texts`` drops the texts."""
    from ..vocabulary import resolve_vocabulary

    return resolve_vocabulary(classes, preset=spec.preset, background=background, aux_texts=aux_texts)


def _paper_texts(args, spec) -> tuple:
    """The auxiliary texts a paper-table run uses, and a sentence saying which: what the user gave,
    else the authors' texts for the dataset's list when they can be had (cached or downloadable)."""
    if args.aux_texts is not None or args.classes is not None:
        given = args.aux_texts if args.aux_texts is not None else "the built-in texts of the list given"
        return args.aux_texts, f"as given ({given})"
    from ..auxtexts.authors import texts_for_paper
    from ..config import get_preset

    return texts_for_paper(get_preset(spec.preset).classes)


def _backbones(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ItaclipError(f"--backbone expects NAME=PATH, got {item!r}")
        out[name.strip()] = path.strip()
    return out


def _list_datasets() -> int:
    from ..datasets import DATASETS

    for spec in DATASETS.values():
        print(
            f"{spec.name:12s} {spec.title}\n{'':12s} preset {spec.preset}; layout (MMSegmentation root "
            f"{spec.mmseg_root}): {spec.layout}"
            + (f"\n{'':12s} label 0 is ignored, others shifted down by one" if spec.reduce_zero_label else "")
        )
    return 0


def _list_tables() -> int:
    for table in PAPER_TABLES.values():
        print(f"Table {table.number}: {table.title} — datasets {', '.join(table.datasets)}")
        for row in table.rows:
            figs = ", ".join(f"{d} {v}" for d, v in row.paper.items())
            weights = f"  [{row.weights}]" if row.weights else ""
            print(f"    {row.label:40s} {figs}{weights}")
    return 0


# ------------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> int:
    if args.list_datasets:
        return _list_datasets()
    if args.paper_table == "list":
        return _list_tables()
    if args.convert_coco_object:
        from ..datasets import convert_coco_object

        if not args.data_root:
            raise ItaclipError("--convert-coco-object needs --data-root (the coco_stuff164k folder)")
        count = convert_coco_object(args.data_root, nproc=max(1, args.nproc), progress=not args.no_progress)
        print(
            f"itaclip eval: wrote {count} COCO-Object label maps (*_instanceTrainIds.png) "
            f"under {args.data_root}",
            file=sys.stderr,
        )
        return 0

    from ..datasets import get_dataset_spec, load_dataset
    from ..evaluate import dist_env, init_distributed, resolve_rank_device, shutdown_distributed

    table = PAPER_TABLES.get(args.paper_table) if args.paper_table else None
    if args.dataset is None and table is not None and len(table.datasets) == 1:
        args.dataset = table.datasets[0]
    if not args.dataset:
        raise ItaclipError(
            "--dataset is required (voc21, voc20, context60, context59, coco_stuff, coco_object, "
            "cityscapes, ade20k)"
        )
    if not args.data_root:
        raise ItaclipError("--data-root is required: the dataset's folder (see docs/EVALUATION.md)")
    spec = get_dataset_spec(args.dataset)
    if table is not None and spec.name not in table.datasets:
        raise ItaclipError(f"paper Table {table.number} reports {', '.join(table.datasets)}, not {spec.name}")

    device = resolve_rank_device(args.device, dist_env())
    info = init_distributed(device)
    try:
        dataset = load_dataset(spec.name, args.data_root)
        _say(
            info,
            f"itaclip eval: {spec.name}: {len(dataset)} images in {dataset.root}"
            + (f"; {info.world_size} processes ({info.backend})" if info.distributed else ""),
        )
        if table is not None:
            return _run_table(args, table, spec, dataset, device, info)
        return _run_single(args, spec, dataset, device, info)
    finally:
        shutdown_distributed()


def _make_segmenter(args, spec, weights: str, device: str, **extra):
    from ..predictor import Segmenter

    overrides = {**config_overrides(args), **extra}
    return Segmenter(weights=weights, preset=args.preset or spec.preset, device=device, **overrides)


def _exit_code(result) -> int:
    return 1 if result.skipped else 0


def _run_single(args, spec, dataset, device, info) -> int:
    from ..evaluate import evaluate, summary_line

    segmenter = _make_segmenter(args, spec, args.weights, device)
    segmenter.set_vocabulary(dataset_vocabulary(spec, args.classes, args.background, args.aux_texts))
    result = evaluate(
        dataset,
        segmenter,
        args.out,
        weights=args.weights,
        limit=args.limit,
        info=info,
        progress=not args.no_progress,
        restart=args.restart,
        title=spec.title,
    )
    if info.is_main:
        print(summary_line(result))
        _say(info, f"itaclip eval: results in {result.run_dir}/results.json and results.md")
        if not result.complete:
            _say(info, f"itaclip eval: PARTIAL result, not a final number: {result.note}")
        if result.skipped:
            _say(
                info,
                f"itaclip eval: {len(result.skipped)} unreadable image(s) skipped and listed in results.json",
            )
    return _exit_code(result)


def _run_table(args, table: PaperTable, spec, dataset, device, info) -> int:
    from ..evaluate import evaluate, summary_line
    from ..files import atomic_write_bytes

    backbones = _backbones(args.backbone)
    aux_texts, texts_used = _paper_texts(args, spec)
    _say(info, f"itaclip eval: auxiliary texts: {texts_used}")
    base_vocab = dataset_vocabulary(spec, args.classes, args.background, aux_texts)
    if base_vocab.aux_texts is None and any(
        "alpha" in r.overrides or r.label.startswith("LTG") for r in table.rows
    ):
        _say(info, f"itaclip eval: warning: no auxiliary texts for {spec.name}: LTG rows equal α = 0")
    base = None
    rows_out = []
    skipped_any = False
    for number, row in enumerate(table.rows, 1):
        weights = (
            args.weights if row.weights in (None, "ViT-B/16") else backbones.get(row.weights, row.weights)
        )
        _say(info, f"itaclip eval: Table {table.number} row {number}/{len(table.rows)}: {row.label}")
        if base is None or weights != base[0]:
            base = (weights, _make_segmenter(args, spec, weights, device))
        seg = base[1].with_config(**row.overrides) if row.overrides else base[1]
        vocab = (
            base_vocab
            if row.background is None
            else dataset_vocabulary(spec, args.classes, row.background, aux_texts)
        )
        seg.set_vocabulary(vocab)
        result = evaluate(
            dataset,
            seg,
            args.out,
            weights=weights,
            limit=args.limit,
            info=info,
            progress=not args.no_progress,
            restart=args.restart,
            title=f"{spec.title} — Table {table.number}: {row.label}",
        )
        skipped_any |= bool(result.skipped)
        if info.is_main:
            print(summary_line(result), file=sys.stderr)
        rows_out.append(
            {
                "row": row.label,
                "paper": row.paper.get(spec.name),
                "ours": result.miou,
                "complete": result.complete,
                "images": result.images_evaluated,
                "run_dir": str(result.run_dir),
            }
        )
    if info.is_main:
        text = format_table(table, spec, rows_out, dataset, texts_used)
        print(text)
        out = Path(args.out).expanduser()
        atomic_write_bytes(out / f"paper_table_{table.number}_{spec.name}.md", text.encode())
        atomic_write_bytes(
            out / f"paper_table_{table.number}_{spec.name}.json",
            (
                json.dumps(
                    {"table": table.number, "title": table.title, "dataset": spec.name,
                     "auxiliary_texts": texts_used, "rows": rows_out},
                    indent=2,
                )
                + "\n"
            ).encode(),
        )
        _say(info, f"itaclip eval: table written to {out / f'paper_table_{table.number}_{spec.name}.md'}")
    return 1 if skipped_any else 0


def format_table(table: PaperTable, spec, rows: list[dict], dataset, texts_used: str = "") -> str:
    complete = all(r["complete"] for r in rows)
    heading = f"Paper Table {table.number}" if table.number.isdigit() else f"Comparison '{table.number}'"
    lines = [f"{heading}: {table.title} — {spec.name}", ""]
    if table.note:
        lines += [table.note, ""]
    if texts_used:
        lines += [f"Auxiliary texts: {texts_used}.", ""]
    if not complete:
        lines += ["PARTIAL — rows marked * cover only part of the dataset; not final numbers.", ""]
    lines += ["| setting | mIoU (ours) | paper | Δ |", "|---|---:|---:|---:|"]
    for r in rows:
        ours = "–" if r["ours"] is None else f"{r['ours']:.2f}" + ("" if r["complete"] else "*")
        paper = "–" if r["paper"] is None else f"{r['paper']:.1f}"
        delta = "" if r["ours"] is None or r["paper"] is None else f"{r['ours'] - r['paper']:+.2f}"
        lines.append(f"| {r['row']} | {ours} | {paper} | {delta} |")
    if not complete:
        lines += [
            "",
            f"* evaluated on {min(r['images'] for r in rows)}–{max(r['images'] for r in rows)} "
            f"of {len(dataset)} images",
        ]
    return "\n".join(lines) + "\n"
