"""``itaclip presets``: list the presets, or print one preset's resolved settings and vocabulary."""

from __future__ import annotations

import argparse
import dataclasses
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="PRESET", help="a preset to print in full (default: list all)")
    from ..engine.methods import DEFAULT_METHOD, list_methods

    parser.add_argument("--method", default=DEFAULT_METHOD, metavar="METHOD",
                        help=f"whose presets: {', '.join(list_methods())} (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def describe(name: str, method: str = "itaclip") -> dict:
    """A method's preset's resolved settings: every config value and its vocabulary, as plain data
    (fields another method does not use are left out)."""
    from ..engine.methods import build_config, get_method, get_preset, unused_fields
    from ..engine.vocabulary import resolve_vocabulary

    preset = get_preset(name, method)
    config = build_config(preset.name, method=method)
    record = get_method(method)
    info = {"preset": preset.name, "description": preset.description,
            "method": {"name": record.name, "title": record.title, "paper": record.paper, "changes": record.changes},
            "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in unused_fields(config)}}
    if record.default_weights:  # only methods whose authors use another CLIP than the library's default
        info["weights"] = record.default_weights
    if preset.classes:
        vocab = resolve_vocabulary(preset=preset)
        info["vocabulary"] = {"list": preset.classes, "classes": vocab.num_classes, "queries": len(vocab.queries),
                              "background_set": list(vocab.classes[0]) if vocab.has_background else None,
                              "aux_texts": preset.aux_texts, "aux_kind": preset.aux_kind}
    return info


def run(args: argparse.Namespace) -> int:
    from ..engine.methods import get_preset, list_presets

    if args.name is None:
        names = list_presets(args.method)
        if args.json:
            print(json.dumps({n: get_preset(n, args.method).description for n in names}, indent=2))
        else:
            width = max(map(len, names))
            for name in names:
                print(f"{name:<{width}}  {get_preset(name, args.method).description}")
        return 0
    info = describe(args.name, args.method)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    method = info["method"]
    print(f"{info['preset']}: {info['description']}")
    print(f"  {'method':<20} {method['name']} ({method['title']}: {method['changes']})")
    if "weights" in info:
        print(f"  {'weights':<20} {info['weights']} (when --weights is not given)")
    for key, value in info["config"].items():
        if key != "method":  # printed above, with what it changes
            print(f"  {key:<20} {value}")
    vocab = info.get("vocabulary")
    if vocab:
        bg = f", class 0 = background set of {len(vocab['background_set'])} words" if vocab["background_set"] else ""
        print(f"  {'vocabulary':<20} {vocab['list']}: {vocab['classes']} classes, {vocab['queries']} names{bg}")
        if vocab["aux_texts"]:
            print(f"  {'aux texts':<20} {vocab['aux_texts']} ({vocab['aux_kind']}s)")
    return 0
