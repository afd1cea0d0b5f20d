"""``itaclip label-studio``: the ML backend answering Label Studio's requests, and refusing hostile ones.

The backend runs in a subprocess (the command line as users start it, default bind address) with a
tiny random checkpoint and basic auth; task images come from a local HTTP server that stands in for
Label Studio (uploads and local files need its token), beside two other local servers: one the
backend is allowed to fetch from and one it is not. Masks are decoded with a plain decoder
(tests/test_exports.py) and compared with the label PNGs ``itaclip segment`` writes for the same
images and options. tests/test_label_studio_real.py does the same through a real Label Studio.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
import pytest

from helpers.exports import decode_labelstudio_rle
from helpers.images import make_blocks_image, make_random_image, make_smooth_image
from helpers.servers import local_url, start_local_server, stop_server

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from itaclip.engine.errors import ItaclipError  # noqa: E402
from itaclip.engine.vocabulary import resolve_vocabulary  # noqa: E402
from itaclip.integrations.label_studio import (  # noqa: E402
    FETCH_FAILED,
    BrushTarget,
    ImageFetcher,
    brush_target,
    vocabulary_for_labels,
)

pytestmark = pytest.mark.timeout(600)

TOKEN = "secret-token"
AUTH = ("labeller", "pass:word é")  # a colon and a non-ASCII letter in the password, as users choose them
MODEL_VERSION = "itaclip-0.1.0"
CLASS_LINES = "cat\ndog, puppy\ngrass\n"
BACKGROUND = "sky, wall"
#: The same options for the backend and for the reference ``itaclip segment`` runs.
OPTIONS = ["--background", BACKGROUND, "--short-side", "224", "--stride", "112", "--pamr-steps", "2",
           "--device", "cpu"]


def labelling_config(labels) -> str:
    items = "".join(f'<Label value="{label}"/>' for label in labels)
    return (f'<View><Image name="img" value="$picture"/>'
            f'<BrushLabels name="masks" toName="img">{items}</BrushLabels></View>')


# ------------------------------------------------------------------------------ stand-in Label Studio


def png_claiming(width: int, height: int) -> bytes:
    """A small, valid PNG header that claims ``width`` × ``height`` pixels (a decompression bomb's)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class Recorder(BaseHTTPRequestHandler):
    """Serves ``root``'s files and more, and records every request's path and Authorization header.

    Public: /img/NAME, /missing (404), /notimage, /bomb.png (claims 20000×20000 pixels), /big
    (2 MiB of PNG-looking bytes, no length), /drip (one byte every 0.2 s), /redirect?to=URL (302).
    With a token: /data/upload/1/NAME, /data/local-files/?d=images/NAME."""

    protocol_version = "HTTP/1.0"
    root: Path
    seen: list

    def do_GET(self):  # noqa: N802 (http.server's name)
        parts = urlsplit(self.path)
        self.seen.append((parts.path, self.headers.get("Authorization")))
        if parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", parse_qs(parts.query)["to"][0])
            self.end_headers()
            return
        if parts.path in ("/big", "/drip"):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                if parts.path == "/big":
                    self.wfile.write(b"\x89PNG" + b"\0" * (2 << 20))
                for _ in range(100 if parts.path == "/drip" else 0):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass  # the backend hung up, as it should
            return
        fixed = {"/notimage": b"<html>not an image</html>", "/bomb.png": png_claiming(20000, 20000)}
        if parts.path in fixed:
            return self._send(fixed[parts.path])
        if parts.path == "/missing":
            return self.send_error(404)
        if parts.path.startswith("/img/"):
            name = parts.path[len("/img/"):]
        else:
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                return self.send_error(401)
            if parts.path.startswith("/data/upload/1/"):
                name = parts.path[len("/data/upload/1/"):]
            elif parts.path.rstrip("/") == "/data/local-files":
                name = parse_qs(parts.query)["d"][0].removeprefix("images/")
            else:
                return self.send_error(404)
        file = self.root / name
        if not file.is_file():
            return self.send_error(404)
        self._send(file.read_bytes())

    def _send(self, data: bytes):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ls-images")
    for name, image in (("a.png", make_random_image(60, 80, seed=3)), ("b.png", make_blocks_image(72, 96, seed=4)),
                        ("c.png", make_smooth_image(64, 64, seed=5))):
        cv2.imwrite(str(folder / name), image[:, :, ::-1])
    (folder / "classes.txt").write_text(CLASS_LINES)
    (folder / "classes2.txt").write_text("dog, puppy\ncat\ntree\n")
    return folder


class Site:
    """A recording server on 127.0.0.1: ``url``, and ``seen`` = [(path, Authorization header)]."""

    def __init__(self, root: Path):
        self.seen: list = []
        handler = type("Handler", (Recorder,), {"root": root, "seen": self.seen})
        self.server = start_local_server(handler)
        self.url = local_url(self.server)

    def close(self):
        stop_server(self.server)


@pytest.fixture(scope="module")
def sites(images):
    """Label Studio's stand-in, a host the backend may fetch from, and one it may not."""
    made = {name: Site(images) for name in ("label_studio", "allowed", "elsewhere")}
    yield made
    for site in made.values():
        site.close()


@pytest.fixture(scope="module")
def label_studio(sites):
    return sites["label_studio"].url, sites["label_studio"].seen


def _env(cache: Path, **extra) -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    # one thread in every process: the backend and the segment runs compute alike
    return dict(os.environ, PYTHONPATH=path, ITACLIP_CACHE=str(cache), OMP_NUM_THREADS="1", **extra)


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory) -> Path:
    """One text cache for the segment runs and the backend: every process uses the same features
    (a text encoded in another batch may differ in the last bit, which could flip a near-tie)."""
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture(scope="module")
def segment_outputs(images, tiny_ckpt, text_cache, tmp_path_factory):
    """``itaclip segment`` label PNGs for both vocabularies."""
    base = tmp_path_factory.mktemp("segment")
    for key in ("classes", "classes2"):
        cmd = [sys.executable, "-m", "itaclip.cli", "segment", *(str(images / n) for n in ("a.png", "b.png", "c.png")),
               "--out", str(base / key), "--classes", str(images / f"{key}.txt"), "--weights", str(tiny_ckpt), *OPTIONS]
        run = subprocess.run(cmd, env=_env(text_cache), capture_output=True, text=True, timeout=500)
        assert run.returncode == 0, run.stderr
    return {"classes": base / "classes", "classes2": base / "classes2"}


