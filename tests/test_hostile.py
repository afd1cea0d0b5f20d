"""Hostile inputs, as a careless or malicious user would give them (README "Limits and safety").

Every case asserts what a user may rely on: a correct result or a one-line error (never a
traceback), the documented exit code (0 done, 1 some images failed, 2 nothing done, 130
interrupted), no partial output files, the other images' outputs intact, inputs untouched and
nothing executed. Cases run in-process through ``itaclip.cli.main`` where they can (fast); signals
and concurrent writers use real processes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from itaclip.cli import main
from itaclip.engine.errors import ItaclipError

SRC = Path(__file__).resolve().parents[1] / "src"
#: Engine flags that make a CLI run take well under a second once the model is loaded.
FAST = ["--device", "cpu", "--short-side", "32", "--crop", "32", "--stride", "32", "--no-image-engineering",
        "--pamr-steps", "1"]


# ------------------------------------------------------------------------------------------ helpers


def run_cli(capfd, *argv) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``itaclip ARGV`` run in this process."""
    code = main([str(a) for a in argv])
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.strip()]


def assert_one_line_errors(lines: list[str], command: str = "segment") -> list[str]:
    """Every error is one line ``itaclip CMD: error: ...``; returns those lines."""
    errors = [line for line in lines if ": error: " in line]
    for line in lines:
        assert line.startswith(f"itaclip {command}") or line.startswith("usage:") or line.startswith(" "), line
    return errors


