"""SC-CLIP, SFP, PEARL and ResCLIP through ``itaclip segment``: their flags, the ``--save-probs`` map and
the labels equal to the naive reference (tests/naive_frontier.py), and wrong combinations as one line."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import itaclip
import naive_reference as ref
from helpers.cli import assert_segment_refuses
from helpers.exactness import assert_labels_match, frontier_maps, logit_tolerance
from helpers.images import make_smooth_image
from itaclip.cli import main, parse_args
from itaclip.cli.options import config_overrides
from itaclip.engine.methods import build_config

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("single_thread")]


def _config(*argv):
    args = parse_args(["segment", "x.png", "--out", "o", *argv])
    return build_config(args.preset, **config_overrides(args))


def test_new_flags_map_onto_the_config():
    resclip = _config("--method", "resclip", "--preset", "voc20", "--sfr-thd", "0.2", "--rcs-weights", "2,0.5",
                      "--sfr-weights", "2.1,0.6", "--no-entity-decay", "--gaussian-std", "3")
    assert (resclip.crop, resclip.sfr_thd, resclip.rcs_weights, resclip.sfr_weights) == (0, 0.2, (2.0, 0.5), (2.1, 0.6))
    assert (resclip.entity_decay, resclip.gaussian_std, resclip.pamr_steps) == (False, 3.0, 0)
    assert _config("--method", "resclip", "--preset", "cityscapes").rcs_weights == (2.0, 0.2)
    pearl = _config("--method", "pearl", "--no-tlp", "--kk-weight", "0.3", "--tlp-grid", "40")
    assert (pearl.tlp, pearl.kk_weight, pearl.tlp_grid) == (False, 0.3, 40)
    assert _config("--method", "pearl", "--preset", "cityscapes").tlp_grid == 224 and _config("--method", "pearl").tlp
    naclip = _config("--method", "naclip", "--tlp", "--sfr-thd", "0.3", "--rcs-weights", "1.5,0.4")
    assert (naclip.tlp, naclip.sfr_thd, naclip.sfr_weights, naclip.rcs_weights) == (True, 0.3, (1.8, 0.7), (1.5, 0.4))
    assert not _config("--method", "naclip").tlp  # off by default except for PEARL
    assert _config("--method", "scclip", "--res-cls", "0.2").res_cls == 0.2
    assert _config("--method", "scclip").res_cls is None  # the model's depth decides (0.3 on ViT-B)
    assert _config("--method", "sfp", "--preset", "ade20k").short_side == 384


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "smooth.png"
    cv2.imwrite(str(path), make_smooth_image(64, 88, seed=70)[:, :, ::-1])
    return path


CASES = {
    "scclip": ["--res-cls", "0.2", "--prob-thd", "0.3"],
    "sfp": ["--pamr-steps", "2"],
    "pearl": ["--kk-weight", "0.2", "--tlp-grid", "40"],
    "resclip": ["--sfr-thd", "0.3", "--rcs-weights", "2,0.4", "--sfr-weights", "2.1,0.6", "--no-entity-decay"],
}


@pytest.mark.parametrize("method", list(CASES))
def test_saved_probabilities_and_labels_equal_the_reference(tmp_path, image_file, tiny_ckpt, tiny_state, method):
    """Two 176×176 windows at stride 64 over the 176×242 resized image; the map ``--save-probs`` writes
    is the reference's (the one the argmax is taken of), the PNG its labels."""
    out = tmp_path / "out"
    options = ["--short-side", "176", "--crop", "176", "--stride", "66", "--device", "cpu", *CASES[method]]
    assert main(["segment", str(image_file), "--method", method, "--classes", "cat, dog, tree", "--out", str(out),
                 "--weights", str(tiny_ckpt), "--save-probs", *options]) == 0
    probs = np.load(out / "smooth.npz")["probs"]
    labels = np.asarray(Image.open(out / "smooth.png"))

    args = parse_args(["segment", str(image_file), "--out", str(out), "--method", method, *options])
    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False, **config_overrides(args))
    seg.set_vocabulary("cat, dog, tree")
    cfg = seg.config
    image = ref.reference_read_image(image_file)
    with torch.no_grad():
        maps = frontier_maps(tiny_state, image, seg.text_features, cfg)
    expected, expected_labels = ref.reference_postprocess(maps, list(seg.vocabulary.query_class),
                                                          logit_scale=cfg.logit_scale, prob_thd=cfg.prob_thd,
                                                          area_thd=cfg.area_thd, closing=cfg.closing)
    atol = logit_tolerance(cfg) * cfg.logit_scale / 2
    error = float(np.abs(probs - expected).max())
    assert error <= max(atol, 1e-5), error
    assert_labels_match(labels, expected_labels, expected, closing=cfg.closing, prob_thd=cfg.prob_thd,
                        tie_tol=max(1e-5, 2 * error))


