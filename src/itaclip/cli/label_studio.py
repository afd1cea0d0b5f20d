"""``itaclip label-studio``: serve pre-annotations to Label Studio (its ML backend API).

Label Studio sends tasks to ``/predict`` and gets one brush mask per class present back, the same
label map ``itaclip segment`` writes with the same options. Stops cleanly on SIGTERM or Ctrl-C.
Safe by default: loopback only, images only from Label Studio (``LABEL_STUDIO_URL``, the only
place its token goes) and the hosts named with ``--allow-hosts``, every body and download bounded.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .options import (
    _name_list,
    add_engine_arguments,
    add_model_arguments,
    add_vocabulary_arguments,
    config_and_vocabulary,
    max_pixels_arg,
)

#: The environment variables Label Studio's own ML backends read for their basic-auth credentials.
AUTH_USER_ENV, AUTH_PASSWORD_ENV = "BASIC_AUTH_USER", "BASIC_AUTH_PASS"


def _megabytes(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of megabytes, got {text!r}")
    return int(value * (1 << 20))


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_vocabulary_arguments(parser, required=False)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s; 0.0.0.0 to be reachable from other "
                             "machines or a Label Studio container)")
    server.add_argument("--port", type=int, default=9090, help="port (default: %(default)s; 0 picks a free one)")
    server.add_argument("--timeout", type=_positive(float), default=30.0, metavar="SECONDS",
                        help="the most time one task image's whole download may take (default: %(default)s)")
    server.add_argument("--allow-hosts", type=_name_list, action="append", default=[], metavar="HOST[,HOST...]",
                        help="hosts task images may be fetched from besides Label Studio's (LABEL_STUDIO_URL): "
                             "HOST (its scheme's default port) or HOST:PORT, or * for any host; repeatable "
                             "(default: Label Studio's host and port only)")
    server.add_argument("--auth-user", default=None, metavar="USER",
                        help=f"require HTTP basic auth with this user (default: ${AUTH_USER_ENV}); set the same "
                             "user and password in Label Studio's model connection")
    server.add_argument("--auth-password", default=None, metavar="PASSWORD",
                        help=f"the basic-auth password (default: ${AUTH_PASSWORD_ENV}, which keeps it out of the "
                             "process list)")
    server.add_argument("--max-request-mb", type=_megabytes, default=16 << 20, metavar="MB",
                        help="the largest request body accepted (default: 16)")
    server.add_argument("--max-image-mb", type=_megabytes, default=50 << 20, metavar="MB",
                        help="the largest task image downloaded (default: 50)")
    server.add_argument("--max-pixels", type=max_pixels_arg, default=None, metavar="N",
                        help="refuse task images whose header claims more pixels, before decoding them "
                             "(default: $ITACLIP_MAX_PIXELS or 100e6)")
    server.add_argument("--max-new-labels", type=_positive(int), default=256, metavar="N",
                        help="labels outside the class file the backend takes over its life (each costs a text "
                             "encoding and a cache entry; default: %(default)s)")
    add_model_arguments(parser, default_preset="default")
    add_engine_arguments(parser)


def _say(message: str) -> None:
    print(f"itaclip label-studio: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..engine.errors import ItaclipError

    # Everything a user can get wrong is checked before the model loads (as `segment` does).
    config, vocabulary = config_and_vocabulary(args)
    if not 0 <= args.port < 65536:
        raise ItaclipError(f"--port must be in 0..65535, got {args.port}")
    user = args.auth_user if args.auth_user is not None else os.environ.get(AUTH_USER_ENV, "")
    password = args.auth_password if args.auth_password is not None else os.environ.get(AUTH_PASSWORD_ENV, "")
    if bool(user) != bool(password):
        raise ItaclipError(f"basic auth needs both a user and a password (--auth-user/--auth-password or "
                           f"${AUTH_USER_ENV}/${AUTH_PASSWORD_ENV}), got only the {'user' if user else 'password'}")
    try:
        from ..integrations.label_studio_server import serve
    except ImportError as exc:
        raise ItaclipError(f"the Label Studio backend needs the labelstudio extra ({exc}): "
                           "pip install 'itaclip[labelstudio]'") from None
    from .. import __version__
    from ..engine.predictor import Segmenter
    from ..integrations.label_studio import ImageFetcher, LabelStudioPredictor

    fetcher = ImageFetcher.from_environment([host for group in args.allow_hosts for host in group],
                                            max_bytes=args.max_image_mb, timeout=args.timeout,
                                            max_pixels=args.max_pixels)

    # Our per-request lines and the server's access log; other libraries only warn.
    logging.basicConfig(level=logging.WARNING, format="itaclip label-studio: %(message)s", stream=sys.stderr)
    for name in ("itaclip", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.INFO)
    segmenter = Segmenter(weights=args.weights, preset=args.preset, device=args.device, config=config)
    predictor = LabelStudioPredictor(segmenter, vocabulary, model_version=f"itaclip-{__version__}", fetcher=fetcher,
                                     max_new_labels=args.max_new_labels)
    _say(f"text features of {vocabulary.num_classes} classes: {segmenter.text_source}")
    _say(f"task images from {fetcher.describe()}")
    if not user and args.host not in ("127.0.0.1", "localhost", "::1"):
        _say(f"warning: listening on {args.host} without basic auth: anyone who reaches this port can use the "
             f"model (set --auth-user and ${AUTH_PASSWORD_ENV})")
    try:
        serve(predictor, args.host, args.port, auth=(user, password) if user else None,
              max_body_bytes=args.max_request_mb,
              ready=lambda url: _say(f"serving on {url} (add it in Label Studio: Settings → Model; "
                                     "SIGTERM or Ctrl-C stops)"))
    except OSError as exc:
        raise ItaclipError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    _say("stopped")
    return 0