def digests(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def read_png(path: Path) -> np.ndarray:
    """A PNG's values as stored: class indices for a palette label map (Pillow; cv2.imread would
    expand the palette, and crashes on file names that are not UTF-8)."""
    with Image.open(path) as image:
        return np.asarray(image)


def assert_complete(folder: Path) -> None:
    """Every visible output file is whole: PNGs decode, JSON parses, npz loads."""
    for path in visible_files(folder):
        if path.suffix == ".png":
            assert read_png(path) is not None, path
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".npz":
            with np.load(path) as data:
                data["probs"]


def write_rgb(path: Path, h: int, w: int, seed: int = 0) -> Path:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.write_bytes(cv2.imencode(path.suffix or ".png", rgb[:, :, ::-1])[1].tobytes())
    return path


# --------------------------------------------------------------------------------- hostile images


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A 1 kB PNG whose header claims ``width × height`` RGB pixels (zero rows compress ~1000:1)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + 3 * width) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def jpeg_bomb(side: int = 65000) -> bytes:
    """A small JPEG whose frame header (SOF0) claims ``side × side`` pixels."""
    data = bytearray(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def gif_bomb() -> bytes:
    """A small GIF whose screen and frame claim 65535 × 65535 pixels."""
    buffer = io.BytesIO()
    Image.new("P", (8, 8)).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", 65535, 65535)
    frame = data.index(b"\x2c")
    data[frame + 5:frame + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.fromarray(np.full((30, 40, 3), 60 * i, np.uint8)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def cmyk_jpeg() -> bytes:
    array = np.random.default_rng(3).integers(0, 256, (30, 40, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, "CMYK").save(buffer, "JPEG")
    return buffer.getvalue()


def encoded(array: np.ndarray, suffix: str = ".png") -> bytes:
    return cv2.imencode(suffix, array)[1].tobytes()


def good_png() -> bytes:
    return encoded(np.random.default_rng(4).integers(0, 256, (30, 40, 3), dtype=np.uint8))


def good_jpeg(h: int = 30, w: int = 40) -> bytes:
    return encoded(np.random.default_rng(5).integers(0, 256, (h, w, 3), dtype=np.uint8), ".jpg")


#: name → (file bytes, expected outcome: "ok", "error" or "either", text the error must hold)
HOSTILE_IMAGES = {
    "bomb_png.png": (png_bomb, "error", "decompression bomb"),
    "bomb_jpeg.jpg": (jpeg_bomb, "error", "decompression bomb"),
    "bomb_gif.gif": (gif_bomb, "error", "decompression bomb"),
    "strip_4100x1.png": (lambda: encoded(np.full((1, 4100, 3), 90, np.uint8)), "error", "too narrow"),
    "strip_1x4100.png": (lambda: encoded(np.full((4100, 1, 3), 90, np.uint8)), "error", "too narrow"),
    "truncated_png.png": (lambda: good_png()[: len(good_png()) // 2], "either", ""),
    "truncated_jpeg.jpg": (lambda: good_jpeg(120, 160)[: len(good_jpeg(120, 160)) * 2 // 3], "either", ""),
    "zero_bytes.png": (lambda: b"", "error", "not an image"),
    "text_file.jpg": (lambda: b"hello, I am not an image\n", "error", "not an image"),
    "cmyk.jpg": (cmyk_jpeg, "ok", ""),
    "sixteen_bit.png": (lambda: encoded(np.random.default_rng(6).integers(0, 65536, (30, 40, 3), dtype=np.uint16)),
                        "ok", ""),
    "rgba.png": (lambda: encoded(np.random.default_rng(7).integers(0, 256, (30, 40, 4), dtype=np.uint8)), "ok", ""),
    "grey.png": (lambda: encoded(np.random.default_rng(8).integers(0, 256, (30, 40), dtype=np.uint8)), "ok", ""),
    "animated.gif": (animated_gif, "either", ""),
    "tiny_1x1.png": (lambda: encoded(np.full((1, 1, 3), 200, np.uint8)), "ok", ""),
}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, tiny_ckpt):
    """One `itaclip segment` over every hostile image plus two good ones, with every export."""
    root = tmp_path_factory.mktemp("hostile")
    inputs = root / "in"
    inputs.mkdir()
    files = []
    for name, (make, _, _) in HOSTILE_IMAGES.items():
        (inputs / name).write_bytes(make())
        files.append(inputs / name)
    latin1 = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name: not UTF-8
    (inputs / latin1).write_bytes(good_png())
    files += [inputs / latin1, inputs / "good.jpg"]
    (inputs / "good.jpg").write_bytes(good_jpeg())
    before = digests(files)
    out = root / "out"
    code = main(["segment", *map(str, files), "--out", str(out), "--weights", str(tiny_ckpt), "--classes",
                 "cat, dog", "--export", "coco,labelstudio,masks", "--save-probs", *FAST])
    return dict(code=code, files=files, before=before, out=out, latin1=latin1)


def test_hostile_images_batch(hostile_run, capfd):
    err = capfd.readouterr().err  # the module fixture's output is attributed to the first test
    assert "Traceback" not in err
    run = hostile_run
    assert run["code"] == 1  # some failed, the others finished
    assert digests(run["files"]) == run["before"], "an input changed"
    out = run["out"]
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*old*")), list(out.rglob(".*"))
    assert_complete(out)
    for path in run["files"]:
        stem = Path(path).stem
        label = out / f"{stem}.png"
        outcome, must = HOSTILE_IMAGES.get(Path(path).name, (None, "ok", ""))[1:]
        if outcome == "error":
            assert not list(out.glob(f"{stem}[._]*")) and not label.exists(), f"partial outputs of {stem}"
        if outcome == "ok":
            assert label.exists(), f"{stem} not segmented"
        if label.exists():  # a correct result: the image's size, every file there
            for suffix in ("_overlay.png", ".npz", ".coco.json", ".labelstudio.json"):
                assert (out / f"{stem}{suffix}").is_file()
            assert (out / f"{stem}_masks").is_dir()
            labels = read_png(label)
            with Image.open(path) as original:
                assert labels.shape == (original.height, original.width)


def test_hostile_images_report_one_line_each(tmp_path, tiny_ckpt, capfd):
    """Each bad image is reported in one line that says what is wrong."""
    inputs = []
    for name, (make, outcome, _) in HOSTILE_IMAGES.items():
        if outcome == "error":
            (tmp_path / name).write_bytes(make())
            inputs.append(tmp_path / name)
    (tmp_path / "good.png").write_bytes(good_png())
    code, lines = run_cli(capfd, "segment", *inputs, tmp_path / "good.png", "--out", tmp_path / "out",
                          "--weights", tiny_ckpt, "--classes", "cat, dog", *FAST)
    assert code == 1
    errors = assert_one_line_errors(lines)
    assert len(errors) == len(inputs)
    for path in inputs:
        line = next(e for e in errors if str(path) in e)
        assert HOSTILE_IMAGES[path.name][2] in line, line
        assert line.count(str(path)) == 1, line  # the path once, then the reason
    assert (tmp_path / "out" / "good.png").is_file()
    assert any("1 done, 0 skipped, %d failed" % len(inputs) in line for line in lines)


def test_latin1_file_name_in_json_exports(hostile_run):
    out, stem = hostile_run["out"], Path(hostile_run["latin1"]).stem
    coco = json.loads((out / f"{stem}.coco.json").read_text(encoding="utf-8"))
    assert coco["images"][0]["file_name"] == "caf%E9.png"
    task = json.loads((out / f"{stem}.labelstudio.json").read_text(encoding="utf-8"))
    assert task[0]["data"]["image"] == "caf%E9.png"


def test_pixel_limit_from_header_before_decoding(tmp_path, monkeypatch):
    from itaclip.engine import images

    path = write_rgb(tmp_path / "a.png", 40, 50)
    assert images.read_image(path, max_pixels=2000).shape == (40, 50, 3)
    decoded = []
    monkeypatch.setattr(images.cv2, "imdecode", lambda *a: decoded.append(1))
    with pytest.raises(ItaclipError, match=r"50×40 = 0.0 megapixels, more than the limit"):
        images.read_image(path, max_pixels=1999)
    assert not decoded  # refused from the header alone
    monkeypatch.setenv("ITACLIP_MAX_PIXELS", "1000")
    with pytest.raises(ItaclipError, match="limit of 0.001"):
        images.read_image(path)
    for bad in ("nan", "inf", "-5", "lots"):
        monkeypatch.setenv("ITACLIP_MAX_PIXELS", bad)
        with pytest.raises(ItaclipError, match="ITACLIP_MAX_PIXELS"):
            images.pixel_limit()


def test_pixel_limit_flag(tmp_path, tiny_ckpt, capfd):
    big, small = write_rgb(tmp_path / "big.png", 40, 60), write_rgb(tmp_path / "small.png", 20, 30)
    code, lines = run_cli(capfd, "segment", big, small, "--out", tmp_path / "out", "--weights", tiny_ckpt,
                          "--classes", "cat, dog", "--max-pixels", "1000", *FAST)
    assert code == 1
    errors = assert_one_line_errors(lines)
    assert len(errors) == 1 and "big.png" in errors[0] and "more than the limit of 0.001" in errors[0]
    assert (tmp_path / "out" / "small.png").is_file() and not (tmp_path / "out" / "big.png").exists()
    for bad in ("nan", "inf", "0", "many"):
        with pytest.raises(SystemExit) as exit_info:
            main(["segment", str(small), "--out", str(tmp_path / "o2"), "--max-pixels", bad])
        assert exit_info.value.code == 2
        assert "--max-pixels" in capfd.readouterr().err


# ------------------------------------------------------------------------- inputs and output folder


def test_out_equal_to_input_folder_is_refused(tmp_path, tiny_ckpt, capfd):
    photos = tmp_path / "photos"
    photos.mkdir()
    files = [write_rgb(photos / "a.png", 20, 30), write_rgb(photos / "b.jpg", 20, 30)]
    before = digests(files)
    code, lines = run_cli(capfd, "segment", photos, "--out", photos, "--weights", tiny_ckpt,
                          "--classes", "cat, dog", *FAST)
    assert code == 2 and len(lines) == 1 and "is the input folder" in lines[0]
    assert digests(files) == before and sorted(p.name for p in photos.iterdir()) == ["a.png", "b.jpg"]
    code, lines = run_cli(capfd, "segment", photos / "a.png", "--out", photos, "--weights", tiny_ckpt,
                          "--classes", "cat, dog", *FAST)
    assert code == 2 and "is the folder of the input image" in lines[0]
    assert digests(files) == before and sorted(p.name for p in photos.iterdir()) == ["a.png", "b.jpg"]


def test_an_output_that_would_replace_an_input_is_refused(tmp_path):
    """The last guard, below the folder rules: no output path is ever an input image."""
    from itaclip.outputs.folder import Job, refuse_overwriting_inputs
    from itaclip.outputs.writer import OutputOptions

    image = write_rgb(tmp_path / "a.png", 4, 4)
    with pytest.raises(ItaclipError, match="is an input image and would be replaced"):
        refuse_overwriting_inputs([Job(image, tmp_path, "a")], OutputOptions())


def test_out_around_or_inside_the_inputs_is_refused(tmp_path, tiny_ckpt, capfd):
    """An --out among the inputs would poison later runs (a recursive run would segment the outputs,
    or skip the images beside a manifest): refused before anything is written."""
    photos = tmp_path / "photos"
    (photos / "animals").mkdir(parents=True)
    (photos / "2019").mkdir()
    files = [write_rgb(photos / "animals" / "lion.jpg", 20, 30), write_rgb(photos / "cat.png", 20, 30, seed=1),
             write_rgb(photos / "2019" / "beach.jpg", 20, 30, seed=2)]
    before = digests(files)
    lion = photos / "animals" / "lion.jpg"
    cases = [
        ([lion], photos / "animals", "is the folder of the input image"),
        ([lion], photos, "contains the folder of the input image"),
        ([photos, "--recursive"], tmp_path, "contains the input folder"),
        ([photos / "animals"], photos, "contains the input folder"),
        ([photos, "--recursive"], photos / "2019", "holds images itaclip did not write"),
        ([photos], photos / "2019", "holds images itaclip did not write"),
    ]
    for inputs, out, message in cases:
        code, lines = run_cli(capfd, "segment", *inputs, "--out", out, "--weights", tiny_ckpt,
                              "--classes", "cat, dog", *FAST)
        assert code == 2 and len(lines) == 1 and message in lines[0], (inputs, out, lines)
    assert digests(files) == before
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "photos/2019/beach.jpg", "photos/animals/lion.jpg", "photos/cat.png"]
    # a new sub-folder of the image's folder is fine, and a later recursive run leaves it out
    code, lines = run_cli(capfd, "segment", lion, "--out", photos / "animals" / "labels", "--weights", tiny_ckpt,
                          "--classes", "cat, dog", *FAST)
    assert code == 0
    code, lines = run_cli(capfd, "segment", photos, "--recursive", "--out", tmp_path / "all", "--weights",
                          tiny_ckpt, "--classes", "cat, dog", *FAST)
    assert code == 0 and any("3 done, 0 skipped, 0 failed" in line for line in lines), lines


def test_a_manifest_among_input_images_never_hides_them(tmp_path, tiny_ckpt, capfd):
    """A folder with an itaclip-run.json and images itaclip did not write (outputs written into an
    input folder by an older version) is an error, not a folder silently left out."""
    photos = tmp_path / "photos"
    (photos / "animals").mkdir(parents=True)
    lion = write_rgb(photos / "animals" / "lion.jpg", 20, 30)
    write_rgb(photos / "cat.png", 20, 30, seed=1)
    assert run_cli(capfd, "segment", lion, "--out", tmp_path / "made", "--weights", tiny_ckpt,
                   "--classes", "cat, dog", *FAST)[0] == 0
    for made in (tmp_path / "made").iterdir():  # as if written into the photo folder
        made.rename(photos / "animals" / made.name)
    args = ["--out", tmp_path / "out", "--weights", tiny_ckpt, "--classes", "cat, dog", *FAST]
    for inputs in ([photos, "--recursive"], [photos / "animals"]):
        code, lines = run_cli(capfd, "segment", *inputs, *args)
        assert code == 2 and len(lines) == 1, lines
        assert "itaclip-run.json and also images itaclip did not write" in lines[0] and "lion.jpg" in lines[0]
    assert not (tmp_path / "out").exists()
    # an RGB PNG photo is told apart from the palette label maps beside it
    (photos / "animals" / "lion.jpg").rename(tmp_path / "lion.jpg")
    write_rgb(photos / "animals" / "zebra.png", 20, 30, seed=3)
    code, lines = run_cli(capfd, "segment", photos, "--recursive", *args)
    assert code == 2 and "zebra.png" in lines[0]
    # with the photos moved out, the folder holds only outputs: an earlier output folder, left out
    (photos / "animals" / "zebra.png").unlink()
    code, lines = run_cli(capfd, "segment", photos, "--recursive", *args)
    assert code == 0 and any("1 done, 0 skipped, 0 failed" in line for line in lines), lines


def test_outputs_inside_the_input_tree_are_not_segmented_again(tmp_path, tiny_ckpt, capfd):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    files = [write_rgb(photos / "a.png", 20, 30), write_rgb(photos / "sub" / "b.png", 20, 30, seed=1)]
    before = digests(files)
    args = ["segment", photos, "--recursive", "--out", photos / "results", "--weights", tiny_ckpt,
            "--classes", "cat, dog", *FAST]
    assert run_cli(capfd, *args)[0] == 0
    made = visible_files(photos / "results")
    code, lines = run_cli(capfd, *args)  # a rerun finds only the two photos, both done
    assert code == 0 and any("2 image(s) already done" in line for line in lines)
    assert visible_files(photos / "results") == made
    # another itaclip output folder in the tree (it has a manifest) is skipped as well
    code, lines = run_cli(capfd, "segment", photos, "--recursive", "--out", tmp_path / "elsewhere",
                          "--weights", tiny_ckpt, "--classes", "cat, dog", *FAST)
    assert code == 0 and sorted(p.name for p in visible_files(tmp_path / "elsewhere")) == [
        "a.png", "a_overlay.png", "b.png", "b_overlay.png", "itaclip-run.json"]
    assert digests(files) == before


def test_symlink_loops_in_folder_inputs(tmp_path, tiny_ckpt, capfd):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    write_rgb(photos / "sub" / "a.png", 20, 30)
    (photos / "sub" / "up").symlink_to("..")  # a loop
    (photos / "self").symlink_to("sub")
    (photos / "dangling.png").symlink_to("nowhere.png")
    (photos / "loop.png").symlink_to("loop.png")
    code, lines = run_cli(capfd, "segment", photos, "--recursive", "--out", tmp_path / "out",
                          "--weights", tiny_ckpt, "--classes", "cat, dog", *FAST)
    assert code == 0
    assert [p.relative_to(tmp_path / "out").as_posix() for p in visible_files(tmp_path / "out")] == [
        "itaclip-run.json", "sub/a.png", "sub/a_overlay.png"]
    # a link loop planted where an output goes is replaced by the output, never followed
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "a.png").symlink_to("a.png")
    (tmp_path / "out2" / "a_overlay.png").symlink_to(tmp_path / "elsewhere.png")
    code, lines = run_cli(capfd, "segment", photos / "sub" / "a.png", "--out", tmp_path / "out2",
                          "--weights", tiny_ckpt, "--classes", "cat, dog", *FAST)
    assert code == 0 and not (tmp_path / "elsewhere.png").exists()
    assert not (tmp_path / "out2" / "a.png").is_symlink() and read_png(tmp_path / "out2" / "a.png").shape == (20, 30)


def test_out_that_is_a_file_is_refused_before_computing(tmp_path, tiny_ckpt, capfd, monkeypatch):
    import itaclip.engine.predictor

    monkeypatch.setattr(itaclip.engine.predictor.Segmenter, "__init__", lambda *a, **k: pytest.fail("model loaded"))
    image = write_rgb(tmp_path / "a.png", 20, 30)
    (tmp_path / "file").write_text("x")
    code, lines = run_cli(capfd, "segment", image, "--out", tmp_path / "file", "--weights", tiny_ckpt,
                          "--classes", "cat, dog", *FAST)
    assert code == 2 and len(lines) == 1 and "is a file" in lines[0]
    code, lines = run_cli(capfd, "segment", image, "--out", tmp_path / "file" / "sub", "--weights", tiny_ckpt,
                          "--classes", "cat, dog", *FAST)
    assert code == 2 and len(lines) == 1 and "cannot write to output folder" in lines[0]


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_found_up_front(small_disk, tmp_path, tiny_ckpt, capfd, monkeypatch):
    import itaclip.engine.predictor

    monkeypatch.setattr(itaclip.engine.predictor.Segmenter, "__init__", lambda *a, **k: pytest.fail("model loaded"))
    image = write_rgb(tmp_path / "a.png", 20, 30)
    code, lines = run_cli(capfd, "segment", image, "--out", small_disk / "out", "--weights", tiny_ckpt,
                          "--classes", "cat, dog", *FAST)
    assert code == 2 and len(lines) == 1 and "MiB free" in lines[0], lines
    (small_disk / "filler").write_bytes(b"\0" * (4 * 2**20 - 8192))  # now completely full
    code, lines = run_cli(capfd, "segment", image, "--out", small_disk / "out2", "--weights", tiny_ckpt,
                          "--classes", "cat, dog", *FAST)
    assert code == 2 and len(lines) == 1 and "output folder" in lines[0], lines


def test_disk_full_while_writing_loses_nothing_finished(small_disk, tmp_path):
    """Writes that fail for lack of space leave no partial file and the older files intact."""
    from itaclip.engine.files import write_png

    write_png(small_disk / "first.png", np.zeros((20, 20), np.uint8))
    noise = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)  # ~12 MB PNG
    with pytest.raises(OSError):
        write_png(small_disk / "second.png", noise)
    assert sorted(p.name for p in small_disk.iterdir()) == ["first.png"]
    assert cv2.imread(str(small_disk / "first.png")) is not None


# ----------------------------------------------------------------------------------- class names

HOSTILE_NAMES = [
    "x" * 300,
    "../../etc/passwd",
    "a/b\\c",
    "\ufeffcat",
    "cat\u2028dog",
    "line\x85break",
    "form\x0cfeed",
    "tab\tbed",
    "quote\" <tag> & 'apos'",
    "猫 ネコ",
    " ".join(["word"] * 100),  # > 77 tokens
    "..",
    "x" * 300 + "y",  # same file-safe prefix as the first
]


def test_hostile_class_names_through_every_export(tmp_path):
    from pycocotools import mask as mask_utils

    from itaclip.outputs.exports import write_exports

    names = ["background", *HOSTILE_NAMES]
    labels = (np.arange(20 * 28).reshape(20, 28) % len(names)).astype(np.uint8)
    probs = np.random.default_rng(0).random((len(names), 20, 28)).astype(np.float32)
    probs[1] = np.nan  # a NaN probability never reaches JSON
    paths = write_exports(labels, names, "img", tmp_path, ["coco", "labelstudio", "masks"], probs=probs)
    coco = json.loads(paths["coco"].read_text(encoding="utf-8"))
    assert [c["name"] for c in coco["categories"]] == names
    for annotation in coco["annotations"]:
        c = annotation["category_id"] - 1
        assert (mask_utils.decode(annotation["segmentation"]) == (labels == c)).all()
        assert ("score" in annotation) == (c != 1)
    task = json.loads(paths["labelstudio"].read_text(encoding="utf-8"))
    assert sorted(r["value"]["brushlabels"][0] for r in task[0]["predictions"][0]["result"]) == sorted(names)
    masks = sorted(paths["masks"].iterdir())
    assert len(masks) == len(names) and all(p.parent == paths["masks"] for p in masks)
    assert all(len(p.name.encode()) <= 80 for p in masks)
    for p in masks:
        index = int(p.name.split("_")[0])
        assert (read_png(p) == np.where(labels == index, 255, 0)).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.coco.json", "img.labelstudio.json", "img_masks"]


def test_hostile_class_file_through_the_cli(tmp_path, tiny_ckpt, capfd):
    lines_in = [name.replace("\n", " ") for name in HOSTILE_NAMES if name.strip("\ufeff")]
    class_file = tmp_path / "classes.txt"
    class_file.write_bytes(("\ufeff" + "\r\n".join(lines_in) + "\n").encode("utf-8"))
    image = write_rgb(tmp_path / "a.png", 24, 32)
    code, lines = run_cli(capfd, "segment", image, "--out", tmp_path / "out", "--weights", tiny_ckpt,
                          "--classes", class_file, "--export", "coco,labelstudio,masks", *FAST)
    assert code == 0, lines
    warnings_ = [line for line in lines if ": warning: " in line]
    assert len(warnings_) == 1 and "77-token context" in warnings_[0]
    coco = json.loads((tmp_path / "out" / "a.coco.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in coco["categories"]] == [n.strip() for n in lines_in]
    assert_complete(tmp_path / "out")


def test_class_files_split_on_newlines_only_and_lose_the_bom(tmp_path):
    from itaclip.engine.vocabulary import load_aux_texts, load_classes

    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffcat\r\ndog\x0cpuppy\nsky\x85cloud\u2028air\nsea\x0bwater\x1cwave\n\n".encode("utf-8"))
    vocab = load_classes(path)
    assert vocab.names == ["cat", "dog\x0cpuppy", "sky\x85cloud\u2028air", "sea\x0bwater\x1cwave"]
    aux = tmp_path / "aux.txt"
    aux.write_bytes("\ufeffcat >=a pet\x0cthat purrs\r\ndog >=a pet\n".encode("utf-8"))
    assert load_aux_texts(aux) == ["a pet\x0cthat purrs", "a pet"]


def test_class_names_that_are_not_text_are_refused():
    from itaclip.engine.vocabulary import resolve_vocabulary

    with pytest.raises(ItaclipError, match="not valid UTF-8"):
        resolve_vocabulary(os.fsdecode(b"caf\xe9, dog"))


def test_long_class_names_are_accepted_and_cut(tiny_ckpt):
    """A name beyond CLIP's context is encoded cut, as the tokenizer cuts auxiliary texts: its
    features are those of its first 77 tokens."""
    from itaclip.engine.predictor import Segmenter

    seg = Segmenter(weights=tiny_ckpt, device="cpu", text_cache=False)
    long = " ".join(["dog"] * 120)
    with pytest.warns(UserWarning, match="77-token context"):
        cut = seg.set_vocabulary(["cat", long])
    assert cut.names[1] == long
    features = seg.text_features.clone()
    with pytest.warns(UserWarning):
        seg.set_vocabulary(["cat", " ".join(["dog"] * 140)])  # differs only after the cut
    torch.testing.assert_close(seg.text_features, features, rtol=0, atol=0)


# -------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("flag", ["--logit-scale", "--alpha", "--lambda", "--prob-thd", "--area-thd"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_floats_are_refused(flag, value, tmp_path, capfd):
    code, lines = run_cli(capfd, "segment", tmp_path / "a.png", "--out", tmp_path / "out", "--classes",
                          "cat, dog", f"{flag}={value}")
    assert code == 2 and len(lines) == 1 and "must be" in lines[0], lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--port", "99999"], "a port is a number from 0 to 65535"),
    (["--port", "-1"], "a port is a number from 0 to 65535"),
    (["--max-pixels", "nan"], "finite number of pixels"),
    (["--max-pixels", "inf"], "finite number of pixels"),
    (["--max-pixels", "0"], "finite number of pixels"),
])
def test_demo_bad_server_values_are_argument_errors(argv, message, capfd):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *argv])
    assert exit_info.value.code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and message in err.splitlines()[-1]


@pytest.mark.parametrize("host", ["256.1.1.1", "no such host.invalid", "8.8.8.8"])
def test_demo_bad_host_is_one_line(host, capfd):
    code, lines = run_cli(capfd, "demo", "--host", host, "--weights", "nowhere.pt")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("itaclip demo: error: "), lines


def test_demo_refuses_bombs_and_too_many_names(tmp_path):
    from types import SimpleNamespace

    from itaclip.demo import MAX_NAMES, DemoEngine

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())
    with pytest.raises(ItaclipError, match="decompression bomb"):
        DemoEngine.load_image(SimpleNamespace(max_pixels=4_000_000), bomb)
    engine = SimpleNamespace(preset="default", method="itaclip", max_pixels=4_000_000)
    image = write_rgb(tmp_path / "a.png", 20, 30)
    names = ", ".join(f"thing {i}" for i in range(MAX_NAMES + 1))
    with pytest.raises(ItaclipError, match=f"at most {MAX_NAMES}"):
        DemoEngine.segment(engine, image, names)


def test_demo_upload_of_a_bomb_is_named_and_not_traced(tmp_path, caplog):
    gr = pytest.importorskip("gradio")
    from gradio.data_classes import FileData

    from itaclip.demo import _plain_errors_on_bad_upload

    bomb = tmp_path / "bomb.gif"
    bomb.write_bytes(gif_bomb())
    component = gr.Image(type="filepath", image_mode=None)
    _plain_errors_on_bad_upload(component)
    with pytest.raises(gr.Error) as error:
        component.preprocess(FileData(path=str(bomb), orig_name="bomb.gif"))
    assert "decompression bomb" in str(error.value) and error.value.print_exception is False
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]


