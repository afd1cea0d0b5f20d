"""The engine (``itaclip.Segmenter``) equals the naive reference (tests/naive_reference.py) within
float rounding, stage by stage (text features, refined similarity maps, probabilities, labels),
for the paper's settings and every ablation switch.

Tolerances: fp32 rounding of batched vs. one-at-a-time computation. Similarity maps (cosines,
|x| ≤ 1) to ``LOGIT_ATOL``; probabilities to ``PROB_ATOL``; labels must be equal except where the
reference's top-2 class probabilities (or its top probability and ``prob_thd``) are within
``TIE_TOL`` — and, with the closing on, within 2 pixels of such a pixel (a 3×3 dilation followed
by a 3×3 erosion reaches that far).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import naive_reference as ref
from helpers.exactness import (
    OPEN,
    OPEN_AUX,
    PROB_ATOL,
    SMALL,
    VOC_LIKE,
    VOC_LIKE_AUX,
    _class_strings,
    assert_labels_match,
    compare,
)
from helpers.images import make_random_image, make_smooth_image

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("single_thread")]


itaclip = pytest.importorskip("itaclip")


# --------------------------------------------------------------------------------------- helpers


#: Other backbone geometries: ViT-B/32-like (patch 32, 7×7 table) and ViT-L/14-like (patch 14, 16×16).
PATCH_SHAPES = {
    "patch32": dict(vision_width=64, vision_layers=12, patch_size=32, grid=7, text_width=64, text_layers=2,
                    embed_dim=32, seed=3),
    "patch14": dict(vision_width=64, vision_layers=12, patch_size=14, grid=16, text_width=64, text_layers=2,
                    embed_dim=32, seed=4),
}


@pytest.fixture(scope="module")
def patch_ckpts(checkpoint_dir):
    from itaclip.engine.weights.random import random_openai_state_dict

    paths = {}
    for name, shape in PATCH_SHAPES.items():
        paths[name] = checkpoint_dir / f"{name}.pt"
        if not paths[name].exists():
            torch.save(random_openai_state_dict(**shape), paths[name])
    return paths


@pytest.fixture(scope="module")
def engine(tiny_ckpt, two_head_ckpt, six_layer_ckpt, patch_ckpts):
    """``engine(which, **overrides)`` -> a Segmenter sharing one loaded model per checkpoint."""
    paths = {"tiny": tiny_ckpt, "two_head": two_head_ckpt, "six_layer": six_layer_ckpt, **patch_ckpts}
    bases: dict = {}

    def make(which: str = "tiny", **overrides):
        if which not in bases:
            # The six-layer model has no layers 7, 8, 10: its base uses none.
            base_options = dict(intermediate_layers=()) if which == "six_layer" else {}
            bases[which] = itaclip.Segmenter(weights=str(paths[which]), device="cpu", text_cache=False,
                                             **base_options)
        return bases[which].with_config(**overrides)

    return make


@pytest.fixture(scope="module")
def states(tiny_state, two_head_state, six_layer_state, patch_ckpts):
    loaded = {name: ref.load_reference_state(path) for name, path in patch_ckpts.items()}
    return {"tiny": tiny_state, "two_head": two_head_state, "six_layer": six_layer_state, **loaded}


# ----------------------------------------------------------------------------- paper-like settings


def test_voc_like_settings_with_aux_file(engine, states, tmp_path, smooth_image):
    """Background set, area 0.1, prob 0.1, stride 28, logit 60, α 0.05 with aux texts (authors'
    file format), λ 0.7, PAMR 10."""
    aux_file = tmp_path / "aux.txt"
    aux_file.write_text("".join(f"{names[0]} >={text}\n" for names, text in zip(VOC_LIKE[1:], VOC_LIKE_AUX)))
    seg = engine(area_thd=0.1, prob_thd=0.1, stride=28, logit_scale=60, alpha=0.05, lam=0.7, short_side=224)
    seg.set_vocabulary(_class_strings(VOC_LIKE), aux_texts=str(aux_file), has_background=True)
    info = compare(seg, states["tiny"], smooth_image, VOC_LIKE, True, VOC_LIKE_AUX, vocabulary_set=True)
    assert len(np.unique(info["labels"])) >= 2  # the case is not degenerate


def test_preset_constructor_path(tiny_ckpt, states, smooth_image):
    """Segmenter(weights, preset, **overrides): the preset's values reach the computation."""
    seg = itaclip.Segmenter(weights=str(tiny_ckpt), preset="voc21", device="cpu", text_cache=False,
                            short_side=224, pamr_steps=3)
    assert (seg.config.alpha, seg.config.lam, seg.config.logit_scale) == (0.05, 0.7, 60)
    assert (seg.config.prob_thd, seg.config.area_thd, seg.config.stride) == (0.1, 0.1, 28)
    compare(seg, states["tiny"], smooth_image, VOC_LIKE, True, VOC_LIKE_AUX)


