"""Every method of the registry (itaclip.engine.methods: vanilla CLIP, MaskCLIP, SCLIP, ClearCLIP, NACLIP,
SC-CLIP, ResCLIP, SFP, PEARL) on the fast engine equals the naive references (tests/naive_reference.py,
tests/naive_frontier.py) within float rounding, stage by stage, for every method: sliding windows and
whole-image inference, windows with and without padding (sides that are not patch multiples, padded
asymmetrically), PAMR on and off, batch 1 and many, and ITACLIP's parts (views, λ, auxiliary texts, α)
combined with each method. tests/test_frontier_exact.py covers the newer methods' own options.

The comparison itself (text features, refined similarity maps, probabilities, labels with near-ties
excused) is tests/helpers/exactness.py's; the largest probability difference seen per method is printed at
the end of the module (``pytest -s``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import naive_frontier as nf
import naive_guided as guided
import naive_reference as ref
from helpers.exactness import (
    OPEN,
    OPEN_AUX,
    PROB_ATOL,
    SMALL,
    VOC_LIKE,
    VOC_LIKE_AUX,
    LargestDifferences,
    assert_labels_match,
    compare,
    frontier_maps,
    logit_tolerance,
)
from helpers.images import make_smooth_image

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("single_thread")]

itaclip = pytest.importorskip("itaclip")
from itaclip.engine.methods import METHODS, build_config, encoder_options, get_preset, list_methods  # noqa: E402
from itaclip.engine.methods.base import LastBlock, SelfCalibrated  # noqa: E402
from itaclip.engine.vocabulary import load_classes  # noqa: E402

#: The registered methods the plain references of the CLIP-only methods implement (naive_reference's
#: zoo and naive_frontier's), ITACLIP aside (test_engine_exact covers its options one by one); the
#: guided methods have their own exactness tests (test_guided_exact.py).
ZOO = [name for name in list_methods() if name != "itaclip" and name in nf.REFERENCE_METHODS]
#: Methods whose authors place anomaly tokens as if every window were square (SC-CLIP, SFP).
SQUARE_ONLY = [name for name in ZOO if isinstance(METHODS[name].encoder, SelfCalibrated)]
#: Every naive module (each lists the methods it implements in ``REFERENCE_METHODS``).
REFERENCE_MODULES = (nf, guided)


def test_every_method_has_a_naive_reference():
    """A method added to the registry is compared with a reference only once one implements it:
    say which are missing."""
    implemented = {name for module in REFERENCE_MODULES for name in module.REFERENCE_METHODS}
    missing = [name for name in list_methods() if name not in implemented]
    assert not missing, (f"methods without a naive reference: {', '.join(missing)} — write each plainly in "
                         "tests/naive_reference.py (LAST_BLOCKS), tests/naive_frontier.py or a naive module of its "
                         "own, listed in its REFERENCE_METHODS and in REFERENCE_MODULES here")

LARGEST = LargestDifferences("engine vs reference")


@pytest.fixture(scope="module", autouse=True)
def report_max_differences():
    yield
    LARGEST.report()


@pytest.fixture(scope="module")
def zoo(tiny_ckpt):
    """``zoo(method, preset=None, **overrides)`` → a Segmenter with the method's own defaults (and
    preset), sharing one loaded tiny model."""
    base = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False)
    return base.for_method


def check(seg, state, image, classes, has_background, aux_texts=None) -> dict:
    info = compare(seg, state, image, classes, has_background, aux_texts, reference=frontier_maps,
                   logit_atol=logit_tolerance(seg.config))
    LARGEST.record(seg.config.method, info["prob_err"])
    return info


# ------------------------------------------------------------------------------- engine vs reference


@pytest.mark.parametrize("pamr_steps", [0, 3])
@pytest.mark.parametrize("method", ZOO)
def test_sliding_windows(zoo, tiny_state, method, pamr_steps):
    """224 windows (patch multiples) at stride 112 over a 224×299 image: overlapping windows."""
    image = make_smooth_image(72, 96, seed=40)
    seg = zoo(method, short_side=224, crop=224, stride=112, pamr_steps=pamr_steps)
    check(seg, tiny_state, image, SMALL, False)


@pytest.mark.parametrize("method", ZOO)
def test_windows_not_patch_multiples(zoo, tiny_state, method):
    """205×205 windows (205 = 12·16 + 13): ClearCLIP's code base pads 1 pixel before and 2 after in
    both directions (maskclip, clearclip); the others drop the 13 leftover pixels."""
    image = make_smooth_image(72, 96, seed=41)
    seg = zoo(method, short_side=205, crop=205, stride=100, pamr_steps=2)
    check(seg, tiny_state, image, SMALL, False)


@pytest.mark.parametrize("pamr_steps", [0, 4])
@pytest.mark.parametrize("method", ZOO)
def test_whole_image(zoo, tiny_state, method, pamr_steps):
    """crop 0: the 151×201 resized image in one window (grid 9×12, positional table resampled;
    padded 4/5 rows and 3/4 columns for maskclip and clearclip); PAMR at the original size. SC-CLIP
    and SFP on a square image (151×151, grid 9×9): their outlier placement needs one."""
    image = make_smooth_image(72, 72 if method in SQUARE_ONLY else 96, seed=42)
    seg = zoo(method, short_side=151, crop=0, pamr_steps=pamr_steps)
    check(seg, tiny_state, image, SMALL, False)


@pytest.mark.parametrize("method", ZOO)
def test_batch_one_vs_many_with_views(zoo, tiny_state, method):
    """Windows × views batched 1 at a time and all at once give the reference's values, with
    ITACLIP's image engineering switched on (flips of asymmetrically padded windows included)."""
    image = make_smooth_image(60, 100, seed=43)
    options = dict(short_side=205, crop=205, stride=120, pamr_steps=2, image_engineering=True, lam=0.7)
    single, many = zoo(method, batch_size=1, **options), zoo(method, batch_size=64, **options)
    info = check(single, tiny_state, image, SMALL, False)
    check(many, tiny_state, image, SMALL, False)
    a, b = single.segment(image), many.segment(image)
    np.testing.assert_allclose(a.probs, b.probs, atol=2e-6, rtol=0)
    assert_labels_match(a.labels, b.labels, info["probs"], closing=False)