# ------------------------------------------------------------------------------------ processes


def _cli_process(*argv, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "itaclip.cli", *map(str, argv)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.8, 1.5])
def test_ctrl_c_during_imports(delay, tmp_path, tiny_ckpt):
    image = write_rgb(tmp_path / "a.png", 20, 30)
    process = _cli_process("segment", image, "--out", tmp_path / "out", "--weights", tiny_ckpt,
                           "--classes", "cat, dog", *FAST)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err
    if process.returncode != 0:  # it may have finished first on a fast machine
        assert process.returncode in (130, -signal.SIGINT), (process.returncode, err)
        assert len([line for line in err.splitlines() if "interrupted" in line]) <= 1


@pytest.mark.timeout(600)  # heavier than the suite's default
def test_sigkill_during_writes_leaves_only_whole_files(tmp_path, tiny_ckpt):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        write_rgb(photos / f"p{i:02}.png", 40, 60, seed=i)
    args = ["segment", photos, "--weights", tiny_ckpt, "--classes", "cat, dog, sky", "--save-probs",
            "--export", "coco,labelstudio,masks", *FAST]
    out = tmp_path / "out"
    for delay in (6.0, 9.0):
        process = _cli_process(*args, "--out", out)
        deadline = time.time() + delay + 60
        while time.time() < deadline and not (out / "p00.png").exists():  # wait for the model to load
            time.sleep(0.05)
        time.sleep(np.random.default_rng(int(delay)).uniform(0.0, 0.3))
        process.kill()
        process.communicate()
        assert_complete(out)
        for label in out.glob("p??.png"):  # the label map is written last: the rest is there
            for suffix in ("_overlay.png", ".npz", ".coco.json", ".labelstudio.json"):
                assert (out / f"{label.stem}{suffix}").is_file()
    process = _cli_process(*args, "--out", out)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0 and "Traceback" not in err, err
    clean = _cli_process(*args, "--out", tmp_path / "clean")
    assert clean.wait(timeout=300) == 0
    for label in (tmp_path / "clean").glob("p??.png"):
        assert (read_png(out / label.name) == read_png(label)).all()
        assert visible_files(out / f"{label.stem}_masks") == [  # a killed write may leave a hidden .tmp
            out / p.relative_to(tmp_path / "clean") for p in visible_files(tmp_path / "clean" / f"{label.stem}_masks")]