class Backend:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: list[str] = []
        self.url = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if "serving on " in line and self.url is None:
                self.url = line.split("serving on ")[1].split()[0]
                self._ready.set()
        self._ready.set()

    def logged(self, text: str, timeout: float = 10) -> bool:
        """Whether a log line with ``text`` arrives within ``timeout`` (stderr is read by a thread)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in line for line in list(self.lines)):
                return True
            time.sleep(0.05)
        return False

    def wait_ready(self, timeout: float) -> None:
        self._ready.wait(timeout)
        assert self.url, "backend did not start:\n" + "\n".join(self.lines)

    def raw(self, method: str, path: str, data: Optional[bytes] = None, content_type="application/json",
            auth=AUTH, timeout: float = 300):
        """(status, parsed JSON body, raw body) of any request; error statuses are returned too."""
        import base64

        headers = {"Content-Type": content_type} if content_type else {}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        if isinstance(data, bytes) and len(data) > self.LARGE:
            return self._refused_before_the_body(method, path, data, headers, timeout)
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return status, json.loads(raw), raw

    #: Bodies above this are announced first (``Expect: 100-continue``, as curl does for large bodies):
    #: a server that refuses them by their length answers before the body is sent, where writing it
    #: anyway races the server's close of the connection (a broken pipe instead of the answer).
    LARGE = 1 << 19

    def _refused_before_the_body(self, method, path, data, headers, timeout):
        import http.client
        import urllib.parse

        url = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        try:
            connection.putrequest(method, path)
            for name, value in {**headers, "Content-Length": str(len(data)), "Expect": "100-continue"}.items():
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()  # a refusal comes at once; an acceptance would wait for the body
            raw = response.read()
            return response.status, json.loads(raw), raw
        finally:
            connection.close()

    def call(self, method: str, path: str, body=None):
        status, parsed, _ = self.raw(method, path, None if body is None else json.dumps(body).encode())
        assert status == 200, parsed
        return status, parsed


@pytest.fixture(scope="module")
def backend(images, tiny_ckpt, sites, text_cache, segment_outputs):
    """The backend as an operator starts it: no --host (loopback by default), basic auth from the
    environment, the "allowed" site and port 9 (where nothing listens) allowed, small bounds."""
    allowed = sites["allowed"].url.removeprefix("http://")
    cmd = [sys.executable, "-m", "itaclip.cli", "label-studio", "--weights", str(tiny_ckpt),
           "--classes", str(images / "classes.txt"), "--port", "0", "--timeout", "2",
           "--allow-hosts", f"{allowed},127.0.0.1:9", "--max-request-mb", "1", "--max-image-mb", "1",
           "--max-new-labels", "3", "--auth-user", AUTH[0], *OPTIONS]
    env = _env(text_cache, LABEL_STUDIO_URL=sites["label_studio"].url, LABEL_STUDIO_API_KEY=TOKEN,
               LOCAL_FILES_DOCUMENT_ROOT="", BASIC_AUTH_PASS=AUTH[1], ITACLIP_MAX_PIXELS="1e6")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server = Backend(proc)
    server.wait_ready(300)
    yield server
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _tasks(ls_url: str) -> list[dict]:
    return [
        {"id": 1, "data": {"picture": f"{ls_url}/img/a.png"}},
        {"id": 2, "data": {"picture": "/data/upload/1/b.png"}},
        {"id": 3, "data": {"picture": "/data/local-files/?d=images/c.png"}},
        {"id": 4, "data": {"picture": "http://127.0.0.1:1/not-allowed.png"}},
    ]


def _predict_request(tasks, config, project="7.1700000000") -> dict:
    """The body Label Studio posts to /predict."""
    return {"tasks": tasks, "model_version": "INITIAL", "project": project, "label_config": config,
            "params": {"login": None, "password": None, "context": None}}


def _decoded_label_map(prediction: dict, labels: list[str], shape) -> np.ndarray:
    """Rebuild a label map (index in ``labels``; 255 = no result) from brush results, checking that
    no pixel is claimed twice and every result is a well-formed brushlabels result."""
    out = np.full(shape, 255, np.uint8)
    for result in prediction["result"]:
        assert result["type"] == "brushlabels" and result["from_name"] == "masks" and result["to_name"] == "img"
        assert (result["original_height"], result["original_width"]) == shape
        (label,) = result["value"]["brushlabels"]
        mask = decode_labelstudio_rle(result["value"]["rle"]).reshape(shape[0], shape[1], 4)[:, :, 3] > 0
        assert mask.any() and (out[mask] == 255).all()
        out[mask] = labels.index(label)
    return out


def _png(path: Path) -> np.ndarray:
    """A label PNG's class indices (palette or greyscale)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


