"""``itaclip segment``: label images or whole folders with any vocabulary.

For each image STEM it writes ``DIR/STEM.png`` (class index per pixel, original size),
``DIR/STEM_overlay.png`` (colour overlay with a legend) and, on request, ``DIR/STEM.npz`` and
exports (:mod:`itaclip.outputs.writer`), plus ``DIR/itaclip-run.json``, the settings that made the
folder. Images already done with the same settings are skipped (resume); other settings need
``--overwrite``; one bad image never loses the others' results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import (
    add_engine_arguments,
    add_model_arguments,
    add_vocabulary_arguments,
    config_overrides,
    max_pixels_arg,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_vocabulary_arguments(parser, required=False)
    parser.add_argument("--save-probs", action="store_true",
                        help="also write STEM.npz with per-class probabilities (the map the labels are the argmax of)")
    parser.add_argument("--export", action="append", default=[], metavar="FORMAT",
                        help="also write coco (RLE JSON), labelstudio (brush pre-annotations) or masks (PNG per class); repeatable")
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders of folder inputs")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo images whose outputs already exist (needed when the settings changed)")
    parser.add_argument("--max-pixels", type=max_pixels_arg, default=None, metavar="N",
                        help="refuse image files whose header claims more pixels, before decoding them "
                             "(default: $ITACLIP_MAX_PIXELS or 100e6)")
    add_model_arguments(parser, default_preset="default")
    add_engine_arguments(parser)


def _say(message: str) -> None:
    print(f"itaclip segment: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..config import build_config
    from ..files import check_output_folder
    from ..images import pixel_limit
    from ..outputs.folder import collect_jobs, pending, refuse_overwriting_inputs, segment_jobs
    from ..outputs.writer import OutputOptions, check_manifest, run_manifest, write_manifest
    from ..settings import prediction_settings
    from ..vocabulary import resolve_vocabulary

    # Everything a user can get wrong is checked before the model loads.
    config = build_config(args.preset, **config_overrides(args))
    vocabulary = resolve_vocabulary(args.classes, preset=args.preset, background=args.background,
                                    aux_texts=args.aux_texts)
    options = OutputOptions(overlay=True, save_probs=args.save_probs, exports=tuple(args.export))
    out_dir = Path(args.out)
    max_pixels = args.max_pixels or pixel_limit()
    jobs, errors = collect_jobs(args.images, out_dir, args.recursive)
    refuse_overwriting_inputs(jobs, options)
    for message in errors:
        _say(f"error: {message}")
    manifest = run_manifest(prediction_settings(config, vocabulary, args.weights), options)
    check_manifest(out_dir, manifest, args.overwrite)
    todo = pending(jobs, options, args.overwrite)
    if todo:
        check_output_folder(out_dir)  # a file, a read-only folder or a full disk: say so before computing
    skipped = len(jobs) - len(todo)
    if skipped:
        _say(f"{skipped} image(s) already done in {out_dir} with the same settings (use --overwrite to redo)")
    if not todo:
        return 1 if errors else 0

    from ..predictor import Segmenter

    segmenter = Segmenter(weights=args.weights, preset=args.preset, device=args.device, config=config)
    segmenter.set_vocabulary(vocabulary)
    _say(f"text features of {vocabulary.num_classes} classes: {segmenter.text_source}")
    write_manifest(out_dir, manifest)
    summary = segment_jobs(segmenter, todo, options, max_pixels=max_pixels)
    summary.skipped, summary.failed = skipped, summary.failed + len(errors)
    _say(summary.line(out_dir))
    return 1 if summary.failed else 0