def _write_masks_repeatedly(folder: str, labels: np.ndarray, names: list[str], rounds: int, failures) -> None:
    from itaclip.outputs.exports import write_exports

    for _ in range(rounds):
        try:
            write_exports(labels, names, "img", folder, ["masks"])
        except Exception as exc:  # noqa: BLE001 - counted: the test wants none
            failures.append(repr(exc))


def test_concurrent_writers_of_one_masks_folder(tmp_path):
    import multiprocessing

    names = ["background", "cat", "dog", "sky"]
    labels = (np.arange(30 * 40).reshape(30, 40) % 4).astype(np.uint8)
    context = multiprocessing.get_context("fork")
    manager = context.Manager()
    failures = manager.list()
    writers = [context.Process(target=_write_masks_repeatedly, args=(str(tmp_path), labels, names, 150, failures))
               for _ in range(2)]
    for writer in writers:
        writer.start()
    vanished = 0
    folder = tmp_path / "img_masks"
    while any(w.is_alive() for w in writers):  # a reader never finds the folder missing once it exists
        if folder.exists() or vanished:
            vanished += not folder.is_dir()
    for writer in writers:
        writer.join()
    assert list(failures) == [] and vanished == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img_masks"]
    assert sorted(p.name for p in folder.iterdir()) == ["0_background.png", "1_cat.png", "2_dog.png", "3_sky.png"]


