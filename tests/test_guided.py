"""The guided methods' parts on their own: region merging, scope attention, the region vote and the
region maps a user gives (tests/naive_guided.py's pieces as the reference), their records, presets,
default weights and run identities, views with region maps, and the precision modes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import naive_guided as guided
from helpers.guided import regions_for
from helpers.images import make_smooth_image

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("single_thread")]

itaclip = pytest.importorskip("itaclip")
from itaclip.engine.encoders import guided as engine  # noqa: E402
from itaclip.engine.methods import build_config, default_weights, get_method, get_preset, list_methods  # noqa: E402
from itaclip.engine.refine.region_vote import check_region_map, region_vote  # noqa: E402
from itaclip.engine.vocabulary import Vocabulary, load_classes  # noqa: E402

# ------------------------------------------------------------------------------------ region steps


@pytest.mark.parametrize("seed", range(6))
def test_connected_components_are_dbscans_clusters(seed):
    """CorrCLIP's DBSCAN(eps 0.2, min_samples 1, precomputed) on max(T) − T: the same clusters, numbered
    in the same order, as the engine's connected components of d ≤ 0.2."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(2, 30))
    e = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(count, 6)).astype(np.float32))
                                      + float(rng.uniform(0, 2)), dim=-1)
    t = e @ e.T
    distances = t.max() - t
    expected = guided.reference_dbscan_clusters(distances.numpy())
    got = engine.connected_components(distances <= engine.MERGE_RADIUS)
    assert got.tolist() == expected.tolist()
    assert 1 < len(set(expected.tolist())) < count or seed  # some seeds merge some regions, not all


@pytest.mark.parametrize("seed", range(4))
def test_merge_regions_and_scope_attention_match_the_reference(seed):
    rng = np.random.default_rng(seed)
    grid = (14, 21)
    cells = torch.from_numpy(regions_for(*grid, seed=seed, count=7))
    if seed == 3:
        cells[:, -3:] = engine.REGION_PAD_VALUE  # a padded border, merged like a region
    base = torch.from_numpy(rng.normal(size=(4, 16)).astype(np.float32))
    noise = torch.randn(cells.numel(), 16, generator=torch.Generator().manual_seed(seed))
    qk = torch.nn.functional.normalize(base[rng.integers(0, 4, cells.numel())] + 0.3 * noise, dim=-1)
    merged = engine.merge_regions(cells.reshape(-1).float(), qk)
    expected = guided.reference_merge_regions(cells, qk)
    assert torch.equal(merged.long().reshape(grid), expected)
    torch.testing.assert_close(engine.scope_attention(qk, merged), guided.reference_scope_attention(qk, expected),
                               atol=1e-6, rtol=0)


def test_proxy_attention_matches_the_reference():
    features = torch.randn(2, 60, 16, generator=torch.Generator().manual_seed(1))
    attention = engine.proxy_attention(features, 1.2, 3.0)
    for b in range(2):
        torch.testing.assert_close(attention[b], guided.reference_proxy_attention(features[b]), atol=1e-6, rtol=0)


def test_pad_regions_centres_like_the_windows():
    regions = torch.arange(6.0).reshape(1, 2, 3)
    padded = engine.pad_regions(regions, (5, 6))
    assert padded.shape == (1, 5, 6)
    assert torch.equal(padded[0, 1:3, 1:4], regions[0])
    assert (padded[0, 0] == 10000).all() and (padded[0, 3:] == 10000).all() and (padded[0, :, 4:] == 10000).all()


