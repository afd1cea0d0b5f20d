"""``itaclip demo``: serve the browser demo on this machine (Gradio; ``pip install 'itaclip[demo]'``).

The model loads once, before the page is served; the method flags (``--short-side``, ``--pamr-steps``,
…) apply to every request, and the page's speed mode sets the stride unless ``--stride`` is given.
"""

from __future__ import annotations

import argparse
import sys

from .options import (
    add_engine_arguments,
    add_model_arguments,
    add_region_arguments,
    config_overrides,
    max_pixels_arg,
    region_plan,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 for the LAN)")
    server.add_argument("--port", type=_port, default=7860,
                        help="port (default: %(default)s; 0 picks a free one)")
    server.add_argument("--examples", nargs="*", default=[], metavar="PATH",
                        help="example images or folders offered on the page (default: sample photos that come "
                             "with installed packages)")
    server.add_argument("--max-pixels", type=max_pixels_arg, default=None, metavar="N",
                        help="downscale larger images to N pixels before segmenting (default: 4e6)")
    add_model_arguments(parser, default_preset="default")
    add_region_arguments(parser, folders=False)  # uploads have no region files: corrclip's maps are generated
    add_engine_arguments(parser)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, got {text!r}")
    return port


def _check_address(host: str, port: int) -> int:
    """The port to serve on (a free one for 0), after checking that ``host`` is an address of this
    machine and the port can be bound: a one-line error now instead of a server trace later."""
    import socket

    from ..engine.errors import ItaclipError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ItaclipError(f"--host {host!r} is not an address or host name this machine can resolve "
                           f"({getattr(exc, 'strerror', None) or exc})") from None
    family, _, _, _, address = infos[0]
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            return sock.getsockname()[1]
    except OSError as exc:
        raise ItaclipError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    from ..demo import DEFAULT_MAX_PIXELS, DemoEngine, _require_gradio, find_examples, launch
    from ..engine.methods import get_method, list_methods

    port = _check_address(args.host, args.port)
    regions = region_plan(args, list_methods())  # the page offers every method; maps made on first use
    _require_gradio()  # fail before loading the model
    examples = find_examples(args.examples)
    overrides = config_overrides(args)
    method = get_method(overrides.get("method") or "itaclip")
    print("itaclip demo: loading the model" + (" and its guide model" if method.guide else "") + " ...",
          file=sys.stderr, flush=True)

    def make_regions():
        print(f"itaclip demo: loading the region generator {regions.generator} ...", file=sys.stderr, flush=True)
        return regions.build(args.device)

    engine = DemoEngine(weights=args.weights, device=args.device, preset=args.preset, overrides=overrides,
                        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
                        regions=make_regions if regions is not None else None)
    if method.regions:  # the page opens on a method that reads region maps: load the generator now
        engine.base.region_source = make_regions()
    print(f"itaclip demo: serving on http://{args.host}:{port} (Ctrl+C to stop)", file=sys.stderr, flush=True)
    launch(engine, host=args.host, port=port, examples=examples, block=True)
    return 0
