"""``itaclip segment``: label images, whole folders or lists of images with any vocabulary.

For each image it writes, in the output folder's mirror of the input tree, ``STEM.png`` (class
index per pixel, original size, a palette PNG), ``STEM_overlay.png`` (colour overlay with a legend;
not with ``--no-overlay``) and, on request, ``STEM.npz`` and exports (:mod:`itaclip.outputs.writer`),
plus ``itaclip-run.json``, the settings that made the folder, and the run's dataset-level exports
(:mod:`itaclip.outputs.dataset`). Images already done with the same settings are skipped (resume);
other settings need ``--overwrite``; one bad image never loses the others' results. Under
``torchrun`` the images are split between the processes (:mod:`itaclip.outputs.folder`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import (
    add_engine_arguments,
    add_model_arguments,
    add_vocabulary_arguments,
    config_and_vocabulary,
    max_pixels_arg,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--files-from", metavar="LIST",
                        help="also segment the images listed in LIST, one path per line ('-': standard input); "
                             "relative paths are relative to the current folder")
    parser.add_argument("--input-root", metavar="DIR",
                        help="outputs mirror the inputs' paths relative to DIR (default: the folder given, "
                             "else the deepest folder holding every input)")
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders of folder inputs")
    add_vocabulary_arguments(parser, required=False)
    group = parser.add_argument_group("outputs")
    group.add_argument("--no-overlay", action="store_true", help="do not write STEM_overlay.png")
    group.add_argument("--save-probs", action="store_true",
                       help="also write STEM.npz with per-class probabilities; the labels are their argmax, then "
                            "(unless --no-closing) a 3x3 closing that relabels pixels along class borders")
    group.add_argument("--probs-format", metavar="FORMAT",
                       help="how STEM.npz stores them (implies --save-probs): float32 (default), float16, or "
                            "topk:K (the K most probable classes per pixel, float16)")
    group.add_argument("--export", action="append", default=[], metavar="FORMAT",
                       help="also write coco (per-image RLE JSON and OUT/coco.json), labelstudio (per-image "
                            "tasks, OUT/tasks.json and OUT/labelstudio_config.xml), cvat (OUT/cvat/, CVAT's "
                            "Segmentation mask 1.1) or masks (PNG per class); repeatable")
    group.add_argument("--image-url-prefix", default="", metavar="PREFIX",
                       help="how OUT/tasks.json points Label Studio at the images: PREFIX + path relative to the "
                            "input root, e.g. '/data/local-files/?d=photos/' or 'https://host/photos/'")
    group.add_argument("--overwrite", action="store_true",
                       help="redo images whose outputs already exist (needed when the settings changed)")
    group.add_argument("--max-pixels", type=max_pixels_arg, default=None, metavar="N",
                       help="refuse image files whose header claims more pixels, before decoding them "
                            "(default: $ITACLIP_MAX_PIXELS or 100e6)")
    add_model_arguments(parser, default_preset="default")
    add_engine_arguments(parser)


def _say(message: str) -> None:
    print(f"itaclip segment: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..engine.images import pixel_limit
    from ..engine.settings import prediction_settings
    from ..evaluation.distributed import dist_env
    from ..outputs.folder import FolderRun, run_folder
    from ..outputs.writer import OutputOptions, run_manifest

    # Everything a user can get wrong is checked before the model loads.
    config, vocabulary = config_and_vocabulary(args)
    options = OutputOptions(overlay=not args.no_overlay, save_probs=args.save_probs or bool(args.probs_format),
                            exports=tuple(args.export), probs_format=args.probs_format or "float32")
    folder_run = FolderRun(
        inputs=args.images, out_dir=Path(args.out), options=options,
        manifest=run_manifest(prediction_settings(config, vocabulary, args.weights), options, args.image_url_prefix),
        class_names=vocabulary.names, files_from=args.files_from, input_root=args.input_root,
        recursive=args.recursive, overwrite=args.overwrite, image_url_prefix=args.image_url_prefix,
        max_pixels=args.max_pixels or pixel_limit())

    def load_segmenter(device: str):
        from ..engine.predictor import Segmenter

        segmenter = Segmenter(weights=args.weights, preset=args.preset, device=device, config=config)
        segmenter.set_vocabulary(vocabulary)
        return segmenter  # run_folder says where its text features came from

    summary = run_folder(folder_run, load_segmenter, device=args.device, log=_say)
    if dist_env().is_main:  # one summary for all processes
        _say(summary.line(folder_run.out_dir))
    return 1 if summary.failed else 0
