"""``itaclip eval``: mIoU on a benchmark dataset, resumable, ``torchrun``-ready, and the paper's
ablation tables from flags alone.

    itaclip eval --dataset voc21 --data-root data/VOCdevkit/VOC2012
    torchrun --standalone --nproc-per-node 4 -m itaclip.cli eval --dataset coco_stuff \
        --data-root data/coco_stuff164k
    itaclip eval --paper-table 2 --dataset voc21 --data-root data/VOCdevkit/VOC2012 --stride 56
    itaclip eval --convert-coco-object --data-root data/coco_stuff164k

Results go to ``--out/<dataset>-<settings hash>/`` (``results.json``, ``results.md`` with per-class
IoU, ``samples/`` with one file per image). Re-running the same command resumes; other settings
get another directory.
"""

from __future__ import annotations

import argparse
import sys

from ..engine.errors import ItaclipError
from ..evaluation.paper_tables import PAPER_TABLES, table_listing
from .options import add_engine_arguments, add_model_arguments, add_vocabulary_arguments, config_overrides

DEFAULT_OUT = "itaclip-eval"


# ------------------------------------------------------------------------------------ arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  itaclip eval --dataset voc21 --data-root data/VOCdevkit/VOC2012\n"
        "  torchrun --standalone --nproc-per-node 4 -m itaclip.cli eval --dataset coco_stuff \\\n"
        "      --data-root data/coco_stuff164k --device cuda\n"
        "  itaclip eval --paper-table 7 --dataset context60 --data-root data/VOCdevkit/VOC2010\n"
        "  itaclip eval --method naclip --dataset voc21 --data-root data/VOCdevkit/VOC2012\n"
        "  itaclip eval --compare clip,sclip,clearclip,naclip,itaclip --dataset voc21 \\\n"
        "      --data-root data/VOCdevkit/VOC2012\n"
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
        "--compare",
        metavar="METHODS",
        help="evaluate several methods ('clip,sclip,naclip' or 'all'), each with its authors' setting for "
        "the dataset, and write one table with the published mIoU beside ours",
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


# ------------------------------------------------------------------------------------ run


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


def _convert_coco_object(args: argparse.Namespace) -> int:
    from ..datasets import convert_coco_object

    if not args.data_root:
        raise ItaclipError("--convert-coco-object needs --data-root (the coco_stuff164k folder)")
    count = convert_coco_object(args.data_root, nproc=max(1, args.nproc), progress=not args.no_progress)
    print(
        f"itaclip eval: wrote {count} COCO-Object label maps (*_instanceTrainIds.png) under {args.data_root}",
        file=sys.stderr,
    )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list_datasets:
        return _list_datasets()
    if args.paper_table == "list":
        print(table_listing(), end="")
        return 0
    if args.convert_coco_object:
        return _convert_coco_object(args)

    from ..datasets import get_dataset_spec, load_dataset
    from ..evaluation.distributed import distributed_session
    from ..evaluation.report import summary_line
    from ..evaluation.runner import EvalRequest, run_comparison, run_evaluation, run_paper_table

    table = PAPER_TABLES[args.paper_table] if args.paper_table else None
    dataset_name = args.dataset or (table.default_dataset if table is not None else None)
    if not dataset_name:
        raise ItaclipError(
            "--dataset is required (voc21, voc20, context60, context59, coco_stuff, coco_object, "
            "cityscapes, ade20k)"
        )
    if not args.data_root:
        raise ItaclipError("--data-root is required: the dataset's folder (see docs/EVALUATION.md)")
    spec = get_dataset_spec(dataset_name)
    if table is not None:
        table.check_dataset(spec.name)
        if args.method not in (None, "itaclip"):
            raise ItaclipError("--paper-table runs ITACLIP's ablations: leave out --method (or use --compare)")
    methods = None
    if args.compare is not None:
        from ..evaluation.comparison import parse_methods

        if args.method is not None or table is not None:
            raise ItaclipError("--compare runs each method with its own setting: leave out --method and --paper-table")
        methods = parse_methods(args.compare)
    backbones = _backbones(args.backbone)

    with distributed_session(args.device) as (info, device):

        def say(message: str) -> None:
            if info.is_main:
                print(message, file=sys.stderr, flush=True)

        dataset = load_dataset(spec.name, args.data_root)
        say(
            f"itaclip eval: {spec.name}: {len(dataset)} images in {dataset.root}"
            + (f"; {info.world_size} processes ({info.backend})" if info.distributed else "")
        )
        request = EvalRequest(
            dataset,
            weights=args.weights,
            out_dir=args.out,
            device=device,
            preset=args.preset,
            overrides=config_overrides(args),
            classes=args.classes,
            background=args.background,
            aux_texts=args.aux_texts,
            limit=args.limit,
            restart=args.restart,
            progress=not args.no_progress,
            info=info,
        )
        if methods is not None:
            path, skipped_any = run_comparison(request, methods)
            if info.is_main:
                print(path.read_text())
                say(f"itaclip eval: table written to {path} and {path.with_suffix('.json')}")
            return 1 if skipped_any else 0
        if table is not None:
            run_table = run_paper_table(request, table, backbones)
            if info.is_main:
                print(run_table.markdown)
                say(f"itaclip eval: table written to {run_table.markdown_path}")
            return 1 if run_table.skipped_any else 0

        result = run_evaluation(request)
        if info.is_main:
            print(summary_line(result))
            say(f"itaclip eval: results in {result.run_dir}/results.json and results.md")
            if not result.complete:
                say(f"itaclip eval: PARTIAL result, not a final number: {result.note}")
            if result.skipped:
                say(f"itaclip eval: {len(result.skipped)} unreadable image(s) skipped and listed in results.json")
        return 1 if result.skipped else 0