def test_health_setup_versions_and_a_predict_without_config(backend, label_studio, segment_outputs):
    status, body = backend.call("GET", "/health")
    assert body["status"] == "UP"
    assert backend.url.startswith("http://127.0.0.1:")  # loopback by default
    ls_url, _ = label_studio
    # another project's /setup changes nothing for a request without a labelling config (issue 20)
    status, body = backend.call("POST", "/setup", {"project": "9.1", "schema": labelling_config(["tree", "car"]),
                                                   "hostname": ls_url, "access_token": "x", "model_version": None})
    assert body == {"model_version": MODEL_VERSION}
    status, body = backend.call("POST", "/predict", {"tasks": [{"id": 1, "data": {"image": f"{ls_url}/img/a.png"}}],
                                                     "project": "7.1"})
    (prediction,) = body["results"]
    assert body["model_version"] == prediction["model_version"] == MODEL_VERSION  # one version everywhere
    expected = _png(segment_outputs["classes"] / "a.png")
    results = [dict(r, from_name="masks", to_name="img") for r in prediction["result"]]  # default tag names
    assert {r["from_name"] for r in prediction["result"]} == {"tag"}
    decoded = _decoded_label_map({"result": results}, ["background", "cat", "dog", "grass"], expected.shape)
    np.testing.assert_array_equal(decoded, expected)
    for method in ("GET", "POST"):  # Label Studio 1.23 GETs it; the older server took POST
        status, body = backend.call(method, "/versions", {"project": "7.1"} if method == "POST" else None)
        assert body["versions"] == [MODEL_VERSION]
    assert backend.call("GET", "/is_training")[1] == {"is_training": False}
    assert backend.call("GET", "/metrics")[1] == {}