def test_naclip_with_itaclip_parts(zoo, tiny_state):
    """NACLIP + views (λ 0.6) + auxiliary texts (α 0.1) + a background set, prob_thd, σ 3."""
    image = make_smooth_image(70, 90, seed=44)
    seg = zoo("naclip", short_side=224, stride=112, pamr_steps=2, image_engineering=True,
              views=("grey", "hflip"), lam=0.6, alpha=0.1, gaussian_std=3.0, prob_thd=0.3)
    info = check(seg, tiny_state, image, VOC_LIKE, True, VOC_LIKE_AUX)
    assert len(np.unique(info["labels"])) >= 2


def test_sclip_voc_setting(zoo, tiny_state):
    """SCLIP's VOC21 rules (logit scale 65, prob_thd 0.1, area_thd 0.1) on a small vocabulary."""
    image = make_smooth_image(70, 90, seed=45)
    seg = zoo("sclip", "voc21", short_side=224)
    assert (seg.config.logit_scale, seg.config.prob_thd, seg.config.area_thd) == (65.0, 0.1, 0.1)
    check(seg, tiny_state, image, VOC_LIKE, True)


def test_clearclip_with_aux_texts_and_stride(zoo, tiny_state):
    image = make_smooth_image(70, 90, seed=46)
    seg = zoo("clearclip", short_side=224, crop=224, stride=56, alpha=0.2)
    check(seg, tiny_state, image, OPEN, False, OPEN_AUX)


def test_reference_segment_end_to_end(zoo, tiny_state):
    """The reference's one-call API against Segmenter.segment for NACLIP's whole-image setting."""
    image = make_smooth_image(66, 90, seed=47)
    seg = zoo("naclip", short_side=160, crop=0, pamr_steps=3, prob_thd=0.1)
    seg.set_vocabulary(["cat", "dog, puppy", "sky"])
    result = seg.segment(image)
    probs, labels = ref.reference_segment(
        tiny_state, image, [("cat",), ("dog", "puppy"), ("sky",)], False, method="naclip", gaussian_std=5.0,
        image_engineering=False, short_side=160, crop=0, pamr_steps=3, prob_thd=0.1, closing=False,
    )
    np.testing.assert_allclose(result.probs, probs, atol=PROB_ATOL, rtol=0)
    assert_labels_match(result.labels, labels, probs, closing=False, prob_thd=0.1)


