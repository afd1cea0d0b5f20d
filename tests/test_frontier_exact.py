"""SC-CLIP, SFP, PEARL and ResCLIP on the engine equal their naive reference (tests/naive_frontier.py,
itself checked against the authors' code) within float rounding for every option, on both test models
(1 and 2 heads) and on a 24-block model; TLP and ResCLIP's RCS/SFR equal it on every method that can
take them; wrong combinations are one-line errors. test_methods_exact.py runs the common cases (windows,
padding, crop 0, PAMR, batching, views) for every method of the registry.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import naive_frontier as nf
import naive_reference as ref
from helpers.exactness import LOGIT_ATOL, OPEN, OPEN_AUX, SMALL, VOC_LIKE, compare, frontier_maps, logit_tolerance
from helpers.images import make_smooth_image

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("single_thread")]

itaclip = pytest.importorskip("itaclip")
from itaclip.engine.errors import ItaclipError  # noqa: E402
from itaclip.engine.methods import METHODS, build_config, list_methods  # noqa: E402
from itaclip.engine.refine import refinements  # noqa: E402
from itaclip.engine.refine.tlp import tlp  # noqa: E402

FRONTIER = ("scclip", "sfp", "pearl", "resclip")
#: Methods whose last block takes RCS and SFR, and those that refuse them (read from the registry).
FEEDBACK = [m for m in list_methods() if METHODS[m].encoder.no_feedback is None]
NO_FEEDBACK = [m for m in list_methods() if METHODS[m].encoder.no_feedback is not None]
#: A 24-block model (ViT-L/14's depth) with the tiny width, for the authors' ViT-L block indices.
DEEP_SHAPE = dict(vision_width=64, vision_layers=24, patch_size=16, grid=14, text_width=64, text_layers=2,
                  embed_dim=32, seed=5)


@pytest.fixture(scope="module")
def models(tiny_ckpt, two_head_ckpt, six_layer_ckpt, checkpoint_dir, tiny_state, two_head_state, six_layer_state):
    """``models(which)`` → (a base Segmenter sharing one loaded model, its reference state)."""
    from itaclip.engine.weights.random import random_openai_state_dict

    deep = checkpoint_dir / "deep.pt"
    if not deep.exists():
        torch.save(random_openai_state_dict(**DEEP_SHAPE), deep)
    paths = {"tiny": tiny_ckpt, "two_head": two_head_ckpt, "six_layer": six_layer_ckpt, "deep": deep}
    states = {"tiny": tiny_state, "two_head": two_head_state, "six_layer": six_layer_state}
    bases: dict = {}

    def get(which: str = "tiny"):
        if which not in bases:
            bases[which] = itaclip.Segmenter(weights=str(paths[which]), device="cpu", text_cache=False,
                                             intermediate_layers=())
            if which not in states:
                states[which] = ref.load_reference_state(paths[which])
        return bases[which], states[which]

    return get


def check(models, method, image, classes=SMALL, has_background=False, aux=None, which="tiny", **overrides):
    base, state = models(which)
    seg = base.for_method(method, **overrides)
    return compare(seg, state, image, classes, has_background, aux, reference=frontier_maps,
                   logit_atol=logit_tolerance(seg.config))


WINDOWS = dict(short_side=224, crop=224, stride=112)


# ------------------------------------------------------------------------------ each method's options


@pytest.mark.parametrize("which", ["tiny", "two_head"])
@pytest.mark.parametrize("method", FRONTIER)
def test_authors_defaults_on_both_models(models, method, which):
    """Each method with its authors' defaults (PEARL: TLP on; ResCLIP: RCS and SFR on) over two
    overlapping windows, on the 1-head and the 2-head model."""
    check(models, method, make_smooth_image(72, 96, seed=50), which=which, **WINDOWS)


@pytest.mark.parametrize("method, options", [
    ("scclip", dict(res_cls=0.1, prob_thd=0.3, logit_scale=50.0, area_thd=0.1)),
    ("sfp", dict(res_cls=0.1, prob_thd=0.3, logit_scale=55.0, area_thd=0.1)),
    ("pearl", dict(kk_weight=0.3, tlp_grid=30, prob_thd=0.3)),
    ("pearl", dict(kk_weight=0.0, tlp=False, pamr_steps=2)),
    ("resclip", dict(sfr_thd=0.4, rcs_weights=(2.0, 0.6), sfr_weights=(2.1, 0.6), gaussian_std=3.0,
                     entity_decay=False, logit_scale=60.0)),
    ("resclip", dict(sfr_thd=0.99, rcs_weights=(1.5, 0.2), sfr_weights=(2.2, 0.7), pamr_steps=2, prob_thd=0.2)),
    ("resclip", dict(sfr_thd=0.0, rcs_weights=(2.0, 0.3), sfr_weights=(1.8, 0.7))),
])
def test_every_option(models, method, options):
    check(models, method, make_smooth_image(72, 96, seed=51), VOC_LIKE, True, **WINDOWS, **options)


@pytest.mark.parametrize("method", FRONTIER)
def test_views_and_auxiliary_texts(models, method):
    """ITACLIP's views (λ 0.6) and auxiliary texts (α 0.2) with each new method, 2 windows × 3 views."""
    check(models, method, make_smooth_image(64, 80, seed=52), OPEN, False, OPEN_AUX, short_side=192, crop=192,
          stride=96, image_engineering=True, views=("grey", "hflip"), lam=0.6, alpha=0.2)


