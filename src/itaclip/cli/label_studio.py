"""``itaclip label-studio``: serve pre-annotations to Label Studio (its ML backend API).

Label Studio sends tasks to ``/predict`` and gets one brush mask per class present back, the same
label map ``itaclip segment`` writes with the same options. Stops cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .options import (
    add_engine_arguments,
    add_model_arguments,
    add_region_arguments,
    add_vocabulary_arguments,
    config_and_vocabulary,
    region_plan,
    resolved_weights,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_vocabulary_arguments(parser, required=False)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s; 0.0.0.0 to be reachable from other "
                             "machines or a Label Studio container)")
    server.add_argument("--port", type=int, default=9090, help="port (default: %(default)s; 0 picks a free one)")
    server.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="time to fetch one task image (default: %(default)s)")
    add_model_arguments(parser, default_preset="default")
    add_region_arguments(parser, folders=False)  # task images come by URL: their maps are generated
    add_engine_arguments(parser)


def _say(message: str) -> None:
    print(f"itaclip label-studio: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..engine.errors import ItaclipError

    # Everything a user can get wrong is checked before the model loads (as `segment` does).
    config, vocabulary = config_and_vocabulary(args)
    regions = region_plan(args, [config.method])
    if not 0 <= args.port < 65536:
        raise ItaclipError(f"--port must be in 0..65535, got {args.port}")
    try:
        from ..integrations.label_studio_server import serve
    except ImportError as exc:
        raise ItaclipError(f"the Label Studio backend needs the labelstudio extra ({exc}): "
                           "pip install 'itaclip[labelstudio]'") from None
    from .. import __version__
    from ..engine.predictor import Segmenter
    from ..integrations.label_studio import LabelStudioPredictor

    # Our per-request lines and the server's access log; other libraries only warn.
    logging.basicConfig(level=logging.WARNING, format="itaclip label-studio: %(message)s", stream=sys.stderr)
    for name in ("itaclip", "werkzeug"):
        logging.getLogger(name).setLevel(logging.INFO)
    segmenter = Segmenter(weights=resolved_weights(args, config.method), preset=args.preset, device=args.device,
                          config=config)
    if regions is not None:  # generated once per image, cached on disk: a task sent again costs nothing
        segmenter.region_source = regions.build(args.device)
        _say(segmenter.region_source.description)
    predictor = LabelStudioPredictor(segmenter, vocabulary, model_version=f"itaclip-{__version__}",
                                     timeout=args.timeout)
    _say(f"text features of {vocabulary.num_classes} classes: {segmenter.text_source}")
    try:
        serve(predictor, args.host, args.port,
              ready=lambda url: _say(f"serving on {url} (add it in Label Studio: Settings → Model; "
                                     "SIGTERM or Ctrl-C stops)"))
    except OSError as exc:
        raise ItaclipError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    _say("stopped")
    return 0
