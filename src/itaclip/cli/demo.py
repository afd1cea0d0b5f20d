"""``itaclip demo``: serve the browser demo on this machine (Gradio; ``pip install 'itaclip[demo]'``).

The model loads once, before the page is served; the method flags (``--short-side``, ``--pamr-steps``,
…) apply to every request, and the page's speed mode sets the stride unless ``--stride`` is given.
"""

from __future__ import annotations

import argparse
import sys

from .options import add_engine_arguments, add_model_arguments, config_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 for the LAN)")
    server.add_argument("--port", type=int, default=7860,
                        help="port (default: %(default)s; 0 picks a free one)")
    server.add_argument("--examples", nargs="*", default=[], metavar="PATH",
                        help="example images or folders offered on the page (default: sample photos that come "
                             "with installed packages)")
    server.add_argument("--max-pixels", type=float, default=None, metavar="N",
                        help="downscale larger images to N pixels before segmenting (default: 4e6)")
    add_model_arguments(parser, default_preset="default")
    add_engine_arguments(parser)


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def run(args: argparse.Namespace) -> int:
    from ..demo import DEFAULT_MAX_PIXELS, DemoEngine, _require_gradio, find_examples, launch

    _require_gradio()  # fail before loading the model
    examples = find_examples(args.examples)
    print("itaclip demo: loading the model ...", file=sys.stderr, flush=True)
    engine = DemoEngine(weights=args.weights, device=args.device, preset=args.preset,
                        overrides=config_overrides(args),
                        max_pixels=int(args.max_pixels) if args.max_pixels else DEFAULT_MAX_PIXELS)
    port = args.port or _free_port(args.host)
    print(f"itaclip demo: serving on http://{args.host}:{port} (Ctrl+C to stop)", file=sys.stderr, flush=True)
    launch(engine, host=args.host, port=port, examples=examples, block=True)
    return 0