@pytest.mark.parametrize("extra, message", [
    (["--method", "resclip", "--area-thd", "0.1"], "does not apply to method 'resclip'"),
    (["--method", "resclip", "--sfr-thd", "none"], "method 'resclip' needs --sfr-thd"),
    (["--method", "maskclip", "--sfr-thd", "0.3"], "method 'maskclip' cannot take them"),
    (["--method", "scclip", "--rcs-weights", "2,0.3"], "method 'scclip' cannot take them"),
    (["--method", "naclip", "--res-cls", "0.2"], "apply to methods 'scclip' and 'sfp', not 'naclip'"),
    (["--method", "sclip", "--kk-weight", "0.2"], "apply to method 'pearl', not 'sclip'"),
    (["--method", "naclip", "--rcs-weights", "2"], "expected two comma-separated numbers"),
])
def test_wrong_combinations_are_one_line_errors(tmp_path, image_file, tiny_ckpt, capsys, extra, message):
    assert_segment_refuses(capsys, tmp_path / "o", image_file, tiny_ckpt, extra, message,
                           by_argparse="expected two" in message)


def test_a_non_square_whole_image_with_scclip_fails_that_image_in_one_line(tmp_path, image_file, tiny_ckpt, capsys):
    """crop 0 on a 224×307 resized image: an anomaly token falls outside SC-CLIP's square placement."""
    code = main(["segment", str(image_file), "--classes", "cat, dog", "--out", str(tmp_path / "o"), "--method",
                 "scclip", "--crop", "0", "--short-side", "224", "--weights", str(tiny_ckpt), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "as if windows were square" in err and "Traceback" not in err


def test_eval_compare_of_the_new_methods(tmp_path, tiny_ckpt, capsys):
    """One evaluation per method with its authors' VOC21 setting and class list (SFP's "people"), in one
    table with the published figures of each record."""
    import json

    from helpers.datasets import build_for

    build_for("voc21", tmp_path / "data", n=1)
    out = tmp_path / "out"
    assert main(["eval", "--compare", "scclip,sfp,pearl,resclip", "--dataset", "voc21", "--data-root",
                 str(tmp_path / "data"), "--weights", str(tiny_ckpt), "--out", str(out), "--short-side", "224",
                 "--stride", "224", "--device", "cpu", "--no-progress"]) == 0
    table = (out / "compare_voc21.md").read_text()
    for title, figure in (("SC-CLIP", "64.6"), ("SFP", "56.8"), ("PEARL", "64.1"), ("ResCLIP", "61.1")):
        assert f"| {title} |" in table and f"| {figure}" in table
    runs = {json.loads(p.read_text())["settings"]["config"]["method"]: json.loads(p.read_text())["settings"]
            for p in out.glob("voc21-*/results.json")}
    assert set(runs) == {"scclip", "sfp", "pearl", "resclip"}
    assert ["people", "people in shirt"] == runs["sfp"]["vocabulary"]["classes"][15][:2]
    assert runs["pearl"]["config"]["tlp"] and runs["resclip"]["config"]["crop"] == 0
    assert "area_thd" in runs["scclip"]["config"] and runs["scclip"]["config"]["area_thd"] == 0.1