def test_masks_decode_to_segments_label_maps_and_a_bad_task_fails_alone(backend, label_studio, segment_outputs):
    ls_url, seen = label_studio
    labels = ["background", "cat", "dog", "grass"]  # the class file's first names, in its order
    tasks = _tasks(ls_url) + [7, {"id": 6}]  # not a task; a task without data
    status, body = backend.call("POST", "/predict", _predict_request(tasks, labelling_config(labels)))
    results = body["results"]
    assert len(results) == 6
    for prediction, name in zip(results[:3], ("a", "b", "c")):
        assert "error" not in prediction
        expected = _png(segment_outputs["classes"] / f"{name}.png")
        decoded = _decoded_label_map(prediction, labels, expected.shape)
        np.testing.assert_array_equal(decoded, expected)  # every pixel covered, exactly segment's class
        assert len(prediction["result"]) == len(np.unique(expected))  # one result per class present only
        assert prediction["model_version"] == MODEL_VERSION
    assert results[3]["result"] == [] and "not one this backend may fetch from" in results[3]["error"]
    assert all(r["result"] == [] and "data.picture" in r["error"] for r in results[4:])
    tokens = {header for path, header in seen if path.startswith("/data/")}
    assert tokens == {f"Token {TOKEN}"}


def test_the_configs_labels_choose_the_vocabulary_and_text_features_are_reused(backend, label_studio,
                                                                               segment_outputs):
    ls_url, _ = label_studio
    labels = ["dog", "cat", "tree"]  # dog keeps its synonym; tree is new; no background label
    status, body = backend.call("POST", "/predict", _predict_request(_tasks(ls_url)[:3], labelling_config(labels)))
    for prediction, name in zip(body["results"], ("a", "b", "c")):
        expected = _png(segment_outputs["classes2"] / f"{name}.png")  # 0 = background, 1.. = dog, cat, tree
        decoded = _decoded_label_map(prediction, labels, expected.shape)
        np.testing.assert_array_equal(decoded, np.where(expected == 0, 255, expected - 1))
    reuse = [line for line in backend.lines if "text features" in line]
    # started with the class file's 6 texts (from the segment runs' cache); this vocabulary has 6
    # (sky, wall, dog, puppy, cat, tree): only tree is looked up
    assert "6 texts: 6 from the disk cache" in reuse[0], reuse
    assert backend.logged("6 texts: 5 already in memory, 1 from the disk cache"), reuse


# ------------------------------------------------------------------------------------------ hostile


def test_setup_can_neither_move_the_token_nor_change_other_projects(backend, sites):
    """Issue 19, item 1: /setup's hostname is ignored (the token goes to LABEL_STUDIO_URL only) and
    its labelling config is used by nobody."""
    attacker = sites["elsewhere"]
    before = len(attacker.seen)
    backend.call("POST", "/setup", {"project": "7.1700000000", "schema": labelling_config(["PWNED", "x"]),
                                    "hostname": attacker.url, "access_token": "stolen?"})
    status, body = backend.call("POST", "/predict", {"tasks": [{"id": 2, "data": {"image": "/data/upload/1/b.png"}}],
                                                     "project": "7.1700000000"})
    (prediction,) = body["results"]
    assert "error" not in prediction
    assert {r["value"]["brushlabels"][0] for r in prediction["result"]} <= {"background", "cat", "dog", "grass"}
    assert len(attacker.seen) == before  # nothing asked of the attacker's host
    assert sites["label_studio"].seen[-1] == ("/data/upload/1/b.png", f"Token {TOKEN}")


def test_redirects_never_carry_the_token_and_go_to_allowed_hosts_only(backend, sites):
    """Issue 19, items 2 and 6: a redirect from Label Studio to an allowed host is followed without
    the token; one to any other host is not followed at all."""
    from urllib.parse import quote

    ls, allowed, elsewhere = sites["label_studio"], sites["allowed"], sites["elsewhere"]
    before = len(elsewhere.seen)
    tasks = [{"id": 1, "data": {"image": f"{ls.url}/redirect?to={quote(allowed.url + '/img/a.png')}"}},
             {"id": 2, "data": {"image": f"{ls.url}/redirect?to={quote(elsewhere.url + '/img/a.png')}"}}]
    status, body = backend.call("POST", "/predict", {"tasks": tasks})
    first, second = body["results"]
    assert "error" not in first and first["result"]
    assert allowed.seen[-1] == ("/img/a.png", None)  # followed, without the token
    assert ls.seen[-2:] == [("/redirect", f"Token {TOKEN}")] * 2  # the token went to Label Studio only
    assert second["error"] == FETCH_FAILED and len(elsewhere.seen) == before
    assert backend.logged("which is not allowed")


