"""Command-line flags shared by ``segment``, ``eval``, ``bench`` and ``demo``: each maps onto a
:class:`itaclip.SegmenterConfig` field, so the CLI and the Python API cannot drift apart."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Callable, Optional, Sequence

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
    group.add_argument("--weights", default=None, metavar="NAME_OR_PATH",
                       help="OpenAI name (ViT-B/16), open_clip NAME:TAG (ViT-B-16:laion2b_s34b_b88k), NAME:PATH, "
                            "hf-hub:ORG/REPO, Hugging Face CLIP id or folder, or a checkpoint file "
                            f"(default: {DEFAULT_WEIGHTS}; corrclip: its authors' MetaCLIP "
                            "ViT-B-16-quickgelu:metaclip_fullcc)")
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


def resolved_weights(args: argparse.Namespace, method: str) -> str:
    """``--weights``, or the method's default CLIP weights when none are named."""
    from ..engine.methods import default_weights

    return args.weights if args.weights is not None else default_weights(method)


#: ``--region-generator`` choices: none, or a generator of :mod:`itaclip.engine.regions`.
REGION_GENERATORS = ("none", "sam2", "sam")
#: The generator methods that read region maps use when neither ``--regions`` nor one is named.
DEFAULT_REGION_GENERATOR = "sam2"


def add_region_arguments(parser: argparse.ArgumentParser, folders: bool = True, by_stem: bool = False) -> None:
    """--regions, --region-generator, --region-weights (methods that read region maps: corrclip)."""
    group = parser.add_argument_group("region maps (corrclip)")
    if folders:
        where = ("DIR/<image stem>.npz or .png (the authors' per-dataset mask folders)" if by_stem else
                 "DIR/<path relative to the input folder>.npz or .png, or DIR/<image stem>.npz/.png")
        group.add_argument("--regions", metavar="DIR",
                           help=f"read each image's region map from {where}: .npz with key instance_mask, or an "
                                "8/16-bit label PNG, at the image's size; the smallest id is 'unsegmented'")
    group.add_argument("--region-generator", choices=REGION_GENERATORS, default=None,
                       help=f"make the region maps with SAM2 or SAM (cached per image) instead (default: "
                            f"{DEFAULT_REGION_GENERATOR} when no --regions; none: never generate)")
    group.add_argument("--region-weights", metavar="NAME_OR_PATH",
                       help="the generator's weights: a Hugging Face id or a transformers folder (default: "
                            "facebook/sam2.1-hiera-large for sam2, facebook/sam-vit-base for sam)")


@dataclasses.dataclass(frozen=True)
class RegionPlan:
    """Where a run's region maps come from, decided from the flags before any model loads."""

    regions_dir: Optional[str]
    generator: Optional[str]
    weights: Optional[str]

    @property
    def identity(self) -> dict:
        """What decides the maps, for run manifests (a folder by its path, generator weights as named
        — a file or folder by its bytes)."""
        if self.regions_dir is not None:
            return {"source": "files", "folder": os.path.realpath(os.path.expanduser(self.regions_dir))}
        from ..engine.regions import DEFAULT_REGION_WEIGHTS
        from ..engine.settings import weights_identity

        weights = self.weights if self.weights is not None else DEFAULT_REGION_WEIGHTS[self.generator]
        return {"source": "generated", "generator": self.generator, "weights": weights_identity(weights)}

    def build(self, device: Optional[str] = None):
        """The :class:`itaclip.engine.regions.RegionSource` (a generator loads its model here)."""
        from ..engine.regions import region_source

        if self.regions_dir is not None:
            return region_source(regions_dir=self.regions_dir)
        return region_source(generator=self.generator, weights=self.weights, device=device)


def region_plan(args: argparse.Namespace, methods: Sequence[str]) -> Optional[RegionPlan]:
    """The region maps of a run of ``methods`` from the flags, or None when none of them reads any;
    one-line errors for flags that do not apply or contradict each other."""
    from ..engine.errors import ItaclipError
    from ..engine.methods import get_method, list_methods

    regions_dir = getattr(args, "regions", None)
    generator, weights = args.region_generator, args.region_weights
    if not any(get_method(m).regions for m in methods):
        if regions_dir is not None or generator is not None or weights is not None:
            readers = ", ".join(m for m in list_methods() if get_method(m).regions)
            raise ItaclipError(f"--regions, --region-generator and --region-weights apply to methods that read "
                               f"region maps ({readers}), not {', '.join(methods)}")
        return None
    if regions_dir is not None:
        if generator not in (None, "none") or weights is not None:
            raise ItaclipError("give either --regions DIR (region files) or --region-generator/--region-weights "
                               "(generated maps), not both")
        from ..engine.regions import RegionFolder

        RegionFolder(regions_dir)  # a missing folder is said now
        return RegionPlan(regions_dir, None, None)
    if generator == "none":
        raise ItaclipError("--region-generator none: corrclip then needs --regions DIR (a region map per image)")
    return RegionPlan(None, generator or DEFAULT_REGION_GENERATOR, weights)


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