def test_rewritten_masks_folder_drops_classes_no_longer_present(tmp_path):
    from itaclip.outputs.exports import write_exports

    names = ["background", "cat", "dog"]
    write_exports(np.array([[0, 1], [2, 2]], np.uint8), names, "img", tmp_path, ["masks"])
    write_exports(np.array([[0, 0], [2, 2]], np.uint8), names, "img", tmp_path, ["masks"])
    assert sorted(p.name for p in (tmp_path / "img_masks").iterdir()) == ["0_background.png", "2_dog.png"]


def test_export_failure_keeps_the_label_map(tmp_path, monkeypatch, random_image):
    from itaclip.engine.predictor import SegmentationResult
    from itaclip.outputs import writer

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_exports", broken)
    result = SegmentationResult(np.zeros(random_image.shape[:2], np.uint8),
                                np.zeros((2, *random_image.shape[:2]), np.float32), ["a", "b"])
    options = writer.OutputOptions(exports=("coco",))
    with pytest.raises(ItaclipError, match="export failed .*No space left on device.*label map was written"):
        writer.write_outputs(tmp_path, "img", random_image, result, options)
    assert (tmp_path / "img.png").is_file() and (tmp_path / "img_overlay.png").is_file()
    assert not writer.is_done(tmp_path, "img", options)  # the export is retried on the next run