@pytest.mark.parametrize("method", FRONTIER)
def test_batch_one_and_many_equal(models, method):
    base, _ = models("tiny")
    image = make_smooth_image(60, 100, seed=53)
    options = dict(short_side=192, crop=192, stride=96, image_engineering=True, views=("vflip",))
    one, many = (base.for_method(method, batch_size=b, **options) for b in (1, 16))
    a, b = one.segment(image, classes=["cat", "dog", "sky"]), many.segment(image, classes=["cat", "dog", "sky"])
    np.testing.assert_allclose(a.probs, b.probs, atol=2e-6, rtol=0)


@pytest.mark.parametrize("method", ["scclip", "sfp", "resclip"])
def test_vit_l_depth_uses_the_authors_indices(models, method):
    """24 blocks: SC-CLIP's answer for ViT-L/14 (17 / 7 / 9-19, res_cls 0.1), SFP's and ResCLIP's absolute
    indices (as their authors ran ViT-L/14)."""
    check(models, method, make_smooth_image(72, 72, seed=54), which="deep", short_side=160, crop=160, stride=160)
    if method == "scclip":
        assert models("deep")[0].for_method("scclip").encoder.res_cls == 0.1


@pytest.mark.parametrize("method", ["scclip", "sfp", "resclip"])
def test_other_depths_are_refused(models, method):
    base, _ = models("six_layer")
    with pytest.raises(ItaclipError, match="12- and 24-block") as error:
        base.for_method(method)
    assert "\n" not in str(error.value)


def test_pearl_runs_any_depth(models):
    check(models, "pearl", make_smooth_image(60, 60, seed=55), which="six_layer", short_side=128, crop=0)


# ----------------------------------------------------------------------- SFP's isolated outliers


def test_sfp_equals_its_authors_where_theirs_is_finite_and_keeps_isolated_outliers(models):
    """SFP's code zeroes an outlier whose in-grid neighbours are all outliers; the zero normalises to
    NaN over the whole window. The engine keeps such a token's own value (SC-CLIP's rule): on a window
    without one it equals the authors' rule, on a window with one it is finite and equals the
    reference with that rule (96×96 windows: 6×6 patches, where 10 outliers often cluster)."""
    base, state = models("tiny")
    seg = base.for_method("sfp", short_side=96, crop=0)
    seg.set_vocabulary(["cat", "dog", "sky"])
    text = seg.text_features

    def maps(image, rule):
        with torch.no_grad():
            return frontier_maps(state, image, text, seg.config, isolated_outliers=rule)

    finite, isolated = make_smooth_image(96, 96, seed=0), make_smooth_image(96, 96, seed=2)
    with torch.inference_mode():
        ours = {name: seg.similarity_maps(image, text) for name, image in (("finite", finite), ("isolated", isolated))}
    authors = maps(finite, "zero")
    assert torch.isfinite(authors).all()
    assert float((ours["finite"] - authors).abs().max()) <= LOGIT_ATOL
    assert torch.isnan(maps(isolated, "zero")).all()  # the authors' window: NaN everywhere
    assert torch.isfinite(ours["isolated"]).all()
    assert float((ours["isolated"] - maps(isolated, "keep")).abs().max()) <= LOGIT_ATOL


# --------------------------------------------------------------------------- windows they refuse


