"""ProxyCLIP and CorrCLIP from the command line: ``segment`` writes the map the labels are taken from
(``--save-probs``; CorrCLIP: before the region vote) equal to the Python API's and to the naive
reference's, region maps from files (one bad or missing file fails its image only), the flags'
one-line errors, the run manifest, and ``eval`` with the authors' per-dataset mask folders."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

import naive_guided as guided
from helpers.exactness import PROB_ATOL, assert_labels_match
from helpers.guided import engine_dino_forward, regions_for
from helpers.images import make_smooth_image

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("single_thread")]

itaclip = pytest.importorskip("itaclip")
from itaclip.cli import main  # noqa: E402

CLASSES = "cat, dog, sky"
WINDOWS = ["--short-side", "168", "--crop", "168", "--stride", "112", "--device", "cpu"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three photos (a.png, b.png, c.png) and their region maps."""
    folder = tmp_path_factory.mktemp("photos")
    shapes = {"a": (60, 80), "b": (72, 64), "c": (50, 90)}
    regions = {}
    for seed, (name, shape) in enumerate(shapes.items()):
        cv2.imwrite(str(folder / f"{name}.png"), make_smooth_image(*shape, seed=seed)[:, :, ::-1])
        regions[name] = regions_for(*shape, seed=seed)
    return folder, regions


def read_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def api_segmenter(method, tiny_ckpt, dino_ckpt, **options):
    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", method=method, guide_weights=str(dino_ckpt),
                            short_side=168, crop=168, stride=112, **options)
    seg.set_vocabulary(CLASSES)
    return seg