# ----------------------------------------------------------------------------------- code in files


class _Payload:
    """Pickles to a call of ``Path.touch(marker)``: loading it must never run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_as_cache_entry_is_not_executed(tmp_path):
    from itaclip.engine import feature_cache

    marker = tmp_path / "executed"
    cache = feature_cache.FeatureCache(tmp_path / "cache")
    key = cache.key(texts=["cat"])
    payload = pickle.dumps(_Payload(marker))
    buffer = io.BytesIO()
    torch.save({"x": _Payload(marker)}, buffer)
    for body in (payload, buffer.getvalue()):
        entry = feature_cache._MAGIC + feature_cache._HEADER.pack(len(body), hashlib.sha256(body).digest()) + body
        cache.path(key).parent.mkdir(parents=True, exist_ok=True)
        cache.path(key).write_bytes(entry)  # a valid header and checksum: only the load can refuse it
        with pytest.warns(UserWarning, match="corrupt"):
            assert cache.get(key) is None
        assert not marker.exists()


def test_malicious_pickle_as_weights_is_not_executed(tmp_path, capfd):
    marker = tmp_path / "executed"
    weights = tmp_path / "evil.pt"
    torch.save({"visual.conv1.weight": _Payload(marker)}, weights)
    image = write_rgb(tmp_path / "a.png", 20, 30)
    code, lines = run_cli(capfd, "segment", image, "--out", tmp_path / "out", "--weights", weights,
                          "--classes", "cat, dog", "--device", "cpu")
    assert code == 2 and not marker.exists()
    assert len(lines) == 1 and "cannot load weights" in lines[0]


# ---------------------------------------------------------------------------------- bounded memory


def test_banded_pamr_and_probabilities_equal_the_whole_computation(monkeypatch):
    """Row bands (with a halo of the largest dilation) give the affinities, refinement and
    probabilities of one pass within float rounding (PyTorch's vectorised exp and its scalar tail
    may differ in the last bit, and which pixels form the tail depends on the band), and match the
    plainly written reference."""
    import naive_reference as ref
    from itaclip.engine import postprocess
    from itaclip.engine.refine import pamr

    generator = torch.Generator().manual_seed(0)
    guide = torch.rand(3, 61, 47, generator=generator)
    logits = torch.randn(5, 61, 47, generator=generator)
    whole_affinity = pamr.pamr_affinity(guide, (3, 7))
    whole = pamr.pamr(guide, logits, 4, (3, 7))
    query_class = [0, 0, 1, 2, 2]
    whole_probs = postprocess.class_probabilities(whole, query_class, 30.0)
    monkeypatch.setattr(pamr, "AFFINITY_BAND_PIXELS", 47 * 5)  # 5-row bands, halo 7
    monkeypatch.setattr(pamr, "CHUNK_ELEMENTS", 1)  # one channel at a time, in place
    monkeypatch.setattr(postprocess, "BAND_PIXELS", 47 * 4)
    exact = dict(atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(pamr.pamr_affinity(guide, (3, 7)), whole_affinity, **exact)
    banded = pamr.pamr(guide, logits.clone(), 4, (3, 7), inplace=True)
    torch.testing.assert_close(banded, whole, **exact)
    torch.testing.assert_close(postprocess.class_probabilities(banded, query_class, 30.0), whole_probs, **exact)
    torch.testing.assert_close(banded, ref.reference_pamr(guide, logits, 4, (3, 7)), atol=1e-5, rtol=1e-5)
    ref_probs, _ = ref.reference_postprocess(ref.reference_pamr(guide, logits, 4, (3, 7)), query_class,
                                             logit_scale=30.0, closing=False)
    torch.testing.assert_close(whole_probs, torch.from_numpy(ref_probs), atol=1e-5, rtol=1e-5)


def test_engine_with_bands_equals_engine_without(tiny_ckpt, monkeypatch):
    from itaclip.engine import postprocess
    from itaclip.engine.predictor import Segmenter
    from itaclip.engine.refine import pamr

    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    seg = Segmenter(weights=tiny_ckpt, device="cpu", text_cache=False, short_side=64, crop=64, stride=32,
                    pamr_steps=3, area_thd=0.1)
    seg.set_vocabulary(["cat", "dog, puppy", "sky"], background="wall, floor")
    whole = seg.segment(image)
    monkeypatch.setattr(pamr, "AFFINITY_BAND_PIXELS", 90 * 7)
    monkeypatch.setattr(pamr, "CHUNK_ELEMENTS", 90 * 70 * 2)
    monkeypatch.setattr(postprocess, "BAND_PIXELS", 90 * 3)
    banded = seg.segment(image)
    np.testing.assert_allclose(banded.probs, whole.probs, atol=1e-6, rtol=0)
    assert np.array_equal(banded.labels, whole.labels)


_MEMORY_SCRIPT = """
import resource, sys, numpy as np, itaclip
seg = itaclip.Segmenter(weights=sys.argv[1], device="cpu", text_cache=False, short_side=64, crop=64,
                        stride=64, image_engineering=False, pamr_steps=1)