def test_scclip_refuses_a_non_square_window_when_an_outlier_leaves_the_grid(models):
    """224×299 resized (grid 14×18) in one window: an outlier token ≥ 196 maps outside the grid by the
    authors' formula (their code raises IndexError, the reference ValueError): one line here."""
    base, _ = models("tiny")
    seg = base.for_method("scclip", short_side=224, crop=0)
    with pytest.raises(ItaclipError, match="as if windows were square") as error:
        seg.segment(make_smooth_image(72, 96, seed=40), classes=["cat", "dog"])
    assert "\n" not in str(error.value)


def test_scclip_refuses_windows_of_30_patches_or_fewer(models):
    base, _ = models("tiny")
    seg = base.for_method("scclip", short_side=80, crop=80, stride=80)  # 5×5 patches
    with pytest.raises(ItaclipError, match="more than 30 patches .* 96×96 pixels"):
        seg.segment(make_smooth_image(40, 40, seed=1), classes=["cat", "dog"])
    assert base.for_method("scclip", short_side=96, crop=96, stride=96).segment(  # 6×6 = 36 patches: fine
        make_smooth_image(40, 40, seed=1), classes=["cat", "dog"]).labels.shape == (40, 40)


def test_lof_that_flags_nothing_fills_nothing():
    """Identical tokens: every LOF score is NaN, none exceeds the threshold (the reference agrees;
    SC-CLIP's code would fail indexing an empty list); the fill of an empty set changes nothing."""
    from itaclip.engine.encoders.scclip import lof_outliers, neighbour_fill

    tokens = torch.ones(40, 8)
    assert lof_outliers(tokens) == [] == nf.reference_lof(tokens)[0]
    grid = torch.randn(2, 5, 6, 4)
    assert neighbour_fill(grid, torch.zeros(2, 5, 6, dtype=torch.bool)) is grid


def test_fill_and_lof_equal_the_reference_on_random_tokens():
    from itaclip.engine.encoders.scclip import lof_outliers, neighbour_fill

    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(6 * 7, 5, generator=generator)
    tokens[[3, 20, 33]] *= 6  # three far tokens
    outliers, _ = nf.reference_lof(tokens)
    assert lof_outliers(tokens) == outliers and len(outliers) >= 3
    grid = tokens.reshape(6, 7, 5)
    positions = [(0, 0), (0, 1), (1, 0), (1, 1), (3, 4), (5, 6)]  # (0, 0) has no usable neighbour
    mask = torch.zeros(1, 6, 7, dtype=torch.bool)
    for r, c in positions:
        mask[0, r, c] = True
    torch.testing.assert_close(neighbour_fill(grid[None], mask)[0], nf.reference_fill(grid, positions), atol=0, rtol=0)


# ------------------------------------------------------------------------------- TLP for every method


@pytest.mark.parametrize("method", [m for m in list_methods() if m != "itaclip" and m in nf.REFERENCE_METHODS])
def test_tlp_on_every_method(models, method):
    """``tlp=True`` (grid 30: the 72×96 map is pooled 2×3) after each method's own maps and PAMR (the guided
    methods: test_guided_exact.test_tlp_after_the_guided_maps)."""
    image = make_smooth_image(60, 96, seed=56)
    check(models, method, image, short_side=160, crop=160, stride=80, tlp=True, tlp_grid=30, pamr_steps=2)


def test_tlp_with_itaclip_views_and_texts(models):
    check(models, "itaclip", make_smooth_image(60, 80, seed=57), OPEN, False, OPEN_AUX, short_side=160, crop=160,
          stride=80, tlp=True, tlp_grid=40, alpha=0.1, intermediate_layers=(7, 8, 10), views=("grey", "hflip"))


@pytest.mark.parametrize("size, grid", [((72, 96), 80), ((90, 120), 40), ((75, 101), 30), ((40, 50), 20)])
def test_tlp_on_the_engines_own_maps(models, size, grid):
    """TLP alone, on identical inputs (the engine's PEARL maps before TLP): engine and reference agree
    to float rounding — unlike the end-to-end maps, whose 1e-7 differences TLP amplifies. Pooling
    without remainder, with trailing rows/columns dropped, and none (grid ≥ the map)."""
    base, state = models("tiny")
    seg = base.for_method("pearl", short_side=160, crop=160, stride=80, tlp=False)
    seg.set_vocabulary(["cat", "dog", "sky", "grass"])
    image = make_smooth_image(*size, seed=58)
    with torch.inference_mode():
        maps = seg.similarity_maps(image, seg.text_features)
        resized = ref.reference_normalise(ref.reference_resize(image, 160))
        guide = ref._bilinear(resized, size)
        ours = tlp(maps, guide, seg.text_features, grid)
    expected = nf.reference_tlp(maps.clone(), guide, seg.text_features, grid)
    error = float((ours - expected).abs().max())
    assert error <= 1e-6, error
    assert float((ours - maps).abs().max()) > 1e-3  # it did something