# --------------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize("grid", [(14, 14), (9, 12), (3, 1)])
def test_neighbourhood_bias_is_the_reference_omega(grid):
    from itaclip.engine.encoders.last_block import neighbourhood_bias

    omega = neighbourhood_bias(*grid, std=5.0)
    expected = ref.reference_omega(*grid, 5.0)
    assert torch.equal(omega, expected)
    assert float(omega[1:, 1:].diagonal().min()) == 1.0  # peak 1: not normalised
    assert not omega[0].any() and not omega[:, 0].any()  # class token: no bias


def test_neighbourhood_bias_cached_per_grid(tiny_ckpt):
    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False, method="naclip")
    first = seg.encoder.attention_bias(9, 12, torch.device("cpu"))
    assert seg.encoder.attention_bias(9, 12, torch.device("cpu")) is first
    assert seg.encoder.attention_bias(14, 14, torch.device("cpu")).shape == (197, 197)


def test_only_itaclip_records_intermediate_maps():
    for name in ZOO:
        options = encoder_options(build_config(method=name))
        assert options.get("intermediate_layers", ()) == ()
        assert ("intermediate_layers" in options) == isinstance(METHODS[name].encoder, LastBlock)
    assert encoder_options(build_config())["intermediate_layers"] == (7, 8, 10)


@pytest.mark.parametrize("size, expected", [((224, 224), None), ((205, 224), (0, 0, 1, 2)),
                                            ((170, 201), (3, 4, 3, 3)), ((15, 17), (7, 8, 0, 1))])
def test_window_padding_is_centred(size, expected):
    from itaclip.engine.preprocess import window_padding

    assert window_padding(*size, 16) == expected


# ------------------------------------------------------------------------------ presets and config

#: (method, preset) → expected (short side, crop, stride, logit scale, prob_thd, area_thd, PAMR steps).
AUTHORS_SETTINGS = {
    ("sclip", "voc21"): (336, 224, 112, 65.0, 0.1, 0.1, 0),
    ("sclip", "context60"): (336, 224, 112, 50.0, 0.1, None, 0),
    ("sclip", "coco_object"): (336, 224, 112, 50.0, 0.1, None, 0),
    ("sclip", "coco_stuff"): (448, 224, 112, 40.0, 0.0, None, 0),
    ("sclip", "cityscapes"): (560, 224, 112, 40.0, 0.0, None, 0),
    ("naclip", "voc21"): (336, 0, 112, 40.0, 0.1, None, 10),
    ("naclip", "voc20"): (336, 0, 112, 40.0, 0.0, None, 10),
    ("naclip", "context60"): (336, 224, 112, 40.0, 0.1, None, 10),
    ("naclip", "coco_stuff"): (336, 224, 112, 40.0, 0.0, None, 10),
    ("naclip", "cityscapes"): (560, 224, 112, 40.0, 0.0, None, 10),
    ("clearclip", "voc21"): (448, 448, 224, 50.0, 0.5, None, 0),
    ("clearclip", "context60"): (448, 448, 224, 50.0, 0.15, None, 0),
    ("clearclip", "coco_object"): (448, 448, 224, 50.0, 0.4, None, 0),
    ("clearclip", "cityscapes"): (448, 224, 224, 50.0, 0.0, None, 0),
    ("maskclip", "voc21"): (448, 448, 224, 50.0, 0.5, None, 0),
    ("clip", "voc21"): (336, 0, 112, 40.0, 0.1, None, 0),
    ("scclip", "voc21"): (336, 224, 112, 50.0, 0.15, 0.1, 0),
    ("scclip", "context60"): (336, 224, 112, 40.0, 0.15, None, 0),
    ("scclip", "coco_object"): (336, 224, 112, 55.0, 0.35, None, 0),
    ("scclip", "coco_stuff"): (336, 224, 112, 40.0, 0.0, None, 0),
    ("scclip", "cityscapes"): (560, 224, 112, 40.0, 0.0, None, 0),
    ("sfp", "voc21"): (336, 224, 112, 50.0, 0.15, 0.1, 0),
    ("sfp", "coco_object"): (336, 224, 112, 55.0, 0.35, None, 0),
    ("sfp", "ade20k"): (384, 224, 112, 40.0, 0.0, None, 0),
    ("sfp", "cityscapes"): (560, 224, 112, 40.0, 0.0, None, 0),
    ("pearl", "voc21"): (336, 0, 112, 40.0, 0.1, None, 0),
    ("pearl", "voc20"): (336, 0, 112, 40.0, 0.0, None, 0),
    ("pearl", "context60"): (336, 224, 112, 40.0, 0.1, None, 0),
    ("pearl", "cityscapes"): (560, 224, 112, 40.0, 0.0, None, 0),
    ("resclip", "voc21"): (336, 0, 112, 40.0, 0.1, None, 0),
    ("resclip", "context59"): (336, 224, 112, 40.0, 0.0, None, 0),
    ("resclip", "cityscapes"): (560, 224, 112, 40.0, 0.0, None, 0),
}