@pytest.mark.parametrize("seed", range(5))
def test_region_vote_is_the_authors_map_correction(seed):
    """Each region but the smallest-id one takes its most frequent label (the smallest on ties)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=(30, 40)).astype(np.uint8)
    regions = regions_for(30, 40, seed=seed, base=int(rng.integers(0, 3)))
    voted = region_vote(labels, regions)
    assert voted.dtype == np.uint8
    np.testing.assert_array_equal(voted, guided.reference_region_vote(labels.astype(np.int64), regions))
    unsegmented = regions == regions.min()
    np.testing.assert_array_equal(voted[unsegmented], labels[unsegmented])


def test_region_vote_ties_go_to_the_smallest_label():
    labels = np.array([[2, 2, 1, 1, 3]], np.uint8)
    regions = np.array([[0, 5, 5, 5, 5]])
    labels[0, 4] = 1  # region 5 holds 2, 1, 1, 1 → 1
    assert region_vote(labels, regions).tolist() == [[2, 1, 1, 1, 1]]
    tie = region_vote(np.array([[0, 3, 2, 3, 2]], np.uint8), np.array([[0, 9, 9, 9, 9]]))
    assert tie.tolist() == [[0, 2, 2, 2, 2]]


@pytest.mark.parametrize("regions, message", [
    (np.zeros((5, 7), np.int64), "the region map is 7×5, the image 8×5"),
    (np.full((5, 8), 10000), "region ids must be in 0…9999"),
    (np.full((5, 8), -1), "region ids must be in 0…9999"),
    (np.full((5, 8), 0.5), "integer ids"),
    (np.zeros((5, 8), bool), "integer ids"),
])
def test_bad_region_maps_are_one_line_errors(regions, message):
    with pytest.raises(itaclip.ItaclipError, match=message):
        check_region_map(regions, 5, 8)


def test_region_maps_as_users_have_them():
    assert check_region_map(np.ones((5, 8, 1), np.uint16), 5, 8).dtype == np.int64
    assert check_region_map(np.full((5, 8), 3.0), 5, 8).max() == 3


# ----------------------------------------------------------------------------------- the segmenter


@pytest.fixture(scope="module")
def corrclip(tiny_ckpt, dino_ckpt):
    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False, method="corrclip",
                            guide_weights=str(dino_ckpt), short_side=112, crop=112, stride=56)
    seg.set_vocabulary(["cat", "dog", "sky"])
    return seg


def test_corrclip_needs_a_region_map(corrclip):
    image = make_smooth_image(40, 50, seed=1)
    with pytest.raises(itaclip.ItaclipError, match="needs a region map per image"):
        corrclip.segment(image)
    with pytest.raises(itaclip.ItaclipError, match="the region map is 49×40, the image 50×40"):
        corrclip.segment(image, regions=np.zeros((40, 49), np.int64))


def test_corrclip_warns_where_its_authors_would_merge_names_otherwise(corrclip):
    """CorrCLIP's code takes the first Q − K + 1 names as class 0: equal to our max over each class's
    names only while no later class has several names."""
    seg = corrclip.with_config()
    with pytest.warns(UserWarning, match=r"1 class\(es\) after class 0 have several names \(first: dog, puppy\)"):
        seg.set_vocabulary(Vocabulary((("cat",), ("dog", "puppy"), ("sky",))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seg.set_vocabulary(Vocabulary((("wall", "floor", "sky"), ("cat",), ("dog",)), has_background=True))
        corrclip.for_method("proxyclip").set_vocabulary(Vocabulary((("cat",), ("dog", "puppy"))))
    assert [name for name in list_methods() if get_method(name).names_merged_for_class0_only] == ["corrclip"]


def test_region_source_is_asked_with_the_images_key(corrclip, tmp_path):
    """Without ``regions`` the segmenter asks its region source, with the image's path (or
    ``image_key``); segmenters made from it share the source."""
    import cv2

    image = make_smooth_image(40, 56, seed=2)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    asked = []

    def source(rgb, key):
        asked.append((rgb.shape, key))
        return regions_for(40, 56, seed=3)

    seg = corrclip.with_config()
    seg.region_source = source
    given = seg.segment(image, regions=regions_for(40, 56, seed=3))
    from_source = seg.segment(str(path))
    seg.segment(image, image_key="photos/a.png")
    assert asked == [((40, 56, 3), "a.png"), ((40, 56, 3), "photos/a.png")]
    np.testing.assert_array_equal(given.labels, from_source.labels)
    assert seg.for_method("corrclip", short_side=112, crop=112, stride=56).region_source is source


def test_regions_are_flipped_with_flip_views(corrclip):
    """With the hflip view alone (λ 0), the logits of an image equal those of its mirror image with the
    mirrored region map, flipped back: the region crops are flipped with the view."""
    image = make_smooth_image(56, 112, seed=4)  # one 112×224 window at short side 112: no padding
    regions = regions_for(56, 112, seed=5)
    flipped_view = corrclip.with_config(image_engineering=True, views=("hflip",), lam=0.0, crop=224)
    plain = corrclip.with_config(crop=224)
    seen = {}
    flipped_view.segment(image, regions=regions, on_similarity_maps=lambda x: seen.update(view=x.clone()))
    plain.segment(np.ascontiguousarray(image[:, ::-1]), regions=np.ascontiguousarray(regions[:, ::-1]),
                  on_similarity_maps=lambda x: seen.update(mirror=x.clone()))
    torch.testing.assert_close(seen["view"], seen["mirror"].flip(-1), atol=2e-6, rtol=0)


def test_guide_model_is_loaded_once_per_model(tiny_ckpt, dino_ckpt, monkeypatch):
    from itaclip.engine.weights import dino

    calls = []
    real = dino.load_guide
    monkeypatch.setattr(dino, "load_guide", lambda *a, **k: calls.append(a) or real(*a, **k))
    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False)
    assert calls == []  # ITACLIP needs no guide
    proxy = seg.for_method("proxyclip", guide_weights=str(dino_ckpt))
    corr = proxy.for_method("corrclip", guide_weights=str(dino_ckpt))
    proxy.with_config(proxy_beta=1.0)
    assert len(calls) == 1
    assert corr.encoder.dino.model is proxy.encoder.dino.model


# ---------------------------------------------------------------------------------- records, config


def test_records():
    proxy, corr = get_method("proxyclip"), get_method("corrclip")
    assert (proxy.pad_to, proxy.guide, proxy.regions, proxy.whole_image) == (56, True, False, "original")
    assert (corr.pad_to, corr.guide, corr.regions, corr.region_vote, corr.whole_image) == (56, True, True, True, None)
    for method in (proxy, corr):
        assert set(method.published) == {"voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff",
                                          "cityscapes", "ade20k"}
    assert round(sum(p.miou for p in proxy.published.values()) / 8, 1) == 42.3  # the paper's average
    assert round(sum(p.miou for p in corr.published.values()) / 8, 1) == 51.0  # the README's average


#: (method, preset) → (short side, crop, stride, prob_thd, classes, queries).
PRESETS = {
    ("proxyclip", "voc21"): (336, 336, 112, 0.2, 21, 46),
    ("proxyclip", "context60"): (336, 336, 112, 0.15, 60, 60),
    ("proxyclip", "coco_object"): (336, 336, 112, 0.25, 81, 97),
    ("proxyclip", "ade20k"): (448, 336, 112, 0.0, 150, 150),
    ("proxyclip", "cityscapes"): (448, 224, 112, 0.0, 19, 19),
    ("corrclip", "voc21"): (336, 336, 112, 0.2, 21, 46),
    ("corrclip", "coco_object"): (336, 336, 112, 0.25, 81, 96),
    ("corrclip", "coco_stuff"): (336, 336, 112, 0.0, 171, 171),
    ("corrclip", "cityscapes"): (448, 224, 112, 0.0, 19, 19),
}


@pytest.mark.parametrize("method, preset", list(PRESETS))
def test_presets_are_the_authors_configs(method, preset):
    c = build_config(preset, method=method)
    p = get_preset(preset, method)
    vocab = load_classes(p.classes, has_background=p.has_background)
    got = (c.short_side, c.crop, c.stride, c.prob_thd, vocab.num_classes, len(vocab.queries))
    assert got == PRESETS[method, preset]
    assert (c.logit_scale, c.pamr_steps, c.area_thd, c.closing, c.image_engineering) == (40.0, 0, None, False, False)
    assert (c.proxy_beta, c.proxy_gamma, c.guide_weights) == (1.2, 3.0, "dino_vitb8")


def test_corrclip_lists_say_people():
    assert "people" in load_classes("corrclip_voc20").names and "person" in load_classes("proxyclip_voc21").names


@pytest.mark.parametrize("overrides, message", [
    (dict(method="corrclip", crop=0), "crop 0 .* does not apply to method 'corrclip'"),
    (dict(method="naclip", proxy_beta=1.0), "ProxyCLIP's proxy attention"),
    (dict(method="corrclip", proxy_gamma=2.0), "ProxyCLIP's proxy attention"),
    (dict(method="proxyclip", proxy_gamma=0.0), "proxy gamma must be > 0"),
    (dict(method="proxyclip", guide_weights=" "), "guide weights"),
])
def test_config_errors(overrides, message):
    with pytest.raises(itaclip.ItaclipError, match=message):
        build_config(**overrides)


def test_corrclip_crop_zero_refused_through_replace_too():
    with pytest.raises(itaclip.ItaclipError, match="sliding windows only"):
        itaclip.Segmenter(config=build_config(method="corrclip").replace(crop=0), weights="never-loaded")


def test_default_weights_per_method(monkeypatch):
    """CorrCLIP runs its authors' MetaCLIP ViT-B/16 unless weights are named; every other method keeps
    OpenAI's ViT-B/16."""
    from itaclip.engine import predictor

    asked = []

    class Stop(Exception):
        pass

    def fake_load(weights, **kwargs):
        asked.append(weights)
        raise Stop

    monkeypatch.setattr(predictor, "load_backbone", fake_load)
    for method in ("corrclip", "proxyclip", "itaclip"):
        with pytest.raises(Stop):
            itaclip.Segmenter(method=method, device="cpu")
    with pytest.raises(Stop):
        itaclip.Segmenter(weights="ViT-B/16", method="corrclip", device="cpu")
    assert asked == ["ViT-B-16-quickgelu:metaclip_fullcc", "ViT-B/16", "ViT-B/16", "ViT-B/16"]
    assert default_weights("naclip") == "ViT-B/16"


