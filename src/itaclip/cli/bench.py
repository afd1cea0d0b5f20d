"""``itaclip bench``: speed and memory of the engine per input size, mode and device.

For each *input* (an image of a benchmark's typical size, run with that benchmark's preset) and
each *mode* (precision, stride, batch size) it segments one image and reports seconds per image,
images/s, the time spent in the ViT encoder, the encoder's FLOPs (``DenseEncoder.flops``) and its
achieved GFLOP/s, peak memory, and the label agreement with the fp32 mode on the same image. It
also times the text side: the first encoding of the VOC vocabulary (no cache), a second run
served by the on-disk text cache, and the VOC vocabulary plus one class right after the first
encoding (text features are cached per text: only the new class's texts are encoded). The work is done by
:mod:`itaclip.benchmark`; this module parses
the flags.

Without ``--weights`` it uses a randomly initialised model with ViT-B/16's shapes (saved once to
``--model-cache``): speed does not depend on the weights' values, so no download is needed. Label
agreement on random weights says how much a mode perturbs the similarity maps, not how it changes
mIoU with the real model.
"""

from __future__ import annotations

import argparse
from typing import Optional

from ..benchmark.inputs import DEFAULT_MODEL_CACHE, SCENARIOS
from ..engine.errors import ItaclipError
from .options import add_engine_arguments, add_model_arguments, config_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", default="voc,coco_stuff,cityscapes", metavar="NAMES",
                        help=f"comma-separated input sizes from {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--modes", metavar="MODES",
                        help="comma-separated modes: fp32, fp16, bf16, int8, strideN, batchN, a method (naclip: "
                             "its last block in the input's ITACLIP setting), METHOD+authors (its authors' preset) "
                             "or '+'-joined (bf16+stride56); default CPU: fp32,stride56,stride112,bf16,int8; "
                             "GPU: fp32,stride56,stride112,fp16,bf16")
    parser.add_argument("--size", metavar="HxW", help="original image size for every input (e.g. 48x64)")
    parser.add_argument("--image", metavar="PATH",
                        help="a photo to resize to each input's size (default: a synthetic picture)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="timed images per input and mode")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the one-window warm-up run of each mode")
    parser.add_argument("--no-text", dest="text", action="store_false", help="skip the text-encoding benchmark")
    parser.add_argument("--startup-runs", type=int, default=3, metavar="N",
                        help="fresh processes timed from start to a loaded segmenter, each beside one "
                             "importing torch alone and one importing torch with the libraries the weights "
                             "needed (medians; default: %(default)s; 0: skip)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads (default: torch's)")
    parser.add_argument("--model-cache", default=str(DEFAULT_MODEL_CACHE), metavar="PATH",
                        help="where the random ViT-B/16-shaped checkpoint is saved once (default: %(default)s)")
    parser.add_argument("--text-cache", metavar="DIR",
                        help="text-feature cache for the image runs (default: itaclip's cache folder)")
    parser.add_argument("--bare", action="store_true",
                        help="also time each mode's ViT passes through CLIP's own vision tower, one at a time in "
                             "plain PyTorch, and report each mode against them")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report (Markdown) to FILE")
    parser.add_argument("--json", metavar="FILE", help="also write the raw records (JSON) to FILE")
    add_model_arguments(parser)
    parser.set_defaults(weights=None)
    for action in parser._actions:  # say what the bench does without --weights
        if action.dest == "weights":
            action.help = "a CLIP name or checkpoint (default: random weights with ViT-B/16's shapes)"
    add_engine_arguments(parser)


def _parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    try:
        h, w = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ItaclipError(f"--size must be HxW, e.g. 375x500, got {text!r}") from None
    if h < 1 or w < 1:
        raise ItaclipError(f"--size must be positive, got {text!r}")
    return h, w


def run(args: argparse.Namespace) -> int:
    from ..benchmark.inputs import parse_modes
    from ..benchmark.runner import BenchRequest, run_bench

    request = BenchRequest(
        weights=args.weights,
        device=args.device,
        overrides=config_overrides(args),
        inputs=[n.strip() for n in args.inputs.split(",") if n.strip()],
        modes=parse_modes(args.modes) if args.modes else None,
        size=_parse_size(args.size),
        image=args.image,
        repeat=args.repeat,
        warmup=args.warmup,
        text=args.text,
        startup_runs=args.startup_runs,
        threads=args.threads,
        model_cache=args.model_cache,
        text_cache=args.text_cache,
        json_path=args.json,
        bare=args.bare,
    )
    report = run_bench(request)
    print(report.markdown)
    report.save(markdown_path=args.markdown)
    return 0