def test_no_background(engine, states):
    image = make_smooth_image(84, 100, seed=11)
    seg = engine(stride=56, short_side=280, alpha=0.1, logit_scale=40, pamr_steps=5)
    compare(seg, states["tiny"], image, OPEN, False, OPEN_AUX)


def test_plain_no_image_engineering_no_pamr(engine, states, random_image):
    seg = engine(image_engineering=False, pamr_steps=0, short_side=224, stride=56)
    compare(seg, states["tiny"], random_image, OPEN, False)


# ---------------------------------------------------------------------------- encoder ablations

ATTENTIONS = ["q-k", "q-q", "k-k", "v-v", "q-q+k-k", "q-q+v-v", "k-k+v-v", "q-q+k-k+v-v", "q-k+v-v"]


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_combinations(engine, states, attention):
    image = make_smooth_image(70, 90, seed=12)
    seg = engine(attention=attention, image_engineering=False, pamr_steps=2, short_side=224, stride=56)
    compare(seg, states["tiny"], image, SMALL, False)


def test_ffn_kept(engine, states):
    image = make_smooth_image(70, 90, seed=13)
    seg = engine(remove_ffn=False, short_side=224, stride=56, pamr_steps=2)
    compare(seg, states["tiny"], image, SMALL, False)


@pytest.mark.parametrize("layers", [(), (7,), (8,), (7, 8), (7, 8, 9, 10), (1, 11), (10, 7)])
def test_intermediate_layer_sets(engine, states, layers):
    image = make_smooth_image(70, 90, seed=14)
    seg = engine(intermediate_layers=layers, image_engineering=False, pamr_steps=2, short_side=224, stride=56)
    compare(seg, states["tiny"], image, SMALL, False)


def test_six_layer_model(engine, states):
    image = make_smooth_image(70, 90, seed=15)
    seg = engine("six_layer", intermediate_layers=(2, 3, 5), short_side=224, stride=56, pamr_steps=2)
    compare(seg, states["six_layer"], image, SMALL, False)


def test_six_layer_model_rejects_paper_layers(six_layer_ckpt):
    with pytest.raises(itaclip.ItaclipError, match="intermediate layers"):
        itaclip.Segmenter(weights=str(six_layer_ckpt), device="cpu", text_cache=False)


def test_two_head_model(engine, states, smooth_image):
    seg = engine("two_head", short_side=224, stride=56, pamr_steps=3)
    compare(seg, states["two_head"], smooth_image, VOC_LIKE, True, VOC_LIKE_AUX)


@pytest.mark.parametrize("which", ["patch32", "patch14"])
def test_other_patch_sizes(engine, states, which):
    """Crops of 170×224 at patch 32 / 14: leftover pixels (10 / 2 rows) and a resampled table."""
    image = make_smooth_image(60, 170, seed=26)
    seg = engine(which, short_side=170, stride=112, pamr_steps=2)
    compare(seg, states[which], image, SMALL, False)


# ------------------------------------------------------------------------------- image engineering


@pytest.mark.parametrize("dropped", ["grey", "blur", "vflip", "hflip"])
def test_each_view_switched_off(engine, states, dropped):
    image = make_smooth_image(72, 88, seed=16)
    views = tuple(v for v in ("grey", "blur", "vflip", "hflip") if v != dropped)
    seg = engine(views=views, lam=0.7, short_side=224, stride=56, pamr_steps=2)
    compare(seg, states["tiny"], image, SMALL, False)