@pytest.mark.parametrize("method, preset", list(AUTHORS_SETTINGS))
def test_presets_are_the_authors_settings(method, preset):
    c = build_config(preset, method=method)
    assert (c.short_side, c.crop, c.stride, c.logit_scale, c.prob_thd, c.area_thd, c.pamr_steps) \
        == AUTHORS_SETTINGS[method, preset]
    assert (c.image_engineering, c.closing, c.alpha, c.method) == (False, False, 0.0, method)


def test_every_method_has_every_dataset_preset():
    datasets = {"default", "voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff", "cityscapes",
                "ade20k"}
    for name in ZOO:
        assert set(METHODS[name].presets) == datasets, name


#: Built-in class list → (classes, queries) as the authors' files give them.
CLASS_COUNTS = {
    "sclip_voc21": (21, 56), "sclip_voc20": (20, 30), "sclip_context60": (60, 60), "sclip_context59": (59, 59),
    "sclip_coco_object": (81, 113), "sclip_coco_stuff": (171, 171), "sclip_cityscapes": (19, 19),
    "sclip_ade20k": (150, 150), "clearclip_voc21": (21, 21), "clearclip_voc20": (20, 20),
    "clearclip_coco_object": (81, 81), "sfp_voc21": (21, 56), "sfp_voc20": (20, 30), "sfp_cityscapes": (19, 19),
}


@pytest.mark.parametrize("name", list(CLASS_COUNTS))
def test_builtin_class_lists_of_the_methods(name):
    vocab = load_classes(name)
    assert (vocab.num_classes, len(vocab.queries)) == CLASS_COUNTS[name]


def test_presets_point_at_the_methods_class_lists():
    assert get_preset("voc21", "naclip").classes == "sclip_voc21"
    assert get_preset("voc21", "clearclip").classes == "clearclip_voc21"
    assert get_preset("coco_object", "maskclip").classes == "clearclip_coco_object"
    for name in ZOO:
        for preset in METHODS[name].presets.values():
            if preset.classes:
                assert preset.classes in CLASS_COUNTS
                assert preset.has_background == (preset.name in ("voc21", "context60", "coco_object"))
    voc = load_classes("sclip_voc21", has_background=True)
    assert voc.classes[0][:3] == ("sky", "wall", "tree") and len(voc.classes[0]) == 26
    # SFP's own lists say "people" where SCLIP's say "person" (its configs' files), nothing else.
    assert get_preset("voc21", "sfp").classes == "sfp_voc21" and get_preset("ade20k", "sfp").classes == "sclip_ade20k"
    for name in ("voc21", "voc20", "cityscapes"):
        ours, theirs = load_classes(f"sfp_{name}").classes, load_classes(f"sclip_{name}").classes
        changed = [(a, b) for a, b in zip(ours, theirs) if a != b]
        assert len(ours) == len(theirs) and len(changed) == 1
        assert changed[0][0] == tuple(n.replace("person", "people") for n in changed[0][1])


