"""``itaclip label-studio``: the real label-studio-ml server answering Label Studio's requests.

The backend runs in a subprocess on 127.0.0.1 with a tiny random checkpoint; task images come from a
local HTTP server that stands in for Label Studio (uploads and local files need its token). Masks
are decoded with Label Studio's own decoder (label-studio-converter) and compared with the label
PNGs ``itaclip segment`` writes for the same images and options.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
import pytest

from conftest import make_blocks_image, make_random_image, make_smooth_image

pytest.importorskip("label_studio_ml")
brush = pytest.importorskip("label_studio_converter.brush")

from itaclip.engine.errors import ItaclipError  # noqa: E402
from itaclip.engine.vocabulary import resolve_vocabulary  # noqa: E402
from itaclip.integrations.label_studio import BrushTarget, brush_target, fetch_image, vocabulary_for_labels  # noqa: E402

pytestmark = pytest.mark.timeout(600)

TOKEN = "secret-token"
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


class FakeLabelStudio(BaseHTTPRequestHandler):
    """/img/NAME: public; /data/upload/1/NAME and /data/local-files/?d=images/NAME: need the token."""

    root: Path
    tokens_seen: list

    def do_GET(self):
        parts = urlsplit(self.path)
        if parts.path.startswith("/img/"):
            name = parts.path[len("/img/"):]
        else:
            self.tokens_seen.append(self.headers.get("Authorization"))
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
        data = file.read_bytes()
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


@pytest.fixture(scope="module")
def label_studio(images):
    handler = type("Handler", (FakeLabelStudio,), {"root": images, "tokens_seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler.tokens_seen
    server.shutdown()
    server.server_close()


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

    def wait_ready(self, timeout: float) -> None:
        self._ready.wait(timeout)
        assert self.url, "backend did not start:\n" + "\n".join(self.lines)

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())


@pytest.fixture(scope="module")
def backend(images, tiny_ckpt, label_studio, text_cache, segment_outputs):
    ls_url, _ = label_studio
    cmd = [sys.executable, "-m", "itaclip.cli", "label-studio", "--weights", str(tiny_ckpt),
           "--classes", str(images / "classes.txt"), "--host", "127.0.0.1", "--port", "0", "--timeout", "5",
           *OPTIONS]
    proc = subprocess.Popen(cmd, env=_env(text_cache, LABEL_STUDIO_URL=ls_url, LABEL_STUDIO_API_KEY=TOKEN,
                                          LOCAL_FILES_DOCUMENT_ROOT=""),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
        {"id": 4, "data": {"picture": "http://127.0.0.1:9/nothing-listens-here.png"}},
    ]


def _predict_request(tasks, config) -> dict:
    """The body Label Studio posts to /predict."""
    return {"tasks": tasks, "model_version": "INITIAL", "project": "7.1700000000", "label_config": config,
            "params": {"login": None, "password": None, "context": None}}


def _decoded_label_map(prediction: dict, labels: list[str], shape) -> np.ndarray:
    """Rebuild a label map (index in ``labels``; 255 = no result) from brush results, checking that
    no pixel is claimed twice and every result is a well-formed brushlabels result."""
    out = np.full(shape, 255, np.uint8)
    for result in prediction["result"]:
        assert result["type"] == "brushlabels" and result["from_name"] == "masks" and result["to_name"] == "img"
        assert (result["original_height"], result["original_width"]) == shape
        (label,) = result["value"]["brushlabels"]
        mask = brush.decode_rle(result["value"]["rle"]).reshape(shape[0], shape[1], 4)[:, :, 3] > 0
        assert mask.any() and (out[mask] == 255).all()
        out[mask] = labels.index(label)
    return out


def _png(path: Path) -> np.ndarray:
    """A label PNG's class indices (palette or greyscale)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


def test_health_and_setup_answer_like_label_studio_expects(backend, label_studio, segment_outputs):
    status, body = backend.call("GET", "/health")
    assert status == 200 and body["status"] == "UP"
    # before any /setup and without a labelling config: the class file as it is
    ls_url, _ = label_studio
    status, body = backend.call("POST", "/predict", {"tasks": [{"id": 1, "data": {"image": f"{ls_url}/img/a.png"}}]})
    assert status == 200
    (prediction,) = body["results"]
    expected = _png(segment_outputs["classes"] / "a.png")
    results = [dict(r, from_name="masks", to_name="img") for r in prediction["result"]]  # default tag names
    assert {r["from_name"] for r in prediction["result"]} == {"tag"}
    decoded = _decoded_label_map({"result": results}, ["background", "cat", "dog", "grass"], expected.shape)
    np.testing.assert_array_equal(decoded, expected)
    config = labelling_config(["background", "cat", "dog", "grass"])
    status, body = backend.call("POST", "/setup", {"project": "7.1700000000", "schema": config, "hostname": "",
                                                   "access_token": "", "model_version": None})
    assert status == 200 and "model_version" in body
    status, body = backend.call("POST", "/versions", {"project": "7.1700000000"})
    assert status == 200 and body["versions"] == []


