"""The labelling loop through a real Label Studio (PyPI ``label-studio`` 1.23.2), as a user runs it.

Label Studio runs from its own virtual environment (``tests/label_studio_env.sh`` makes it once and
prints where; ``.ci/run`` calls it) on 127.0.0.1 with SQLite. The test creates a project whose
labelling config is the ``labelstudio_config.xml`` that ``itaclip segment --export labelstudio``
writes, imports one task whose image a local HTTP server serves and one uploaded file, connects
``itaclip label-studio`` with basic auth (``POST /api/ml``), retrieves predictions
(``POST /api/dm/actions?id=retrieve_tasks_predictions``) and decodes the masks Label Studio stored
with Label Studio's own decoder (``label_studio_sdk.converter.brush``, run in its environment):
they must equal ``itaclip segment``'s label maps, and the stored RLE must equal the SDK's encoder's.

Without that environment the test is skipped, except on CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.images import make_blocks_image, make_smooth_image
from helpers.servers import start_local_server, stop_server
from helpers.tool_envs import tool_venv

pytestmark = pytest.mark.timeout(900)

VERSION = "1.23.2"
TESTS = Path(__file__).resolve().parent
OPTIONS = ["--background", "sky, wall", "--short-side", "224", "--stride", "112", "--pamr-steps", "2",
           "--device", "cpu"]
AUTH = ("label-studio", "backend-password")
#: What Label Studio 1.23 needs to reach an ML backend and images on loopback, and to stay offline.
LS_ENV = {"ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false", "LATEST_VERSION_CHECK": "false",
          "COLLECT_ANALYTICS": "false"}

#: Runs in Label Studio's environment: decodes the stored masks with its SDK and encodes segment's.
SDK_CHECK = """
import json, sys
import numpy as np
from PIL import Image
from label_studio_sdk.converter.brush import decode_rle, mask2rle
out = []
for item in json.load(open(sys.argv[1])):
    labels = np.asarray(Image.open(item["png"]))
    h, w = labels.shape
    decoded = np.full((h, w), 255, np.uint8)
    same_rle = []
    for result in item["results"]:
        layer = np.reshape(decode_rle(result["value"]["rle"]), (h, w, 4))[:, :, 3]
        c = item["names"].index(result["value"]["brushlabels"][0])
        decoded[layer > 0] = c
        same_rle.append(mask2rle((labels == c).astype(np.uint8) * 255) == result["value"]["rle"])
    np.save(item["png"] + ".decoded.npy", decoded)
    out.append(same_rle)