def test_proxyclip_segment_equals_the_api_and_the_reference(tmp_path, images, tiny_ckpt, dino_ckpt, tiny_state,
                                                             monkeypatch):
    folder, _ = images
    out = tmp_path / "out"
    assert main(["segment", str(folder / "a.png"), "--method", "proxyclip", "--guide-weights", str(dino_ckpt),
                 "--weights", str(tiny_ckpt), "--classes", CLASSES, "--save-probs", "--out", str(out),
                 "--proxy-beta", "1.1", "--proxy-gamma", "2.5", *WINDOWS]) == 0
    probs = np.load(out / "a.npz")["probs"]
    labels = np.asarray(Image.open(out / "a.png"))
    seg = api_segmenter("proxyclip", tiny_ckpt, dino_ckpt, proxy_beta=1.1, proxy_gamma=2.5)
    api = seg.segment(str(folder / "a.png"))
    np.testing.assert_allclose(probs, api.probs, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(labels, api.labels)
    monkeypatch.setattr(guided, "reference_dino_forward", engine_dino_forward(seg.encoder.dino))
    ref_probs, ref_labels = guided.reference_segment(
        tiny_state, read_rgb(folder / "a.png"), [("cat",), ("dog",), ("sky",)], False, method="proxyclip",
        guide_state=str(dino_ckpt), short_side=168, crop=168, stride=112, proxy_beta=1.1, proxy_gamma=2.5)
    np.testing.assert_allclose(probs, ref_probs, atol=PROB_ATOL, rtol=0)
    assert_labels_match(labels, ref_labels, ref_probs, closing=False)
    manifest = json.loads((out / "itaclip-run.json").read_text())
    config = manifest["settings"]["config"]
    assert (config["method"], config["proxy_beta"], config["proxy_gamma"]) == ("proxyclip", 1.1, 2.5)
    assert config["guide_weights"].startswith("sha256:") and "regions" not in manifest["settings"]


def test_corrclip_segment_with_region_files(tmp_path, images, tiny_ckpt, dino_ckpt, tiny_state, monkeypatch,
                                             capsys):
    """a: an .npz with ``instance_mask``; b: a 16-bit label PNG; c: no file — c fails alone. The saved
    probabilities are the map before the vote; the labels after it."""
    folder, regions = images
    masks = tmp_path / "masks"
    masks.mkdir()
    np.savez(masks / "a.npz", instance_mask=regions["a"])
    cv2.imwrite(str(masks / "b.png"), regions["b"].astype(np.uint16))
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "--method", "corrclip", "--guide-weights", str(dino_ckpt), "--weights",
               str(tiny_ckpt), "--classes", CLASSES, "--save-probs", "--regions", str(masks), "--out", str(out),
               *WINDOWS])
    err = capsys.readouterr().err
    assert rc == 1 and "no region map for c.png" in err and "2 done, 0 skipped, 1 failed" in err
    seg = api_segmenter("corrclip", tiny_ckpt, dino_ckpt)
    monkeypatch.setattr(guided, "reference_dino_forward", engine_dino_forward(seg.encoder.dino))
    for name in ("a", "b"):
        probs = np.load(out / f"{name}.npz")["probs"]
        labels = np.asarray(Image.open(out / f"{name}.png"))
        api = seg.segment(str(folder / f"{name}.png"), regions=regions[name])
        np.testing.assert_allclose(probs, api.probs, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(labels, api.labels)
        ref_probs, ref_labels = guided.reference_segment(
            tiny_state, read_rgb(folder / f"{name}.png"), [("cat",), ("dog",), ("sky",)], False, method="corrclip",
            guide_state=str(dino_ckpt), regions=regions[name], short_side=168, crop=168, stride=112)
        np.testing.assert_allclose(probs, ref_probs, atol=PROB_ATOL, rtol=0)
        assert_labels_match(labels, ref_labels, ref_probs, closing=False)
        assert (ref_probs.argmax(0) != ref_labels).any()  # the vote changed labels: the map is from before it
    assert not (out / "c.png").exists()
    manifest = json.loads((out / "itaclip-run.json").read_text())
    assert manifest["settings"]["regions"] == {"source": "files", "folder": str(masks.resolve())}


def test_a_wrong_size_region_file_fails_its_image_only(tmp_path, images, tiny_ckpt, dino_ckpt, capsys):
    folder, regions = images
    masks = tmp_path / "masks"
    masks.mkdir()
    np.savez(masks / "a.npz", instance_mask=regions["a"][:, :-1])
    np.savez(masks / "b.npz", instance_mask=regions["b"])
    np.savez(masks / "c.npz", instance_mask=regions["c"] + 10000)
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "--method", "corrclip", "--guide-weights", str(dino_ckpt), "--weights",
               str(tiny_ckpt), "--classes", CLASSES, "--regions", str(masks), "--out", str(out), *WINDOWS])
    err = capsys.readouterr().err
    assert rc == 1 and "1 done, 0 skipped, 2 failed" in err and "Traceback" not in err
    assert (out / "b.png").exists()


@pytest.mark.parametrize("flags, message", [
    (["--method", "corrclip", "--crop", "0"], "crop 0 .*does not apply to method 'corrclip'"),
    (["--regions", "."], "apply to methods that read region maps \\(corrclip\\), not itaclip"),
    (["--method", "proxyclip", "--region-generator", "sam"], "not proxyclip"),
    (["--method", "corrclip", "--regions", ".", "--region-generator", "sam2"], "not both"),
    (["--method", "corrclip", "--region-generator", "none"], "needs --regions DIR"),
    (["--method", "corrclip", "--regions", "no-such-folder"], "region folder .*no-such-folder does not exist"),
    (["--method", "naclip", "--proxy-beta", "2"], "ProxyCLIP's proxy attention"),
    (["--method", "proxyclip", "--guide-weights", "dino_vitl8"], "unknown guide weights 'dino_vitl8'"),
])
def test_flag_errors_are_one_line(tmp_path, images, tiny_ckpt, capsys, flags, message):
    import re

    folder, _ = images
    rc = main(["segment", str(folder / "a.png"), "--classes", CLASSES, "--out", str(tmp_path / "o"), "--weights",
               str(tiny_ckpt), "--device", "cpu", *flags])
    err = capsys.readouterr().err
    assert rc != 0 and re.search(message, err), err
    assert "Traceback" not in err


