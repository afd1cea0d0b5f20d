"""The Label Studio ML backend: Label Studio's own ``label-studio-ml`` server around one segmenter.

``label_studio_ml`` (the ``labelstudio`` extra) provides the HTTP API Label Studio speaks
(``/health``, ``/setup``, ``/predict``, ``/webhook``, ``/versions``, ``/metrics``) and the model
base class; :class:`ItaclipBackend` plugs :class:`~itaclip.integrations.label_studio.LabelStudioPredictor`
into it. Three things are adjusted because the package was written for models it builds per
project and trains in worker processes:

* the segmenter is built once and handed to every backend instance the package creates;
* ``/predict`` follows the ``label_config`` sent with the request (and works before ``/setup``);
* ``/webhook`` (annotation events, for training) is answered without starting a worker process:
  nothing here trains, and a stop must leave no orphan processes.
"""

from __future__ import annotations

import signal
import tempfile
import threading
from typing import Callable

from label_studio_ml import api
from label_studio_ml.model import LabelStudioMLBase, LabelStudioMLManager

from .label_studio import LabelStudioPredictor, brush_target


class ItaclipBackend(LabelStudioMLBase):
    """A label-studio-ml model: the project's labelling config + the shared predictor."""

    def __init__(self, predictor: LabelStudioPredictor, **kwargs):
        super().__init__(**kwargs)
        self.predictor = predictor
        self.target = brush_target(self.parsed_label_config)

    def predict(self, tasks, **kwargs):
        return self.predictor.predict(tasks, self.target, hostname=self.hostname, access_token=self.access_token)


def _follow_request_config() -> None:
    """Before ``/predict``: (re)create the backend when there is none yet or the request carries
    another labelling config (the package would use the one of the last ``/setup``)."""
    from flask import request

    if request.method != "POST" or request.path.rstrip("/") != "/predict":
        return
    body = request.get_json(silent=True) or {}
    current = LabelStudioMLManager._current_model
    config = body.get("label_config")
    if current and (not config or config == current.model.label_config):
        return
    LabelStudioMLManager.fetch(
        body.get("project"), config or (current.model.label_config if current else None),
        hostname=current.model.hostname if current else "",
        access_token=current.model.access_token if current else "",
    )


def _webhook():
    from flask import jsonify

    return jsonify({"status": "ignored: itaclip does not train"}), 200


def create_app(predictor: LabelStudioPredictor, model_dir: str):
    """The label-studio-ml Flask app serving ``predictor``; ``model_dir`` is the package's work folder."""
    app = api.init_app(ItaclipBackend, model_dir=model_dir, predictor=predictor)
    if _follow_request_config not in app.before_request_funcs.get(None, []):
        app.before_request(_follow_request_config)
    app.view_functions["webhook"] = _webhook
    return app


def serve(predictor: LabelStudioPredictor, host: str, port: int, ready: Callable[[str], None] = print) -> None:
    """Serve until SIGTERM or SIGINT, then return (in-flight requests are dropped)."""
    from werkzeug.serving import make_server

    with tempfile.TemporaryDirectory(prefix="itaclip-label-studio-") as model_dir:
        app = create_app(predictor, model_dir)
        server = make_server(host, port, app, threaded=True)

        def stop(signum, frame):  # shutdown() waits for serve_forever(): call it from another thread
            threading.Thread(target=server.shutdown, daemon=True).start()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            ready(f"http://{host}:{server.server_port}")
            server.serve_forever()
        finally:
            server.server_close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
