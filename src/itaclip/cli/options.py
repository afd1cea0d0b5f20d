"""Command-line flags shared by ``segment``, ``eval``, ``bench`` and ``demo``: each maps onto a
:class:`itaclip.SegmenterConfig` field, so the CLI and the Python API cannot drift apart."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Optional

from ..engine.config import DEFAULT_WEIGHTS, SegmenterConfig
from ..engine.methods import list_methods, list_presets


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


def max_pixels_arg(text: str) -> int:
    """``--max-pixels``: a finite number of pixels ≥ 1 (``100e6``); argparse reports a bad one."""
    from ..engine.errors import ItaclipError
    from ..engine.images import parse_max_pixels

    try:
        return parse_max_pixels(text, "a pixel limit")
    except ItaclipError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _float_or_none(text: str):
    """A number, or 'none' for an explicit "no value" (e.g. ``--area-thd none``)."""
    from ..engine.config import NONE

    if text.strip().lower() == "none":
        return NONE
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _float_pair(text: str):
    """Two numbers ``TAU,LAMBDA`` (``2.0,0.3``), or 'none' for an explicit "no value"."""
    from ..engine.config import NONE

    if text.strip().lower() == "none":
        return NONE
    try:
        first, second = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two comma-separated numbers (e.g. 2.0,0.3) or 'none', "
                                         f"got {text!r}") from None
    return first, second


_PARSERS: dict[str, Callable[[str], Any]] = {
    "float": float, "int": int, "str": str, "int_list": _int_list, "name_list": _name_list,
    "float_or_none": _float_or_none, "float_pair": _float_pair,
}


def _flag_fields() -> list[tuple[dataclasses.Field, dict]]:
    """(field, CLI description) of every SegmenterConfig field that has a flag."""
    return [(f, f.metadata["cli"]) for f in dataclasses.fields(SegmenterConfig) if "cli" in f.metadata]


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`SegmenterConfig` field that declares one; unset flags keep the preset's value."""
    group = parser.add_argument_group("method options (override the preset)")
    for f, cli in _flag_fields():
        flag = cli["flag"] or "--" + f.name.replace("_", "-")
        if cli["kind"] == "off":
            group.add_argument(flag, dest=f.name, action="store_false", default=None, help=cli["help"])
            continue
        if cli["kind"] == "switch":  # --tlp / --no-tlp
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=cli["help"])
            continue
        kind = cli["kind"] or type(f.default).__name__
        if kind == "method":  # the registry's names, listed in the help too
            methods = list_methods()
            group.add_argument(flag, dest=f.name, choices=methods, help=cli["help"].format(methods=", ".join(methods)))
            continue
        group.add_argument(flag, dest=f.name, type=None if cli["choices"] else _PARSERS[kind],
                           choices=cli["choices"], metavar=cli["metavar"], help=cli["help"])


def add_vocabulary_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--classes, --background, --aux-texts."""
    group = parser.add_argument_group("vocabulary")
    group.add_argument("--classes", required=required, metavar="FILE_OR_LIST",
                       help="classes to segment: 'cat, dog, sky', a class file (one class per line, names "
                            "separated by ', ') — all foreground; under voc21/context60/coco_object the preset's "
                            "background set is added as class 0 — or a built-in list (voc21, voc20, context60, "
                            "context59, coco_object, coco_stuff, cityscapes, ade20k) exactly as its preset uses it"
                            + ("" if required else "; default: the preset's own list"))
    group.add_argument("--background", metavar="WORDS",
                       help="words of class 0, the background set, e.g. 'sky, wall, floor' (replaces a preset's set)")
    group.add_argument("--aux-texts", metavar="FILE",
                       help="auxiliary texts, one 'name >=text' line per non-background class; 'authors': "
                            "the paper's own LLaMA-3 texts for voc21, context60, coco_object, coco_stuff or "
                            "cityscapes (downloaded once); 'none': no texts")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """SegmenterConfig overrides from parsed flags (flags not given are left out)."""
    return {f.name: getattr(args, f.name) for f, _ in _flag_fields() if getattr(args, f.name, None) is not None}


def config_and_vocabulary(args: argparse.Namespace):
    """The config and vocabulary the flags ask for, resolved before any model loads (so a bad option
    or class list fails at once): the preset is the method's own (``--method naclip --preset voc21``
    is NACLIP's VOC21 setting and class list)."""
    from ..engine.methods import build_config, get_preset
    from ..engine.vocabulary import resolve_vocabulary

    config = build_config(args.preset, **config_overrides(args))
    preset = get_preset(args.preset, config.method) if args.preset else None
    vocabulary = resolve_vocabulary(args.classes, preset=preset, background=args.background,
                                    aux_texts=args.aux_texts)
    return config, vocabulary