seg.set_vocabulary(["cat", "dog"])
image = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
seg.segment(image[:64, :64])  # warm up: allocator pools, lazy imports
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
seg.segment(image)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_peak_memory_is_bounded(tiny_ckpt):
    """docs/BENCHMARKS.md: segmenting an image adds at most about (4·(Q + C) + 100) bytes per pixel
    plus 160 MiB of bands to the process (Q names, C classes); here Q = C = 2 and 3 megapixels."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(tiny_ckpt)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    increase = float(done.stdout.split()[-1])
    assert increase < (4 * (2 + 2) + 100) * 1500 * 2000 + 160 * 2**20, increase / 2**20


def test_threads_of_one_segmenter_stay_consistent(tiny_ckpt):
    """Concurrent calls on one Segmenter (the demo serialises them; library users may not) give the
    same result as sequential ones."""
    from itaclip.engine.predictor import Segmenter

    seg = Segmenter(weights=tiny_ckpt, device="cpu", text_cache=False, **dict(short_side=32, crop=32, stride=32,
                    image_engineering=False, pamr_steps=1))
    seg.set_vocabulary(["cat", "dog"])
    images = [np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8) for i in range(4)]
    expected = [seg.segment(im).labels for im in images]
    results = [None] * 4

    def work(i):
        results[i] = seg.segment(images[i]).labels

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(results, expected))


def test_names_cvat_and_file_systems_dislike_export_on_every_run(tmp_path, tiny_ckpt, capfd):
    """A Latin-1 name, a newline in a name and a name near the file-name limit: every export of every
    image is written on the first run (no traceback, no half-made cvat/), and a rerun has nothing to do."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = [os.fsdecode(b"caf\xe9.png"), "new\nline.png", "a" * 240 + ".png", "ok.png"]
    for seed, name in enumerate(names):
        write_rgb(inputs / name, 30, 40, seed)
    out = tmp_path / "out"
    args = ["segment", str(inputs), "--out", str(out), "--weights", str(tiny_ckpt), "--classes", "cat, dog",
            "--no-overlay", "--export", "coco,labelstudio,cvat,masks", *FAST]
    assert main(args) == 0
    assert main(args) == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "error" not in err and "0 done, 4 skipped, 0 failed" in err, err
    stems = [Path(name).stem for name in names]
    coco = json.loads((out / "coco.json").read_text(encoding="utf-8"))
    assert len(coco["images"]) == 4 and len(json.loads((out / "tasks.json").read_text(encoding="utf-8"))) == 4
    cvat = out / "cvat"
    listed = (cvat / "ImageSets" / "Segmentation" / "default.txt").read_text(encoding="utf-8").split("\n")
    assert listed[-1] == "" and sorted(listed[:-1]) == sorted(["caf%E9", "new%0Aline", "a" * 240, "ok"])
    assert (cvat / "labelmap.txt").is_file()
    for item in listed[:-1]:  # each listed item has its mask, equal to the run's label map
        stem = stems[["caf%E9", "new%0Aline", "a" * 240, "ok"].index(item)]
        np.testing.assert_array_equal(read_png(cvat / "SegmentationClass" / f"{item}.png"),
                                      read_png(out / f"{stem}.png"))
    long_exports = [p for p in out.iterdir() if p.name.startswith("a" * 100)]
    assert len(long_exports) == 4  # label map, coco, labelstudio, masks folder
    assert all(len(os.fsencode(p.name)) <= 255 for p in long_exports)