def test_refinements_run_pamr_before_tlp(monkeypatch):
    import itaclip.engine.refine as refine

    calls = []
    monkeypatch.setattr(refine.pamr_module, "pamr", lambda guide, logits, *a, **k: calls.append("pamr") or logits)
    monkeypatch.setattr(refine.tlp_module, "tlp", lambda logits, *a, **k: calls.append("tlp") or logits)
    logits = torch.randn(2, 8, 8)
    for stage in refinements(build_config(method="pearl", pamr_steps=3)):
        assert stage(logits, lambda: torch.zeros(3, 8, 8), torch.randn(2, 4)) is logits
    assert calls == ["pamr", "tlp"]
    assert refinements(build_config(method="pearl", tlp=False)) == []


# ------------------------------------------------------------------------- RCS and SFR for every method


@pytest.mark.parametrize("method", FEEDBACK)
def test_feedback_on_every_method_that_can_take_it(models, method):
    """RCS (2.0, 0.3) and SFR (threshold 0.3, 1.8 / 0.7) on every last block with attention logits,
    two windows (clearclip padded to 208×208), PAMR off."""
    image = make_smooth_image(70, 90, seed=59)
    options = dict(short_side=200, crop=200, stride=100, pamr_steps=0, tlp=False)
    info = check(models, method, image, rcs_weights=(2.0, 0.3), sfr_thd=0.3, sfr_weights=(1.8, 0.7), **options)
    plain = models("tiny")[0].for_method(method, **options).segment(image, classes=["cat", "dog", "sky"])
    assert np.abs(plain.probs - info["probs"]).max() > 1e-3  # the feedback changed the maps


@pytest.mark.parametrize("method, options", [
    ("naclip", dict(sfr_thd=0.2)),                     # SFR alone, default weights
    ("sclip", dict(rcs_weights=(1.5, 0.5))),           # RCS alone
    ("itaclip", dict(sfr_thd=0.3, rcs_weights=(2.0, 0.4), intermediate_layers=(7, 8), remove_ffn=False,
                     attention="q-k+k-k", image_engineering=True, views=("grey",))),
    ("pearl", dict(sfr_thd=0.3, rcs_weights=(2.0, 0.3), kk_weight=0.3)),
])
def test_feedback_combinations(models, method, options):
    check(models, method, make_smooth_image(64, 80, seed=60), short_side=160, crop=160, stride=80, **options)


def test_feedback_on_the_two_head_model(models):
    check(models, "clearclip", make_smooth_image(64, 80, seed=61), which="two_head", short_side=160, crop=160,
          stride=80, sfr_thd=0.3, rcs_weights=(2.0, 0.3))


@pytest.mark.parametrize("method", NO_FEEDBACK)
def test_feedback_is_refused_where_there_are_no_logits_to_mix(method):
    for options in (dict(sfr_thd=0.3), dict(rcs_weights=(2.0, 0.3))):
        with pytest.raises(ItaclipError, match=f"method '{method}' cannot take them") as error:
            build_config(method=method, **options)
        assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------- wrong options


@pytest.mark.parametrize("overrides, message", [
    (dict(method="resclip", area_thd=0.1), "--area-thd / area_thd does not apply to method 'resclip'"),
    (dict(method="resclip", sfr_thd=None), None),  # None = not given: the default stays
    (dict(method="naclip", res_cls=0.2), "apply to methods 'scclip' and 'sfp', not 'naclip'"),
    (dict(method="sclip", kk_weight=0.2), "apply to method 'pearl', not 'sclip'"),
    (dict(method="naclip", sfr_weights=(0.0, 0.5)), "sfr_weights must be TAU,LAMBDA"),
    (dict(method="naclip", rcs_weights=(2.0, 1.5)), "rcs_weights must be TAU,LAMBDA"),
    (dict(method="pearl", tlp_grid=0), "TLP grid must be >= 1"),
    (dict(method="resclip", sfr_thd=1.5), "sfr_thd must be in"),
])
def test_wrong_options_are_one_line_errors(overrides, message):
    if message is None:
        assert build_config(**overrides).sfr_thd == 0.25
        return
    with pytest.raises(ItaclipError, match=message) as error:
        build_config(**overrides)
    assert "\n" not in str(error.value)