def test_segmenter_preset_and_method_from_python(tiny_ckpt):
    seg = itaclip.Segmenter(weights=str(tiny_ckpt), preset="voc21", method="naclip", device="cpu",
                            text_cache=False, pamr_steps=2)
    assert (seg.config.crop, seg.config.prob_thd, seg.config.pamr_steps, seg.config.gaussian_std) == (0, 0.1, 2, 5.0)
    vocab = seg.set_vocabulary()
    assert (vocab.num_classes, len(vocab.queries), vocab.has_background) == (21, 56, True)
    assert vocab.names[0] == "background"


def test_explicit_options_win_and_itaclip_is_unchanged():
    assert build_config("voc21", method="naclip", crop=224, stride=56).crop == 224
    assert build_config("voc21", method="sclip", area_thd=None).area_thd == 0.1  # None = not given
    itaclip_config = build_config("voc21")
    assert itaclip_config == build_config("voc21", method="itaclip")
    assert (itaclip_config.method, itaclip_config.closing, itaclip_config.stride) == ("itaclip", True, 28)


@pytest.mark.parametrize("overrides, message", [
    (dict(method="naclip", attention="q-k"), "ITACLIP's last block"),
    (dict(method="sclip", remove_ffn=False), "ITACLIP's last block"),
    (dict(method="clip", intermediate_layers=()), "ITACLIP's last block"),
    (dict(method="naclip", gaussian_std=0.0), "gaussian std"),
    (dict(crop=-1), "crop must be >= 0"),
    (dict(method="segformer"), "unknown method"),
])
def test_config_errors(overrides, message):
    with pytest.raises(itaclip.ItaclipError, match=message):
        build_config(**overrides)


def test_unknown_preset_of_a_method():
    with pytest.raises(itaclip.ItaclipError, match="for method 'naclip'"):
        build_config("fast", method="naclip")


def test_presets_command_prints_a_methods_resolved_preset(capsys):
    from itaclip.cli import main

    assert main(["presets", "voc21", "--method", "naclip"]) == 0
    text = capsys.readouterr().out
    assert "method               naclip (NACLIP" in text and "crop                 0" in text
    assert "pamr_steps           10" in text and "gaussian_std         5.0" in text and "  attention " not in text
    assert "sclip_voc21: 21 classes, 56 names, class 0 = background set of 26 words" in text
    assert main(["presets", "--method", "clearclip"]) == 0
    assert "voc21" in capsys.readouterr().out and "fast" not in capsys.readouterr().out
    assert main(["presets", "fast", "--method", "naclip"]) == 2
    assert "unknown preset 'fast' for method 'naclip'" in capsys.readouterr().err


def test_for_method_shares_the_model_and_uses_the_methods_lists(tiny_ckpt):
    base = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False)
    clear = base.for_method("clearclip", "voc21", prob_thd=0.3)
    assert clear.model is base.model and clear.config.prob_thd == 0.3 and clear.config.crop == 448
    vocab = clear.set_vocabulary()
    assert (vocab.num_classes, len(vocab.queries)) == (21, 21)
    assert base.for_method("itaclip", "voc21").config == base.with_config(**vars(build_config("voc21"))).config


def test_itaclip_run_identity_is_unchanged_by_the_zoo():
    """Stored eval results and segment manifests of ITACLIP runs keep their identity: the settings
    name no method and no σ for ITACLIP; another method's name them, without ITACLIP's block fields."""
    from itaclip.engine.settings import prediction_settings
    from itaclip.engine.vocabulary import resolve_vocabulary

    vocab = resolve_vocabulary("cat, dog")
    itaclip_settings = prediction_settings(build_config("voc21"), vocab, "ViT-B/16")["config"]
    assert "method" not in itaclip_settings and "gaussian_std" not in itaclip_settings
    assert itaclip_settings["attention"] == "q-q+k-k"
    naclip = prediction_settings(build_config("voc21", method="naclip"), vocab, "ViT-B/16")["config"]
    assert naclip["method"] == "naclip" and naclip["gaussian_std"] == 5.0 and "attention" not in naclip
    sclip = prediction_settings(build_config("voc21", method="sclip"), vocab, "ViT-B/16")["config"]
    assert sclip["method"] == "sclip" and "gaussian_std" not in sclip