@pytest.mark.parametrize("views", [("grey", "blur"), ("vflip", "hflip"), ("hflip",), ()])
def test_view_subsets(engine, states, views):
    image = make_smooth_image(72, 88, seed=17)
    seg = engine(views=views, lam=0.6, short_side=224, stride=56, pamr_steps=2)
    compare(seg, states["tiny"], image, SMALL, False)


# ---------------------------------------------------------------------------- geometry and windows


@pytest.mark.parametrize("shape", [(120, 70), (70, 121), (224, 224)])
def test_non_square_images(engine, states, shape):
    image = make_smooth_image(*shape, seed=18)
    seg = engine(short_side=224, stride=56, pamr_steps=3)
    compare(seg, states["tiny"], image, SMALL, False)


def test_crop_side_shorter_than_window(engine, states):
    """60×500 resized to short side 170 (< 224): every crop is 170×224 — positional table resampled
    with the +0.1 rule, 10 leftover rows dropped by the patch convolution, logits upsampled to 170."""
    image = make_smooth_image(60, 500, seed=19)
    seg = engine(short_side=170, stride=112, pamr_steps=2)
    compare(seg, states["tiny"], image, SMALL, False)


def test_long_side_cap_gives_thin_crops(engine, states):
    """40×2100: f = 2048/2100, 39×2048 resized image, 39-pixel crops (2 patch rows)."""
    image = make_smooth_image(40, 2100, seed=20)
    seg = engine(short_side=224, stride=224, pamr_steps=1, views=("grey", "hflip"))
    compare(seg, states["tiny"], image, SMALL, False)


def test_image_needing_no_resize(engine, states):
    image = make_smooth_image(224, 250, seed=21)
    seg = engine(short_side=224, stride=28, image_engineering=False, pamr_steps=2)
    compare(seg, states["tiny"], image, SMALL, False)


# --------------------------------------------------------------------------- execution & post-proc


def test_batch_size_does_not_change_results(engine, states):
    image = make_smooth_image(80, 110, seed=22)
    small = engine(batch_size=1, short_side=224, stride=28, pamr_steps=2)
    large = engine(batch_size=64, short_side=224, stride=28, pamr_steps=2)
    info = compare(small, states["tiny"], image, SMALL, False)
    compare(large, states["tiny"], image, SMALL, False)
    a, b = small.segment(image), large.segment(image)
    np.testing.assert_allclose(a.probs, b.probs, atol=2e-6, rtol=0)
    assert_labels_match(a.labels, b.labels, info["probs"], closing=True)


@pytest.mark.parametrize("closing", [False, True])
def test_closing_switch(engine, states, closing):
    image = make_random_image(64, 80, seed=23)
    seg = engine(closing=closing, image_engineering=False, short_side=224, stride=56, pamr_steps=0,
                 logit_scale=100)
    compare(seg, states["tiny"], image, SMALL, False)


def test_area_threshold_without_background(engine, states):
    """Authors' rule is index based: class 0 is never tested, even without a background set."""
    image = make_smooth_image(70, 90, seed=24)
    seg = engine(area_thd=0.3, prob_thd=0.2, short_side=224, stride=56, pamr_steps=2)
    compare(seg, states["tiny"], image, OPEN, False)


def test_flat_regions_pamr_guide(engine, states, blocks_image):
    """Piecewise-flat image upsampled then resized back: PAMR's std is rounding-level in flat areas,
    so the guide must be computed exactly as the authors do (bilinear F.interpolate)."""
    seg = engine(short_side=224, stride=56, pamr_steps=10, image_engineering=False)
    compare(seg, states["tiny"], blocks_image, SMALL, False)