def test_fetch_failures_read_alike_to_the_client_and_apart_in_the_log(backend, sites):
    """Issue 19, items 4 and 6: a refused connection, a 404, a file that is not an image, a
    decompression bomb, an oversized body and a slow drip all give the client the same message;
    the operator's log tells them apart; each download ends within --timeout."""
    import concurrent.futures

    allowed = sites["allowed"].url
    urls = ["http://127.0.0.1:9/refused.png", f"{allowed}/missing", f"{allowed}/notimage", f"{allowed}/bomb.png",
            f"{allowed}/big", f"{allowed}/drip"]
    tasks = [{"id": i, "data": {"image": url}} for i, url in enumerate(urls)]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        start = time.monotonic()
        predicting = pool.submit(backend.call, "POST", "/predict", {"tasks": tasks})
        time.sleep(1.0)  # while the drip is being read, the backend still answers
        health_start = time.monotonic()
        assert backend.call("GET", "/health")[1]["status"] == "UP"
        assert time.monotonic() - health_start < 1.0
        status, body = predicting.result()
    assert time.monotonic() - start < 15  # the drip alone would take 20 s
    assert [r["error"] for r in body["results"]] == [FETCH_FAILED] * len(urls)
    for reason in ("Connection refused", "HTTP 404", "not an image", "claims 400.0 megapixels",
                   "more than the limit of",
                   "no complete answer within 2 s"):
        assert backend.logged(reason), reason