def test_run_identities(dino_ckpt):
    """Guided runs name their guide model (a file by its bytes) and β/γ where they apply; no other
    method's identity names them."""
    from itaclip.engine.settings import prediction_settings, weights_identity
    from itaclip.engine.vocabulary import resolve_vocabulary

    vocab = resolve_vocabulary("cat, dog")
    proxy = prediction_settings(build_config(method="proxyclip"), vocab, "ViT-B/16")["config"]
    corr = prediction_settings(build_config(method="corrclip", guide_weights=str(dino_ckpt)), vocab, "x")["config"]
    naclip = prediction_settings(build_config(method="naclip"), vocab, "ViT-B/16")["config"]
    assert (proxy["guide_weights"], proxy["proxy_beta"], proxy["proxy_gamma"]) == ("dino_vitb8", 1.2, 3.0)
    assert corr["guide_weights"] == weights_identity(dino_ckpt) and "proxy_beta" not in corr
    assert not {"guide_weights", "proxy_beta", "proxy_gamma"} & set(naclip)


# ------------------------------------------------------------------------------------- precision


@pytest.mark.parametrize("method", ["proxyclip", "corrclip"])
@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_precision_modes_run_and_stay_close(tiny_ckpt, dino_ckpt, method, precision):
    """int8 and bf16 apply to CLIP and DINO alike; on these random models the probabilities stay near
    fp32's (docs/BENCHMARKS.md has the figures on ViT-B shapes)."""
    image = make_smooth_image(56, 84, seed=9)
    regions = regions_for(56, 84, seed=10)
    options = dict(weights=str(tiny_ckpt), device="cpu", text_cache=False, method=method,
                   guide_weights=str(dino_ckpt), short_side=112, crop=112, stride=56)
    exact = itaclip.Segmenter(**options)
    low = itaclip.Segmenter(precision=precision, **options)
    if precision == "int8":
        assert "quantized" in type(low.encoder.dino.linears[0]["qkv"]).__module__
    for seg in (exact, low):
        seg.set_vocabulary(["cat", "dog", "sky"])
    a, b = exact.segment(image, regions=regions), low.segment(image, regions=regions)
    assert np.isfinite(b.probs).all() and 0 < np.abs(a.probs - b.probs).max() < 0.2