def test_reference_segment_end_to_end(engine, states, smooth_image):
    """The reference's one-call API against the engine's, paper defaults at a small size."""
    seg = engine(short_side=224, stride=56, pamr_steps=4)
    seg.set_vocabulary(_class_strings(VOC_LIKE), has_background=True)
    result = seg.segment(smooth_image)
    probs, labels = ref.reference_segment(states["tiny"], smooth_image, VOC_LIKE, True, short_side=224, stride=56,
                                          pamr_steps=4)
    np.testing.assert_allclose(result.probs, probs, atol=PROB_ATOL, rtol=0)
    assert_labels_match(result.labels, labels, probs, closing=True)


@pytest.mark.parametrize("kind", ["jpg", "grey_png"])
def test_image_files_decoded_like_the_authors(engine, states, tmp_path, kind):
    """segment(path) decodes as the authors' loader does (cv2 IMREAD_COLOR, then RGB)."""
    image = make_smooth_image(66, 90, seed=25)
    path = tmp_path / ("img.jpg" if kind == "jpg" else "img.png")
    if kind == "jpg":
        cv2.imwrite(str(path), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    else:
        cv2.imwrite(str(path), image[:, :, 1])
    decoded = ref.reference_read_image(path)
    seg = engine(image_engineering=False, short_side=224, stride=56, pamr_steps=2)
    seg.set_vocabulary(_class_strings(SMALL))
    result = seg.segment(str(path))
    probs, labels = ref.reference_segment(states["tiny"], decoded, SMALL, False, image_engineering=False,
                                          short_side=224, stride=56, pamr_steps=2)
    np.testing.assert_allclose(result.probs, probs, atol=PROB_ATOL, rtol=0)
    assert_labels_match(result.labels, labels, probs, closing=True)


# ----------------------------------------------------------------------------- stage: post-process


def test_postprocess_on_hand_built_maps():
    """Exact-boundary cases: an area equal to area_thd × total is removed (strict >); prob_thd is
    tested after the area zeroing; classes with several queries take the max."""
    from itaclip.engine.postprocess import apply_area_threshold, class_probabilities, label_map

    query_class = [0, 0, 1, 2, 2, 3]
    logits = torch.zeros(6, 8, 10)
    logits[1] = 0.5                      # background (2nd query) wins by default: 40 pixels
    logits[2, 0:2, 0:5] = 1.0            # class 1: 10 pixels
    logits[4, 2:4, 0:5] = 1.0            # class 2 (2nd query): 10 pixels
    logits[5, 4:6, 0:10] = 1.0           # class 3: 20 pixels -> foreground total 40
    for area_thd, prob_thd, closing in [(0.25, 0.0, False), (0.2, 0.0, False), (0.25, 0.5, True),
                                        (None, 0.3, True), (0.5, 0.1, False)]:
        ref_probs, ref_labels = ref.reference_postprocess(logits, query_class, logit_scale=10, prob_thd=prob_thd,
                                                          area_thd=area_thd, closing=closing)
        probs = apply_area_threshold(class_probabilities(logits, query_class, 10), area_thd)
        labels = label_map(probs, prob_thd, closing)
        np.testing.assert_allclose(probs.numpy(), ref_probs, atol=1e-7, rtol=0)
        np.testing.assert_array_equal(labels, ref_labels)
    # the boundary case itself: with area_thd 0.25 classes 1 and 2 (10 = 0.25·40) are removed
    ref_probs, _ = ref.reference_postprocess(logits, query_class, logit_scale=10, area_thd=0.25, closing=False)
    assert (ref_probs[1] == 0).all() and (ref_probs[2] == 0).all() and (ref_probs[3] > 0).all()


# ------------------------------------------------------------------------------------ stage: PAMR


@pytest.mark.parametrize("dilations", [(8, 16), (1, 2), (3,)])
def test_pamr_function(dilations):
    from itaclip.engine.refine.pamr import pamr

    g = torch.Generator().manual_seed(1)
    guide = torch.randn(3, 37, 45, generator=g)
    logits = torch.randn(6, 37, 45, generator=g)
    expected = ref.reference_pamr(guide, logits, 5, dilations)
    torch.testing.assert_close(pamr(guide, logits, 5, dilations), expected, atol=1e-6, rtol=0)