def test_train_writes_nothing_and_webhooks_are_acknowledged(backend, tmp_path):
    target = tmp_path / "attacker-chosen"
    body = {"annotations": [{"id": 1, "data": {"image": "x"}, "annotations": [{"result": []}]}],
            "project": str(target), "label_config": labelling_config(["cat", "dog"])}
    status, parsed, _ = backend.raw("POST", "/train", json.dumps(body).encode())
    assert status == 501 and "does not train" in parsed["error"]
    assert not target.exists()
    status, body = backend.call("POST", "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 7}})
    assert body["status"].startswith("ignored")


MALFORMED = [  # (method, path, body, content type, status): issue 19's twelve shapes and more
    ("POST", "/predict", b'{"tasks": [', "application/json", 400),
    ("POST", "/predict", b"", "application/json", 400),
    ("POST", "/predict", b'{"tasks": []}', "application/x-www-form-urlencoded", 415),
    ("POST", "/predict", b"null", "application/json", 400),
    ("POST", "/predict", b"{}", "application/json", 400),
    ("POST", "/predict", b'{"tasks": null}', "application/json", 400),
    ("POST", "/predict", b'{"tasks": 5}', "application/json", 400),
    ("POST", "/predict", b'{"tasks": [], "params": []}', "application/json", 400),
    ("POST", "/setup", b"{not json", "application/json", 400),
    ("POST", "/predict", b'{"tasks": [], "label_config": "<View><oops"}', "application/json", 400),
    ("POST", "/predict", b'{"tasks": [], "label_config": "<View><Image name=\\"i\\" value=\\"$i\\"/></View>"}',
     "application/json", 400),
    ("POST", "/predict", b'{"tasks": [], "label_config": 5}', "application/json", 400),
    ("POST", "/predict", b"[" * 100000 + b"]" * 100000, "application/json", 400),
    ("POST", "/predict", b'{"tasks": []}' + b" " * (1 << 20), "application/json", 413),
    ("GET", "/predict", None, None, 405),
    ("GET", "/nothing-here", None, None, 404),
    ("POST", "/predict", b'{"tasks": []}', "application/json", 401),  # no credentials
]


def test_malformed_requests_get_a_json_error_and_the_server_stays_up(backend):
    for method, path, data, content_type, expected in MALFORMED:
        status, parsed, raw = backend.raw(method, path, data, content_type, auth=None if expected == 401 else AUTH)
        assert status == expected, (method, path, data[:60] if data else data, parsed)
        assert set(parsed) == {"error"} and "\n" not in parsed["error"], parsed
        assert b"Traceback" not in raw and b"site-packages" not in raw
    status, parsed, _ = backend.raw("GET", "/health", auth=("labeller", "wrong"))
    assert status == 401
    # a body sent in chunks, without a length, is stopped as it passes the limit
    status, parsed, raw = backend.raw("POST", "/predict", iter([b'{"tasks": [], "x": "'] + [b"y" * 65536] * 32))
    assert status == 413 and set(parsed) == {"error"}, raw[:200]
    # a one-label config is fine with a background set; nine new labels pass --max-new-labels 3
    status, body = backend.call("POST", "/predict", {"tasks": [], "label_config": labelling_config(["cat"])})
    assert body["results"] == []
    status, parsed, _ = backend.raw("POST", "/setup", json.dumps(
        {"schema": labelling_config([f"new{i}" for i in range(9)])}).encode())
    assert status == 400 and "--max-new-labels" in parsed["error"]
    assert backend.call("GET", "/health")[1]["status"] == "UP"
    assert backend.logged('"GET /health HTTP/1.1" 200')
    assert not any("Traceback" in line for line in backend.lines), "\n".join(backend.lines)


def test_sigterm_stops_cleanly_without_worker_processes(backend):
    pid = backend.proc.pid
    children = [p for p in Path("/proc").glob("[0-9]*") if _parent(p) == pid]
    assert children == []
    start = time.monotonic()
    backend.proc.send_signal(signal.SIGTERM)
    assert backend.proc.wait(timeout=30) == 0
    assert time.monotonic() - start < 30
    assert backend.logged("itaclip label-studio: stopped")


def _parent(proc_dir: Path):
    try:
        for line in (proc_dir / "status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        return None


# ------------------------------------------------------------------------------------ library parts


def test_labels_map_onto_the_vocabulary():
    base = resolve_vocabulary(["cat", "dog, puppy", "grass"], background=BACKGROUND,
                              aux_texts=["a feline.", "a canine.", "green plants."])
    vocab, names, report = vocabulary_for_labels(base, ["Dog", "tree", "Background", "dog"])
    assert vocab.classes == (("sky", "wall"), ("dog", "puppy"), ("tree",))
    assert names == ["Background", "Dog", "tree"] and sorted(report) == [0, 1, 2]
    assert vocab.aux_texts is None  # tree has no text
    vocab, names, report = vocabulary_for_labels(base, ["grass", "cat"])
    assert vocab.aux_texts == ("green plants.", "a feline.") and report == [1, 2]
    assert vocabulary_for_labels(base, None) == (base, base.names, [0, 1, 2, 3])


def test_brush_target_from_a_labelling_config():
    target = brush_target(labelling_config(["cat", "dog"]))
    assert target == BrushTarget("masks", "img", "picture", ("cat", "dog"))
    assert brush_target(None) == brush_target("") == BrushTarget()
    aliased = ('<View><Image name="im" value="$url"/><Choices name="c" toName="im"><Choice value="x"/></Choices>'
               '<BrushLabels name="b" toName="im,other"><Label value="Dog" alias="dog"/><Label value="cat"/>'
               '</BrushLabels></View>')
    assert brush_target(aliased) == BrushTarget("b", "im", "url", ("dog", "cat"))
    bomb = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
            '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">'
            '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;">'
            '<!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;">]>'
            '<View><BrushLabels name="b" toName="i"><Label value="&h;"/></BrushLabels></View>')
    with pytest.raises(ItaclipError):  # expat refuses the expansion, or the label is too long
        brush_target(bomb)
    external = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                '<View><BrushLabels name="b" toName="i"><Label value="&e;"/></BrushLabels></View>')
    with pytest.raises(ItaclipError, match="not valid XML"):  # never read
        brush_target(external)


