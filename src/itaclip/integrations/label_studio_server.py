"""The Label Studio ML backend: the HTTP API Label Studio speaks to a model, around one predictor.

Served with Starlette and uvicorn (the ``labelstudio`` extra; both also come with Gradio for the
demo). Starlette rather than FastAPI: the protocol is a handful of small JSON routes whose bodies
are checked here by hand to give Label Studio one-line errors, so FastAPI's models, validation
errors and API pages would add nothing.

Routes (those Label Studio 1.23 calls, and the older ``label-studio-ml`` server's, kept):

* ``GET /health`` (and ``GET /``): ``{"status": "UP", "model_version": …}``;
* ``POST /setup``: checks the project's labelling config (``schema``) and answers
  ``{"model_version": …}``. It stores nothing, so no request can change what another project
  gets; ``hostname`` and ``access_token`` are ignored (images come from the operator's
  ``LABEL_STUDIO_URL`` with the operator's token only);
* ``POST /predict``: ``{"results": [one prediction per task], "model_version": …}`` for the
  labelling config sent with the request (the class file as it is without one);
* ``GET`` or ``POST /versions``: ``{"versions": [model_version]}``;
* ``POST /webhook``: acknowledged and ignored (annotation events are for training);
* ``POST /train``: 501, nothing trains here and nothing is written; ``GET /is_training``:
  ``{"is_training": false}``; ``GET /metrics``: ``{}``.

Every error is ``{"error": one line}`` with a 4xx status (5xx only for a fault of the backend, whose
traceback goes to the operator's log, never into the answer). Bodies are bounded
(``max_body_bytes``), requests running at once too (``max_connections``; one more gets a JSON 503), and
with ``auth`` every request must carry that HTTP basic-auth user and password, as Label Studio sends them
to an ML backend.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import signal
import socket
from typing import Callable, Optional

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..engine.errors import ItaclipError
from .label_studio import LabelStudioPredictor, brush_target

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 << 20
DEFAULT_MAX_CONNECTIONS = 32


class Guard:
    """In front of the app: HTTP basic auth (when ``auth`` is set), a ``Content-Length`` over the
    body limit and a request beyond ``max_requests`` running at once, all refused with a JSON error
    before anything is read. (Starlette's own body limit, inside, stops a body without a length as it
    streams in, and would answer a too-long ``Content-Length`` in plain text; uvicorn's concurrency
    limit answers in plain text too, so :func:`serve` sets it above this one, as a bound on idle
    connections only.)"""

    def __init__(self, app, auth: Optional[tuple[str, str]], max_body_bytes: int,
                 max_requests: int = DEFAULT_MAX_CONNECTIONS):
        self.app = app
        self._auth = (auth[0].encode(), auth[1].encode()) if auth else None
        self._max_body_bytes = max_body_bytes
        self._max_requests = max_requests
        self._running = 0  # requests inside the app; one event loop, so no lock

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            length = headers.get("content-length", "").strip()
            refusal = None
            if self._auth and not self._valid(headers.get("authorization", "")):
                refusal = JSONResponse({"error": "this backend needs its basic-auth user and password"}, 401,
                                       headers={"WWW-Authenticate": 'Basic realm="itaclip", charset="UTF-8"'})
            elif length.isdigit() and int(length) > self._max_body_bytes:
                refusal = _error(413, f"the body is larger than the backend's limit of {self._max_body_bytes} bytes")
            elif self._running >= self._max_requests:
                refusal = JSONResponse({"error": f"busy: {self._max_requests} requests are running; retry later"},
                                       503, headers={"Retry-After": "5", "Connection": "close"})
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        self._running += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._running -= 1

    def _valid(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        same_user = hmac.compare_digest(user, self._auth[0])
        same_password = hmac.compare_digest(password, self._auth[1])
        return bool(sep) and same_user and same_password


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


async def _json_object(request: Request) -> dict:
    """The request's body as a JSON object, or an HTTPException with the reason."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        # also keeps web pages out: a browser sends a cross-site JSON POST only after a preflight,
        # which this server does not answer
        raise HTTPException(415, "send the body as JSON with Content-Type: application/json")
    body = await request.body()  # bounded: the body limit raises 413 past max_body_bytes
    if not body.strip():
        raise HTTPException(400, "the body is empty: send a JSON object")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(400, f"the body must be a JSON object, not {type(data).__name__}")
    return data