def test_resclip_needs_its_feedback():
    from itaclip.engine.config import NONE

    for name in ("sfr_thd", "rcs_weights"):
        with pytest.raises(ItaclipError, match=f"method 'resclip' needs --{name.replace('_', '-')}"):
            build_config(method="resclip", **{name: NONE})


# --------------------------------------------------------------------------------------- identities

#: ``settings_hash(prediction_settings(build_config(preset, method=m), "cat, dog", "ViT-B/16"))`` as the
#: code before these methods computed it (commit c8ecdee): stored eval runs and segment manifests of
#: ITACLIP and the first zoo keep their identity (the new fields are left out while off).
OLD_IDENTITIES = {
    "clearclip/ade20k": "8b7fb38908d27466",
    "clearclip/cityscapes": "c799d0d2a78efb8a",
    "clearclip/coco_object": "8ebd0d9418ecc7c1",
    "clearclip/coco_stuff": "8b7fb38908d27466",
    "clearclip/context59": "8b7fb38908d27466",
    "clearclip/context60": "188c392ee85ee029",
    "clearclip/default": "8b7fb38908d27466",
    "clearclip/voc20": "8b7fb38908d27466",
    "clearclip/voc21": "6f7b22546611c0f5",
    "clip/ade20k": "5d580896119c8217",
    "clip/cityscapes": "eb04054e50d03385",
    "clip/coco_object": "ceb18b55b09adc5d",
    "clip/coco_stuff": "5d580896119c8217",
    "clip/context59": "5d580896119c8217",
    "clip/context60": "ceb18b55b09adc5d",
    "clip/default": "5d580896119c8217",
    "clip/voc20": "b90b741de6428a96",
    "clip/voc21": "f5529f6922cd0c9f",
    "itaclip/ade20k": "17aa97b557f99dad",
    "itaclip/cityscapes": "eb588979ba2c2b31",
    "itaclip/coco_object": "c3fadebc50e03a58",
    "itaclip/coco_stuff": "17aa97b557f99dad",
    "itaclip/context59": "6077c27c7d9ce142",
    "itaclip/context60": "9d605d6136633c9e",
    "itaclip/default": "11423d7532d95f23",
    "itaclip/fast": "349269a77dbdba8c",
    "itaclip/voc20": "bc022b9c680140b4",
    "itaclip/voc21": "e84fc3eca4f6e82f",
    "maskclip/ade20k": "aaeae9202955802d",
    "maskclip/cityscapes": "216c6d8ac6eb7e1b",
    "maskclip/coco_object": "12a2c0aa4f4d0568",
    "maskclip/coco_stuff": "aaeae9202955802d",
    "maskclip/context59": "aaeae9202955802d",
    "maskclip/context60": "330344cb71832dcb",
    "maskclip/default": "aaeae9202955802d",
    "maskclip/voc20": "aaeae9202955802d",
    "maskclip/voc21": "12f92b228126ead0",
    "naclip/ade20k": "1de93588efd1c13c",
    "naclip/cityscapes": "5fc0df89c9dbf55d",
    "naclip/coco_object": "66cd6421c8357592",
    "naclip/coco_stuff": "1de93588efd1c13c",
    "naclip/context59": "1de93588efd1c13c",
    "naclip/context60": "66cd6421c8357592",
    "naclip/default": "1de93588efd1c13c",
    "naclip/voc20": "a57b0a08057ecee8",
    "naclip/voc21": "efc7414d6f467ea9",
    "sclip/ade20k": "81fb62532914dab4",
    "sclip/cityscapes": "9872af6bececd14b",
    "sclip/coco_object": "fd197b50def24c69",
    "sclip/coco_stuff": "e0ab4c09de2e4673",
    "sclip/context59": "81fb62532914dab4",
    "sclip/context60": "fd197b50def24c69",
    "sclip/default": "81fb62532914dab4",
    "sclip/voc20": "81fb62532914dab4",
    "sclip/voc21": "3acc63d37b5988b8"
}