def test_local_files_are_read_inside_the_document_root_only(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    image = make_random_image(20, 30, seed=1)
    cv2.imwrite(str(root / "sub" / "x.png"), image[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "outside.png"), image[:, :, ::-1])
    fetcher = ImageFetcher(document_root=str(root))
    np.testing.assert_array_equal(fetcher.fetch("/data/local-files/?d=sub/x.png"), image)
    with pytest.raises(ItaclipError, match="LABEL_STUDIO_URL"):
        fetcher.fetch("/data/local-files/?d=../outside.png")  # not read from the disk: needs Label Studio
    with pytest.raises(ItaclipError, match="http"):
        fetcher.fetch(str(root / "sub" / "x.png"))
    with pytest.raises(ItaclipError, match=FETCH_FAILED.split(" (")[0]):  # the pixel limit holds for files too
        ImageFetcher(document_root=str(root), max_pixels=100).fetch("/data/local-files/?d=sub/x.png")


class _SlowPredictor:
    """What ``create_app`` reads of a predictor; ``predict`` waits until released."""

    model_version = "slow"
    fetcher = None

    def __init__(self):
        self.started, self.release = threading.Semaphore(0), threading.Event()

    def predict(self, tasks, target):
        self.started.release()
        self.release.wait(60)
        return [{"result": []} for _ in tasks]


def test_requests_beyond_the_limit_are_answered_busy_in_json():
    """Requests over ``max_requests`` running at once get a JSON 503 (uvicorn's own limit, set above,
    would answer in plain text); a finished or failed request frees its place."""
    import asyncio

    from itaclip.integrations.label_studio_server import create_app

    predictor = _SlowPredictor()
    app = create_app(predictor, max_requests=2)

    async def request(body: bytes):
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
                 "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
                 "server": ("127.0.0.1", 9090), "client": ("127.0.0.1", 5000), "root_path": ""}
        await app(scope, receive, send)
        return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))

    async def main():
        predict = json.dumps({"tasks": [{"data": {}}]}).encode()
        running = [asyncio.create_task(request(predict)) for _ in range(2)]
        for _ in range(2):
            await asyncio.to_thread(predictor.started.acquire, True, 60)
        busy = await request(predict)
        predictor.release.set()
        finished = await asyncio.gather(*running)
        failed = await request(b"not json")
        return busy, finished, failed, await request(predict)

    busy, finished, failed, after = asyncio.run(main())
    assert busy == (503, {"error": "busy: 2 requests are running; retry later"})
    assert [status for status, _ in finished] == [200, 200]
    assert failed == (400, {"error": "the body is not valid JSON"})
    assert after == (200, {"results": [{"result": []}], "model_version": "slow"})


def test_the_allow_list():
    fetcher = ImageFetcher("http://LS.example:8080/ls/", "t", ["images.example", "cdn.example:8443", "[::1]:9000"])
    allowed = ["http://ls.example:8080/data/x.png", "https://images.example/a.png", "http://images.example/a",
               "https://cdn.example:8443/a", "http://[::1]:9000/a"]
    refused = ["http://ls.example/data/x.png", "http://ls.example:8081/x", "https://images.example:444/a",
               "http://cdn.example/a", "ftp://images.example/a", "http://other.example/a", "http://[::1]/a",
               "http://127.0.0.1:8080/x", "file:///etc/passwd", "http://images.example.evil/a"]
    assert [fetcher.is_allowed(url) for url in allowed] == [True] * len(allowed)
    assert [fetcher.is_allowed(url) for url in refused] == [False] * len(refused)
    assert ImageFetcher(allow_hosts=["*"]).is_allowed("http://anything:1/x")
    for bad in ("http://x", "host/path", "user@host", ""):
        with pytest.raises(ItaclipError, match="--allow-hosts"):
            ImageFetcher(allow_hosts=[bad])
    with pytest.raises(ItaclipError, match="LABEL_STUDIO_URL"):
        ImageFetcher("localhost:8080")


def test_operator_mistakes_are_one_line_before_the_model_loads(monkeypatch, capsys, tmp_path):
    from itaclip.cli import main

    missing_weights = str(tmp_path / "never-loaded.pt")  # a model load would fail differently
    common = ["label-studio", "--classes", "cat, dog", "--weights", missing_weights, "--device", "cpu"]
    monkeypatch.delenv("BASIC_AUTH_PASS", raising=False)
    monkeypatch.delenv("BASIC_AUTH_USER", raising=False)
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:8080")
    cases = [(["--auth-user", "me"], "needs both a user and a password"),
             (["--allow-hosts", "http://host/path"], "--allow-hosts takes HOST or HOST:PORT")]
    for extra, message in cases:
        assert main(common + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    monkeypatch.setenv("LABEL_STUDIO_URL", "localhost:8080")
    assert main(common) == 2
    assert "LABEL_STUDIO_URL must be Label Studio's http(s) address" in capsys.readouterr().err


def test_new_labels_are_counted_as_the_texts_they_cost():
    from itaclip.integrations.label_studio import new_labels

    base = resolve_vocabulary(["cat", "dog, puppy"], background=BACKGROUND)
    assert new_labels(base, None) == set()
    assert new_labels(base, ["Cat", " background ", "tree", "Tree", "TREE", "", "dog"]) == {"tree", "Tree", "TREE"}