def _config(body: dict, key: str) -> Optional[str]:
    config = body.get(key)
    if config is not None and not isinstance(config, str):
        raise HTTPException(400, f"{key} must be the labelling config as a string")
    return config


def create_app(predictor: LabelStudioPredictor, *, auth: Optional[tuple[str, str]] = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_requests: int = DEFAULT_MAX_CONNECTIONS) -> Guard:
    """The ASGI app serving ``predictor``; ``auth``: (user, password) every request must send;
    ``max_requests``: requests running at once (one more is answered 503)."""
    version = predictor.model_version
    warned_hosts: set[str] = set()

    async def health(request: Request):
        return JSONResponse({"status": "UP", "model_version": version})

    async def setup(request: Request):
        body = await _json_object(request)
        hostname = body.get("hostname")
        if isinstance(hostname, str) and hostname and not predictor.fetcher.label_studio_url \
                and len(warned_hosts) < 8 and hostname not in warned_hosts:
            warned_hosts.add(hostname)
            logger.warning("Label Studio says it is at %r, but uploaded images are fetched only from LABEL_STUDIO_URL, "
                           "which is not set: set it (and LABEL_STUDIO_API_KEY) and restart", hostname[:200])
        try:
            predictor.check(brush_target(_config(body, "schema")))
        except ItaclipError as exc:
            raise HTTPException(400, str(exc)) from None
        return JSONResponse({"model_version": version})

    async def predict(request: Request):
        body = await _json_object(request)
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise HTTPException(400, "tasks must be a list of Label Studio tasks")
        params = body.get("params")
        if params is not None and not isinstance(params, dict):
            raise HTTPException(400, "params must be a JSON object")
        try:
            target = brush_target(_config(body, "label_config"))
            results = await run_in_threadpool(predictor.predict, tasks, target)
        except ItaclipError as exc:
            raise HTTPException(400, str(exc)) from None
        return JSONResponse({"results": results, "model_version": version})

    async def versions(request: Request):
        return JSONResponse({"versions": [version]})

    async def webhook(request: Request):
        await _json_object(request)
        return JSONResponse({"status": "ignored: itaclip does not train"})

    async def train(request: Request):
        return _error(501, "itaclip does not train: it pre-annotates with a fixed model (nothing was written)")

    async def is_training(request: Request):
        return JSONResponse({"is_training": False})

    async def metrics(request: Request):
        return JSONResponse({})

    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception):
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal error (the backend's log has the details)")

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/", health, methods=["GET"]),
        Route("/setup", setup, methods=["POST"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/versions", versions, methods=["GET", "POST"]),
        Route("/webhook", webhook, methods=["POST"]),
        Route("/train", train, methods=["POST"]),
        Route("/is_training", is_training, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, max_body_size=max_body_bytes,
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    return Guard(app, auth, max_body_bytes, max_requests)


def serve(predictor: LabelStudioPredictor, host: str, port: int, ready: Callable[[str], None] = print, *,
          auth: Optional[tuple[str, str]] = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
    """Serve until SIGTERM or SIGINT, then return (requests still running after 5 s are dropped).

    Raises OSError when ``host:port`` cannot be bound."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    app = create_app(predictor, auth=auth, max_body_bytes=max_body_bytes, max_requests=max_connections)
    # uvicorn's own limit counts open connections, idle ones included, and answers in plain text: set
    # above the app's JSON limit, it only bounds connections that hold no running request.
    config = uvicorn.Config(app, log_config=None,
                            lifespan="off", limit_concurrency=2 * max_connections + 1, timeout_graceful_shutdown=5,
                            server_header=False, proxy_headers=False)
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT itself and, once stopped, raises the signal again for the
    # handler it found: make that one a no-op, so a stop ends here (exit code 0), not the process.
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        ready(f"http://{f'[{bound_host}]' if family == socket.AF_INET6 else bound_host}:{bound_port}")
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