def test_masks_decode_to_segments_label_maps_and_a_bad_image_fails_alone(backend, label_studio, segment_outputs):
    ls_url, tokens_seen = label_studio
    labels = ["background", "cat", "dog", "grass"]  # the class file's first names, in its order
    status, body = backend.call("POST", "/predict", _predict_request(_tasks(ls_url), labelling_config(labels)))
    assert status == 200
    results = body["results"]
    assert len(results) == 4
    for prediction, name in zip(results[:3], ("a", "b", "c")):
        assert "error" not in prediction
        expected = _png(segment_outputs["classes"] / f"{name}.png")
        decoded = _decoded_label_map(prediction, labels, expected.shape)
        np.testing.assert_array_equal(decoded, expected)  # every pixel covered, exactly segment's class
        assert len(prediction["result"]) == len(np.unique(expected))  # one result per class present only
        assert prediction["model_version"].startswith("itaclip")
    assert results[3]["result"] == [] and "cannot fetch" in results[3]["error"]
    assert tokens_seen and set(tokens_seen) == {f"Token {TOKEN}"}


def test_the_configs_labels_choose_the_vocabulary_and_text_features_are_reused(backend, label_studio,
                                                                               segment_outputs):
    ls_url, _ = label_studio
    labels = ["dog", "cat", "tree"]  # dog keeps its synonym; tree is new; no background label
    status, body = backend.call("POST", "/predict", _predict_request(_tasks(ls_url)[:3], labelling_config(labels)))
    assert status == 200
    for prediction, name in zip(body["results"], ("a", "b", "c")):
        expected = _png(segment_outputs["classes2"] / f"{name}.png")  # 0 = background, 1.. = dog, cat, tree
        decoded = _decoded_label_map(prediction, labels, expected.shape)
        np.testing.assert_array_equal(decoded, np.where(expected == 0, 255, expected - 1))
    reuse = [line for line in backend.lines if "text features" in line]
    # started with the class file's 6 texts (from the segment runs' cache); this vocabulary has 6
    # (sky, wall, dog, puppy, cat, tree): only tree is looked up
    assert "6 texts: 6 from the disk cache" in reuse[0], reuse
    assert any("6 texts: 5 already in memory, 1 from the disk cache" in line for line in reuse), reuse


def test_webhook_starts_no_worker_and_sigterm_stops_cleanly(backend):
    status, body = backend.call("POST", "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 7}})
    assert status == 200
    pid = backend.proc.pid
    children = [p for p in Path("/proc").glob("[0-9]*") if _parent(p) == pid]
    assert children == []
    start = time.monotonic()
    backend.proc.send_signal(signal.SIGTERM)
    assert backend.proc.wait(timeout=30) == 0
    assert time.monotonic() - start < 30
    assert any(line.endswith("stopped") for line in backend.lines)


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


def test_brush_target_from_a_parsed_config():
    from label_studio_tools.core.label_config import parse_config

    target = brush_target(parse_config(labelling_config(["cat", "dog"])))
    assert target == BrushTarget("masks", "img", "picture", ("cat", "dog"))
    assert brush_target({}) == BrushTarget()


def test_local_files_are_read_inside_the_document_root_only(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    image = make_random_image(20, 30, seed=1)
    cv2.imwrite(str(root / "sub" / "x.png"), image[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "outside.png"), image[:, :, ::-1])
    monkeypatch.setenv("LOCAL_FILES_DOCUMENT_ROOT", str(root))
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    np.testing.assert_array_equal(fetch_image("/data/local-files/?d=sub/x.png"), image)
    with pytest.raises(ItaclipError, match="LABEL_STUDIO_URL"):
        fetch_image("/data/local-files/?d=../outside.png")  # not read from the disk: needs Label Studio
    with pytest.raises(ItaclipError, match="http"):
        fetch_image(str(root / "sub" / "x.png"))