def test_corrclip_generates_regions_by_default(tmp_path, images, tiny_ckpt, dino_ckpt, monkeypatch, capsys):
    """With neither --regions nor a generator named, corrclip asks for SAM2 (CorrCLIP's online option);
    the region source is built once, after the model."""
    from itaclip.engine import regions as regions_package

    built = []

    class Stripes:
        identity = {"source": "test"}
        description = "striped test regions"

        def __call__(self, image, name=None):
            height, width = np.asarray(image).shape[:2]
            return (np.arange(width)[None, :] // 20).repeat(height, axis=0)

    def fake_source(regions_dir=None, generator=None, weights=None, device=None, **kwargs):
        built.append((regions_dir, generator, weights))
        return Stripes()

    monkeypatch.setattr(regions_package, "region_source", fake_source)
    folder, _ = images
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--method", "corrclip", "--guide-weights", str(dino_ckpt), "--weights",
                 str(tiny_ckpt), "--classes", CLASSES, "--out", str(out), *WINDOWS]) == 0
    assert built == [(None, "sam2", None)]
    assert "striped test regions" in capsys.readouterr().err
    manifest = json.loads((out / "itaclip-run.json").read_text())
    assert manifest["settings"]["regions"] == {"source": "generated", "generator": "sam2",
                                               "weights": "facebook/sam2.1-hiera-large"}


def test_eval_corrclip_with_the_authors_mask_folder(tmp_path, tiny_ckpt, dino_ckpt, capsys):
    """``eval --method corrclip --regions DIR``: the maps are found by image stem (the authors' flat
    per-dataset folders); an image without one is skipped and counted, the others evaluated."""
    from helpers.datasets import build_for
    from helpers.eval_cli import results_of

    root, stored = build_for("voc20", tmp_path / "data", n=3)
    masks = tmp_path / "region_masks" / "voc"
    masks.mkdir(parents=True)
    from itaclip.datasets import load_dataset

    samples = load_dataset("voc20", tmp_path / "data").samples
    for sample in samples[:2]:
        height, width = read_rgb(sample.image).shape[:2]
        np.savez(masks / f"{sample.image.stem}.npz", instance_mask=regions_for(height, width, seed=1))
    out = tmp_path / "out"
    rc = main(["eval", "--method", "corrclip", "--dataset", "voc20", "--data-root", str(tmp_path / "data"),
               "--weights", str(tiny_ckpt), "--guide-weights", str(dino_ckpt), "--regions", str(masks), "--out",
               str(out), "--short-side", "112", "--crop", "112", "--stride", "112", "--device", "cpu",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "1 unreadable image(s) skipped" in err and f"no region map for {samples[2].image.name}" in err
    (result,) = results_of(out, "voc20")
    assert result["images_evaluated"] == 2 and result["images_skipped"] == 1
    settings = result["settings"]
    assert settings["regions"] == {"source": "files", "folder": str(masks.resolve())}
    assert settings["config"]["method"] == "corrclip" and settings["config"]["guide_weights"].startswith("sha256:")


def test_presets_command_names_corrclips_weights(capsys):
    assert main(["presets", "voc21", "--method", "corrclip"]) == 0
    text = capsys.readouterr().out
    assert "weights              ViT-B-16-quickgelu:metaclip_fullcc (when --weights is not given)" in text
    assert "guide_weights        dino_vitb8" in text and "proxy_beta" not in text
    assert "corrclip_voc21: 21 classes, 46 names, class 0 = background set of 26 words" in text
    assert main(["presets", "voc21", "--method", "proxyclip"]) == 0
    text = capsys.readouterr().out
    assert "  weights " not in text and "proxy_beta           1.2" in text
