"""``itaclip presets``: list the presets, or print one preset's resolved settings and vocabulary."""

from __future__ import annotations

import argparse
import dataclasses
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="PRESET", help="a preset to print in full (default: list all)")
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def describe(name: str) -> dict:
    """A preset's resolved settings: every config value and its vocabulary, as plain data."""
    from ..config import build_config, get_preset
    from ..vocabulary import resolve_vocabulary

    preset = get_preset(name)
    info = {"preset": preset.name, "description": preset.description,
            "config": dataclasses.asdict(build_config(preset.name))}
    if preset.classes:
        vocab = resolve_vocabulary(preset=preset)
        info["vocabulary"] = {"list": preset.classes, "classes": vocab.num_classes, "queries": len(vocab.queries),
                              "background_set": list(vocab.classes[0]) if vocab.has_background else None,
                              "aux_texts": preset.aux_texts, "aux_kind": preset.aux_kind}
    return info


def run(args: argparse.Namespace) -> int:
    from ..config import PRESETS, list_presets

    if args.name is None:
        if args.json:
            print(json.dumps({n: PRESETS[n].description for n in list_presets()}, indent=2))
        else:
            width = max(map(len, PRESETS))
            for name in list_presets():
                print(f"{name:<{width}}  {PRESETS[name].description}")
        return 0
    info = describe(args.name)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    print(f"{info['preset']}: {info['description']}")
    for key, value in info["config"].items():
        print(f"  {key:<20} {value}")
    vocab = info.get("vocabulary")
    if vocab:
        bg = f", class 0 = background set of {len(vocab['background_set'])} words" if vocab["background_set"] else ""
        print(f"  {'vocabulary':<20} {vocab['list']}: {vocab['classes']} classes, {vocab['queries']} names{bg}")
        print(f"  {'aux texts':<20} {vocab['aux_texts']} ({vocab['aux_kind']}s)")
    return 0