def test_old_run_identities_are_unchanged():
    from itaclip.engine.settings import prediction_settings, settings_hash
    from itaclip.engine.vocabulary import resolve_vocabulary

    vocab = resolve_vocabulary("cat, dog")
    for key, expected in OLD_IDENTITIES.items():
        method, preset = key.split("/")
        settings = prediction_settings(build_config(preset, method=method), vocab, "ViT-B/16")
        assert settings_hash(settings) == expected, key


def test_refinement_fields_enter_identities_only_when_on():
    from itaclip.engine.settings import prediction_settings
    from itaclip.engine.vocabulary import resolve_vocabulary

    vocab = resolve_vocabulary("cat, dog")

    def fields(**overrides):
        return prediction_settings(build_config("voc21", **overrides), vocab, "ViT-B/16")["config"]

    assert {"tlp", "tlp_grid", "sfr_thd", "rcs_weights", "gaussian_std"}.isdisjoint(fields())
    on = fields(tlp=True, sfr_thd=0.3)
    assert (on["tlp"], on["tlp_grid"], on["sfr_thd"], on["gaussian_std"]) == (True, 80, 0.3, 5.0)
    assert "rcs_weights" not in on
    pearl = fields(method="pearl")
    assert (pearl["method"], pearl["tlp"], pearl["kk_weight"]) == ("pearl", True, 0.08) and "res_cls" not in pearl
    assert "tlp" not in fields(method="pearl", tlp=False)
    resclip = fields(method="resclip")
    assert (resclip["sfr_thd"], resclip["rcs_weights"], resclip["sfr_weights"]) == (0.5, [2.0, 0.3], [2.2, 0.7])


# ------------------------------------------------------------------------------------ SFR's pieces


@pytest.mark.parametrize("grid", [(5, 5), (4, 9), (9, 3), (1, 6)])
def test_sfr_pieces_equal_the_reference(grid):
    """Patch mode (ties → smallest), entity decay (prefix paths, Chebyshev steps), row blur: on blocky
    random labels over square and non-square grids."""
    from itaclip.engine.refine.sfr import decay_across_labels, patch_labels, row_blur

    generator = torch.Generator().manual_seed(sum(grid))
    coarse = torch.randint(0, 4, (1, 1, 3, 3), generator=generator).float()
    cells = torch.nn.functional.interpolate(coarse, size=grid, mode="nearest")[0, 0].long()
    pixels = cells.repeat_interleave(4, 0).repeat_interleave(4, 1)
    pixels[::3, 1::2] = torch.randint(0, 4, pixels[::3, 1::2].shape, generator=generator)  # noise and ties
    ours = patch_labels(pixels[None], 4, grid, 4)[0]
    assert torch.equal(ours, nf.reference_patch_mode(pixels, 4))
    flat = ours.reshape(-1)
    same = (flat[:, None] == flat[None, :]).float()
    decayed = decay_across_labels(same, ours)
    assert torch.equal(decayed, nf.reference_entity_decay(same, ours))
    for std in (5.0, 1.0, 0.3):
        assert torch.equal(row_blur(decayed[None], std)[0], nf.reference_row_blur(decayed, std))


def test_sfr_matrix_and_mix_equal_the_reference(models):
    from itaclip.engine.refine.sfr import SemanticFeedback

    base, state = models("tiny")
    seg = base.for_method("naclip", short_side=160)
    seg.set_vocabulary(["cat", "dog", "sky"])
    window = ref.reference_normalise(make_smooth_image(112, 144, seed=62))
    with torch.no_grad():
        features = seg.encoder(window[None])[0]
    logits = ref._patch_logits(features[0], seg.text_features, 7, 9, (112, 144))
    feedback = SemanticFeedback(threshold=0.3, weights=(2.1, 0.6), std=3.0, entity_decay=True, logit_scale=50.0)
    matrix = feedback.matrix(features, seg.text_features, (7, 9), window[None], 16)[0]
    expected = nf.reference_sfr_matrix(logits, window, patch=16, logit_scale=50.0, sfr_thd=0.3, gaussian_std=3.0)
    torch.testing.assert_close(matrix, expected, atol=1e-7, rtol=0)
    scores = torch.randn(1, 2, 64, 64)
    mixed = feedback.mix(scores.clone(), feedback.feedback(matrix[None]))
    assert torch.equal(mixed[0], nf.reference_sfr_logits(scores[0], matrix, (2.1, 0.6)))
