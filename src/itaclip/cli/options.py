"""Command-line flags shared by ``segment``, ``eval``, ``bench`` and ``demo``: each maps onto a
:class:`itaclip.SegmenterConfig` field, so the CLI and the Python API cannot drift apart."""

from __future__ import annotations

import argparse
from typing import Any, Optional

from ..config import ATTENTION_TERMS, VIEWS, list_presets
from ..models import DEFAULT_WEIGHTS


def _int_list(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers or 'none', got {text!r}") from None


def _name_list(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_model_arguments(parser: argparse.ArgumentParser, default_preset: Optional[str] = None) -> None:
    """--weights, --device, --preset."""
    group = parser.add_argument_group("model")
    group.add_argument("--weights", default=DEFAULT_WEIGHTS, metavar="NAME_OR_PATH",
                       help="OpenAI name (ViT-B/16), open_clip NAME:TAG (ViT-B-16:laion2b_s34b_b88k), NAME:PATH, "
                            "hf-hub:ORG/REPO, Hugging Face CLIP id or folder, or a checkpoint file "
                            "(default: %(default)s)")
    group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    group.add_argument("--preset", default=default_preset, choices=list_presets(), metavar="NAME",
                       help=f"settings preset: {', '.join(list_presets())} (default: %(default)s)")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of the method; unset flags keep the preset's value."""
    group = parser.add_argument_group("method options (override the preset)")
    add = group.add_argument
    add("--alpha", type=float, help="auxiliary-text weight α in [0, 1]")
    add("--lambda", dest="lam", type=float, metavar="L", help="image-engineering weight λ in [0, 1]")
    add("--logit-scale", type=float, metavar="S", help="softmax temperature multiplier")
    add("--prob-thd", type=float, metavar="P", help="pixels whose top probability is below P become class 0")
    add("--area-thd", type=float, metavar="T", help="zero foreground classes covering ≤ T of the foreground")
    add("--stride", type=int, metavar="N", help="sliding-window stride in pixels (paper: 28)")
    add("--crop", type=int, metavar="N", help="sliding-window size in pixels (224)")
    add("--short-side", type=int, metavar="N", help="resize the short side to N pixels before windowing")
    add("--pamr-steps", type=int, metavar="K", help="PAMR iterations (0 disables refinement)")
    add("--pamr-dilations", type=_int_list, metavar="D1,D2", help="PAMR dilations (8,16)")
    add("--no-image-engineering", dest="image_engineering", action="store_false", default=None,
        help="encode only the crop itself (no greyscale, blur or flip views)")
    add("--views", type=_name_list, metavar="V1,V2",
        help=f"augmented views to use, from {','.join(VIEWS)}")
    add("--attention", metavar="TERMS",
        help=f"'+'-joined self-self attention terms from {', '.join(ATTENTION_TERMS)} (paper: q-q+k-k)")
    add("--keep-ffn", dest="remove_ffn", action="store_false", default=None,
        help="keep the last block's feed-forward network (paper Table 3 ablation)")
    add("--intermediate-layers", type=_int_list, metavar="L1,L2",
        help="1-indexed layers whose attention maps are fused into the last block (7,8,10; 'none')")
    add("--no-closing", dest="closing", action="store_false", default=None,
        help="skip the authors' 3x3 morphological closing of the label map")
    add("--batch-size", type=int, metavar="N", help="crops x views per encoder pass (default: 10 on CPU, 64 on GPU)")
    add("--precision", choices=("fp32", "fp16", "bf16", "int8"),
        help="fp32 (exact, default); fp16/bf16 autocast on GPU; int8 dynamic quantisation on CPU")


def add_vocabulary_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--classes, --background, --aux-texts."""
    group = parser.add_argument_group("vocabulary")
    group.add_argument("--classes", required=required, metavar="FILE_OR_LIST",
                       help="class file (one class per line, names separated by ', '), a built-in list "
                            "(voc21, coco_stuff, ...) or 'cat, dog, sky'"
                            + ("" if required else "; default: the preset's own list"))
    group.add_argument("--background", metavar="WORDS",
                       help="background-set words added as class 0, e.g. 'sky, wall, floor'")
    group.add_argument("--aux-texts", metavar="FILE",
                       help="auxiliary texts, one 'name >=text' line per non-background class; 'authors': "
                            "the paper's own LLaMA-3 texts for voc21, context60, coco_object, coco_stuff or "
                            "cityscapes (downloaded once); 'none': no texts")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """SegmenterConfig overrides from parsed flags (flags not given are left out)."""
    names = ("alpha", "lam", "logit_scale", "prob_thd", "area_thd", "stride", "crop", "short_side",
             "pamr_steps", "pamr_dilations", "image_engineering", "views", "attention", "remove_ffn",
             "intermediate_layers", "closing", "batch_size", "precision")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def build_segmenter(args: argparse.Namespace, **extra):
    """A :class:`itaclip.Segmenter` from --weights/--device/--preset and the method flags."""
    from ..predictor import Segmenter

    overrides = {**config_overrides(args), **extra}
    return Segmenter(weights=args.weights, preset=args.preset, device=args.device, **overrides)