json.dump(out, sys.stdout)
"""


def label_studio_venv() -> Path:
    return tool_venv("ITACLIP_LABEL_STUDIO_VENV", f"label-studio-{VERSION}", "label_studio_env.sh", 3, "data-template")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"{url} exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout:g} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LabelStudioAPI:
    def __init__(self, url: str, token: str):
        self.url, self.token = url, token

    def __call__(self, method: str, path: str, body=None, *, data: bytes = None, content_type="application/json"):
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Token {self.token}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: HTTP {exc.code} {exc.read()[:2000]!r}") from None

    def upload(self, project: int, path: Path):
        boundary = uuid.uuid4().hex
        data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        return self("POST", f"/api/projects/{project}/import", data=data,
                    content_type=f"multipart/form-data; boundary={boundary}")


class QuietFileHandler(SimpleHTTPRequestHandler):
    """Serves the task images without a log line per request."""

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def venv() -> Path:
    return label_studio_venv()


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_ckpt):
    """Images, a public image server, and ``itaclip segment``'s label maps and Label Studio config."""
    root = tmp_path_factory.mktemp("real-ls")
    images = root / "images"
    images.mkdir()
    pictures = (("street.png", make_smooth_image(64, 80, seed=7)), ("upload.png", make_blocks_image(48, 64, 8)))
    for name, image in pictures:
        cv2.imwrite(str(images / name), image[:, :, ::-1])
    (root / "classes.txt").write_text("cat\ndog, puppy\ngrass\n")
    env = dict(os.environ, ITACLIP_CACHE=str(root / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(TESTS.parent / "src"), os.environ.get("PYTHONPATH")) if p))
    run = subprocess.run([sys.executable, "-m", "itaclip.cli", "segment", str(images), "--out", str(root / "segment"),
                          "--classes", str(root / "classes.txt"), "--weights", str(tiny_ckpt), "--no-overlay",
                          "--export", "labelstudio", *OPTIONS], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    server = start_local_server(partial(QuietFileHandler, directory=str(images)))
    yield {"root": root, "images": images, "env": env, "image_host": f"127.0.0.1:{server.server_address[1]}"}
    stop_server(server)


@pytest.fixture(scope="module")
def label_studio(venv, work):
    user = json.loads((venv / "itaclip-user.json").read_text())
    data = work["root"] / "ls-data"
    shutil.copytree(venv / "data-template", data)
    port = free_port()
    log = work["root"] / "label-studio.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(venv / "bin" / "label-studio"), "start", "--no-browser", "--internal-host",
                                 "127.0.0.1", "--port", str(port), "--data-dir", str(data),
                                 "--enable-legacy-api-token"],
                                env=dict(os.environ, **LS_ENV), stdout=out, stderr=subprocess.STDOUT,
                                cwd=work["root"])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + "/health", proc, log, 300)
        yield LabelStudioAPI(url, user["token"])
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def backend(work, label_studio, tiny_ckpt):
    port = free_port()
    log = work["root"] / "backend.log"
    env = dict(work["env"], LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
               BASIC_AUTH_USER=AUTH[0], BASIC_AUTH_PASS=AUTH[1])
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "itaclip.cli", "label-studio", "--weights", str(tiny_ckpt),
                                 "--classes", str(work["root"] / "classes.txt"), "--port", str(port),
                                 "--allow-hosts", work["image_host"], *OPTIONS], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 300
        while "serving on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < end, log.read_text()
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop(proc)


def test_label_studio_stores_the_masks_segment_writes(venv, work, label_studio, backend):
    api = label_studio
    config = (work["root"] / "segment" / "labelstudio_config.xml").read_text()
    project = api("POST", "/api/projects", {"title": "itaclip", "label_config": config})["id"]
    api("POST", f"/api/projects/{project}/import", [{"image": f"http://{work['image_host']}/street.png"}])
    api.upload(project, work["images"] / "upload.png")  # stored by Label Studio: /data/upload/..., needs the token
    backend_url, backend_log = backend
    ml = api("POST", "/api/ml", {"url": backend_url, "project": project, "title": "itaclip",
                                 "auth_method": "BASIC_AUTH", "basic_auth_user": AUTH[0], "basic_auth_pass": AUTH[1]})
    assert ml["state"] == "CO", ml  # connected: /health and /setup answered through basic auth
    assert api("GET", f"/api/ml/{ml['id']}/versions")["versions"] == [ml["model_version"]]
    done = api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
               {"selectedItems": {"all": True, "excluded": []}})
    assert done["processed_items"] == 2, done
    tasks = api("GET", f"/api/tasks?project={project}&fields=all")["tasks"]
    names = ["background", "cat", "dog", "grass"]
    items = []
    for task in tasks:
        full = api("GET", f"/api/tasks/{task['id']}")
        (prediction,) = full["predictions"]
        assert prediction["model_version"] == ml["model_version"] and prediction["result"], \
            (full, backend_log.read_text())
        image = full["data"]["image"]
        stem = "street" if image.endswith("street.png") else "upload"
        assert stem == "street" or image.startswith("/data/upload/"), image
        items.append({"png": str(work["root"] / "segment" / f"{stem}.png"), "names": names,
                      "results": prediction["result"]})
    (work["root"] / "stored.json").write_text(json.dumps(items))
    check = subprocess.run([str(venv / "bin" / "python"), "-c", SDK_CHECK, str(work["root"] / "stored.json")],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr
    for item, same_rle in zip(items, json.loads(check.stdout)):
        from PIL import Image

        expected = np.asarray(Image.open(item["png"]))
        np.testing.assert_array_equal(np.load(item["png"] + ".decoded.npy"), expected)  # every pixel, every class
        assert len(same_rle) == len(np.unique(expected)) and all(same_rle)
    log = backend_log.read_text()
    assert "Traceback" not in log and "error" not in log.lower(), log
