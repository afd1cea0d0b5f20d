"""``--method`` on the command line: segment (flags, whole image, explicit "no area threshold",
saved probabilities equal to the Python API's), eval of one method, and the comparison table."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

import itaclip
from helpers.cli import assert_segment_refuses
from helpers.datasets import build_for
from itaclip.cli import main, parse_args
from itaclip.cli.options import config_overrides
from itaclip.engine.methods import build_config, get_method, list_methods

pytestmark = pytest.mark.usefixtures("single_thread", "cheap_text_features")


@pytest.fixture(scope="module")
def image_file(tmp_path_factory, smooth_image):
    path = tmp_path_factory.mktemp("images") / "smooth.png"
    cv2.imwrite(str(path), smooth_image[:, :, ::-1])
    return path


def test_method_flags_map_onto_the_config():
    args = parse_args(["segment", "x.png", "--out", "o", "--method", "naclip", "--preset", "voc21",
                       "--gaussian-std", "3", "--crop", "224", "--area-thd", "none"])
    cfg = build_config(args.preset, **config_overrides(args))
    assert (cfg.method, cfg.gaussian_std, cfg.crop, cfg.prob_thd, cfg.pamr_steps) == ("naclip", 3.0, 224, 0.1, 10)
    sclip = parse_args(["segment", "x.png", "--out", "o", "--method", "sclip", "--preset", "voc21",
                        "--area-thd", "none"])
    assert build_config(sclip.preset, **config_overrides(sclip)).area_thd is None  # the preset's 0.1 switched off
    assert build_config("voc21", method="sclip").area_thd == 0.1
    whole = parse_args(["segment", "x.png", "--out", "o", "--crop", "0", "--area-thd", "0.2"])
    assert (build_config(**config_overrides(whole)).crop, build_config(**config_overrides(whole)).area_thd) == (0, 0.2)


def test_segment_with_a_method_saves_the_probabilities_of_the_api(tmp_path, image_file, tiny_ckpt):
    """NACLIP on the whole image with σ 3: the saved map is the Python API's probabilities, and the
    labels are its argmax (no closing for the baselines)."""
    out = tmp_path / "out"
    options = ["--short-side", "160", "--crop", "0", "--pamr-steps", "2", "--gaussian-std", "3", "--device", "cpu"]
    assert main(["segment", str(image_file), "--method", "naclip", "--classes", "cat, dog, tree", "--out", str(out),
                 "--weights", str(tiny_ckpt), "--save-probs", *options]) == 0
    probs = np.load(out / "smooth.npz")["probs"]
    labels = np.asarray(Image.open(out / "smooth.png"))
    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", method="naclip", short_side=160, crop=0,
                            pamr_steps=2, gaussian_std=3.0)
    expected = seg.segment(str(image_file), classes="cat, dog, tree")
    np.testing.assert_allclose(probs, expected.probs, atol=1e-6, rtol=0)
    top2 = np.sort(probs, axis=0)[-2:]
    decided = top2[1] - top2[0] > 1e-6
    assert np.array_equal(labels[decided], probs.argmax(0)[decided])


@pytest.mark.parametrize("extra, message", [
    (["--method", "naclip", "--attention", "q-k"], "configure ITACLIP's last block"),
    (["--method", "sclip", "--keep-ffn"], "configure ITACLIP's last block"),
    (["--method", "clip", "--intermediate-layers", "7"], "configure ITACLIP's last block"),
    (["--method", "naclip", "--gaussian-std", "0"], "gaussian std must be > 0"),
    (["--method", "naclip", "--preset", "fast"], "unknown preset 'fast' for method 'naclip'"),
    (["--method", "segformer"], "invalid choice"),
    (["--area-thd", "small"], "expected a number or 'none'"),
])
def test_bad_method_options_are_one_line_errors(tmp_path, image_file, tiny_ckpt, capsys, extra, message):
    assert_segment_refuses(capsys, tmp_path / "o", image_file, tiny_ckpt, extra, message,
                           by_argparse=message in ("invalid choice", "expected a number or 'none'"))


FAST = ["--short-side", "224", "--stride", "224", "--pamr-steps", "1", "--device", "cpu", "--no-progress"]


def test_eval_one_method_uses_its_own_list(tmp_path, tiny_ckpt):
    build_for("voc21", tmp_path / "data", n=2)
    out = tmp_path / "out"
    assert main(["eval", "--method", "clearclip", "--dataset", "voc21", "--data-root", str(tmp_path / "data"),
                 "--weights", str(tiny_ckpt), "--out", str(out), *FAST]) == 0
    (result,) = [json.loads(p.read_text()) for p in out.glob("voc21-*/results.json")]
    assert result["complete"] and result["settings"]["config"]["method"] == "clearclip"
    assert result["settings"]["config"]["crop"] == 448 and result["settings"]["config"]["prob_thd"] == 0.5
    assert result["settings"]["vocabulary"]["classes"][0] == ["background"]  # ClearCLIP's single word


def test_eval_compare_writes_one_table(tmp_path, tiny_ckpt, capsys):
    build_for("voc21", tmp_path / "data", n=2)
    out = tmp_path / "out"
    assert main(["eval", "--compare", "sclip,naclip", "--dataset", "voc21", "--data-root", str(tmp_path / "data"),
                 "--weights", str(tiny_ckpt), "--out", str(out), *FAST]) == 0
    table = (out / "compare_voc21.md").read_text()
    assert "| SCLIP |" in table and "| 59.63 |" in table and "| NACLIP |" in table and "| 64.07 |" in table
    shared = next(line for line in table.splitlines() if line.startswith("Settings of ours: "))
    assert f"weights={tiny_ckpt}" in shared and "short_side=224" in shared and "device=cpu" in shared, shared
    sclip = next(line for line in table.splitlines() if line.startswith("- SCLIP: "))
    naclip = next(line for line in table.splitlines() if line.startswith("- NACLIP: "))
    assert "method=sclip" in sclip and "method=naclip" in naclip and "gaussian_std=" in naclip, table
    assert table in capsys.readouterr().out
    record = json.loads((out / "compare_voc21.json").read_text())
    assert [r["method"] for r in record["rows"]] == ["sclip", "naclip"]
    runs = {json.loads(p.read_text())["settings"]["config"]["method"] for p in out.glob("voc21-*/results.json")}
    assert runs == {"sclip", "naclip"}
    for bad, message in [(["--compare", "clip", "--method", "sclip"], "leave out --method"),
                         (["--compare", "clip", "--classes", "cat, dog"], "leave out --preset, --classes"),
                         (["--paper-table", "2", "--method", "naclip"], "ITACLIP's ablations")]:
        assert main(["eval", *bad, "--dataset", "voc21", "--data-root", str(tmp_path / "data"),
                     "--weights", str(tiny_ckpt), "--out", str(out), *FAST]) == 2
        assert message in capsys.readouterr().err


def test_demo_engine_runs_every_method_with_its_own_preset(tmp_path, image_file, tiny_ckpt):
    """The demo's method selector: each request may pick a method; empty classes under a dataset
    preset mean that method's own list; the result equals the Python API's."""
    from itaclip.demo import DemoEngine

    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False)
    # Short side 224: 224×224 windows (SC-CLIP and SFP place anomaly tokens as if windows were square).
    engine = DemoEngine(segmenter=seg, preset="default", overrides={"short_side": 224, "pamr_steps": 1},
                        work_dir=tmp_path / "w")
    for method in [name for name in list_methods() if not get_method(name).guide]:  # guided: test_guided_apps
        result = engine.segment(image_file, "cat, dog, tree", speed="fastest (stride 112)", method=method)
        expected = seg.for_method(method, "default", short_side=224, pamr_steps=1,
                                  **({"stride": 112} if method == "itaclip" else {}))
        np.testing.assert_array_equal(result.labels, expected.segment(str(image_file), "cat, dog, tree").labels)
    voc = engine.segment(image_file, "", preset="voc21", method="clearclip")
    assert len(voc.class_names) == 21 and voc.class_names[0] == "background"
    assert engine.config_for("voc21", "exact (stride 28)", "naclip").crop == 0  # NACLIP's VOC21: whole image
    with pytest.raises(itaclip.ItaclipError, match="for method 'sclip'"):
        engine.segment(image_file, "cat, dog", preset="fast", method="sclip")
    chosen = DemoEngine(segmenter=seg, overrides={"method": "naclip"}, work_dir=tmp_path / "w2")
    assert chosen.method == "naclip" and chosen.config_for("default", None).method == "naclip"
