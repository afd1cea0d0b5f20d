"""The DINO-guided methods (ProxyCLIP, CorrCLIP) on the engine equal their naive reference
(tests/naive_guided.py) within float rounding, for every guided method of the registry.

Two stages, because both methods cut DINO's similarities hard (ProxyCLIP: S′ < 0; CorrCLIP: S > mean
and the merging radius): a rounding-level difference in DINO's features (1e-6) flips an entry
lying on a cut now and then, which moves a window's logits by up to ~1e-3. So DINO's outputs are
compared with the reference's DINO as a stage of their own (to 1e-5), and everything after DINO is
compared with the engine's DINO outputs put into the reference (its ``reference_dino_forward``
replaced), to float rounding: logits ``LOGIT_ATOL``, probabilities ``PROB_ATOL``, labels equal
except at the reference's near-ties.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import naive_guided as guided
import naive_reference as ref
from helpers.exactness import LOGIT_ATOL, PROB_ATOL, SMALL, LargestDifferences, assert_labels_match
from helpers.guided import engine_dino_forward, regions_for
from helpers.images import make_smooth_image
from helpers.models import random_dino_state_dict

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("single_thread")]

itaclip = pytest.importorskip("itaclip")
from itaclip.engine.methods import get_method, list_methods  # noqa: E402

#: Every method of the registry steered by the guide model.
GUIDED = [name for name in list_methods() if get_method(name).guide]
DINO_ATOL = 1e-5
#: One name per class but the background set: what CorrCLIP's code merges correctly (helpers.exactness has "puppy").
VOC_LIKE = [("sky", "wall", "tree"), ("cat",), ("dog",), ("car",)]

LARGEST = LargestDifferences("engine (its DINO injected) vs reference")


def test_the_registry_has_the_guided_methods():
    assert GUIDED == ["proxyclip", "corrclip"]
    assert set(GUIDED) <= set(guided.REFERENCE_METHODS)


@pytest.fixture(scope="module", autouse=True)
def report_max_differences():
    yield
    LARGEST.report()


@pytest.fixture(scope="module")
def segmenters(tiny_ckpt, dino_ckpt):
    """``make(method, **overrides)`` → a Segmenter of ``method`` sharing one loaded CLIP and DINO."""
    base = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False, method="proxyclip",
                             guide_weights=str(dino_ckpt))

    def make(method: str, **overrides):
        return base.for_method(method, guide_weights=str(dino_ckpt), **overrides)

    return make


def compare(seg, state, image, classes, has_background=False, regions=None, monkeypatch=None) -> dict:
    """Run the engine and the reference (with the engine's DINO when ``monkeypatch`` is given) and
    assert text features, logits, probabilities and labels agree; returns the reference's outputs."""
    cfg = seg.config
    seg.set_vocabulary([", ".join(names) for names in classes], has_background=has_background)
    text, query_class = ref.reference_text_features(state, classes, has_background, None, 0.0)
    torch.testing.assert_close(seg.text_features.cpu(), text, atol=1e-5, rtol=0)
    if monkeypatch is not None:
        monkeypatch.setattr(guided, "reference_dino_forward", engine_dino_forward(seg.encoder.dino))
    seen = {}
    result = seg.segment(image, regions=regions, on_similarity_maps=lambda logits: seen.update(logits=logits.clone()))
    with torch.no_grad():
        logits = guided.reference_logits(state, image, text, method=cfg.method, guide_state=guided.load_guide_state(
            {k: v for k, v in seg.encoder.dino.model.state_dict().items()}), regions=regions,
            short_side=cfg.short_side, crop=cfg.crop, stride=cfg.stride, proxy_beta=cfg.proxy_beta,
            proxy_gamma=cfg.proxy_gamma)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(seen["logits"], logits, atol=LOGIT_ATOL, rtol=0)
    probs, labels = ref.reference_postprocess(logits, query_class, logit_scale=cfg.logit_scale, prob_thd=cfg.prob_thd,
                                              area_thd=None, closing=False)
    np.testing.assert_allclose(result.probs, probs, atol=PROB_ATOL, rtol=0)
    LARGEST.record(cfg.method, np.abs(result.probs - probs).max())
    if get_method(cfg.method).region_vote:
        labels = guided.reference_region_vote(labels, regions)
    assert_labels_match(result.labels, labels, probs, closing=False, prob_thd=cfg.prob_thd)
    return dict(probs=probs, labels=labels, result=result)


def regions_if_needed(method: str, image: np.ndarray, seed: int = 0):
    return regions_for(*image.shape[:2], seed=seed) if get_method(method).regions else None


# ----------------------------------------------------------------------------------------- DINO stage


@pytest.mark.parametrize("size", [(224, 224), (280, 336), (112, 168), (336, 336), (230, 251)])
def test_dino_outputs_match_the_reference(dino_state, size):
    """The engine's DINO (batched, DINO's '+0.1' positional rule, the CLIP → ImageNet
    re-normalisation) against the reference's DINO: final tokens and last-block q + k, with square,
    non-square, 1764-token and leftover-pixel windows."""
    from itaclip.engine.encoders.dino import DinoTrunk
    from itaclip.engine.weights.dino import build_dino

    trunk = DinoTrunk(build_dino(dino_state, "test"))
    windows = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    with torch.no_grad():
        final, qk = trunk.final_features(windows), trunk.last_query_key(windows)
    for b in range(2):
        ref_final, ref_qk = guided.reference_dino_forward(dino_state, guided.reference_dino_input(windows[b]))
        torch.testing.assert_close(final[b], ref_final[1:], atol=DINO_ATOL, rtol=0)
        torch.testing.assert_close(qk[b], ref_qk[1:], atol=DINO_ATOL, rtol=0)
    assert final.shape == (2, (size[0] // 8) * (size[1] // 8), 64)


def test_dino_positional_rule_is_dinos_not_a_resize(dino_state):
    """At 336² the table is resampled with the scale factor (42.1/28), which differs from resizing to
    42×42 (timm's rule) — the engine follows DINO's."""
    import torch.nn.functional as F

    from itaclip.engine.encoders.dino import DinoTrunk
    from itaclip.engine.weights.dino import build_dino

    trunk = DinoTrunk(build_dino(dino_state, "test"))
    table = trunk.positional_embedding(336, 336)
    torch.testing.assert_close(table, guided.reference_dino_positional(dino_state, 336, 336), atol=1e-6, rtol=0)
    grid = dino_state["pos_embed"][0, 1:].reshape(1, 28, 28, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(42, 42), mode="bicubic", align_corners=False)
    assert (resized[0].permute(1, 2, 0).reshape(42 * 42, -1) - table[1:]).abs().max() > 1e-3
    assert torch.equal(trunk.positional_embedding(224, 224), trunk.model.pos_embed[0])  # 28×28 square: as stored
    assert trunk.positional_embedding(336, 336) is table  # computed once per size


# ------------------------------------------------------------------------------ the methods, DINO injected


@pytest.mark.parametrize("method", GUIDED)
def test_sliding_windows(segmenters, tiny_state, method, monkeypatch):
    """224-pixel windows (multiples of 56: no padding) at stride 112 over a 224×299 image."""
    image = make_smooth_image(72, 96, seed=60)
    seg = segmenters(method, short_side=224, crop=224, stride=112)
    compare(seg, tiny_state, image, SMALL, regions=regions_if_needed(method, image), monkeypatch=monkeypatch)


@pytest.mark.parametrize("method", GUIDED)
def test_windows_padded_to_multiples_of_56(segmenters, tiny_state, method, monkeypatch):
    """200-pixel windows padded to 224 (12 pixels before and after); CorrCLIP's padding pixels carry
    region 10000 (a region of their own, merged like the others)."""
    image = make_smooth_image(72, 96, seed=61)
    seg = segmenters(method, short_side=200, crop=200, stride=100)
    compare(seg, tiny_state, image, SMALL, regions=regions_if_needed(method, image, seed=1), monkeypatch=monkeypatch)


@pytest.mark.parametrize("method", GUIDED)
def test_non_square_padded_window(segmenters, tiny_state, method, monkeypatch):
    """One 150×200 window (the image is smaller than the crop) padded to 168×224: DINO grid 21×28, CLIP
    grid 10×14 — the general form of the authors' square-only grids."""
    image = make_smooth_image(60, 80, seed=62)
    seg = segmenters(method, short_side=150, crop=336, stride=112)
    compare(seg, tiny_state, image, VOC_LIKE, True, regions=regions_if_needed(method, image, seed=2),
            monkeypatch=monkeypatch)


def test_proxyclip_whole_image(segmenters, tiny_state, monkeypatch):
    """crop 0: one unpadded pass on the 151×201 image (DINO 18×25 cells, 7 and 1 leftover pixels
    dropped), logits resized straight to the original size."""
    image = make_smooth_image(72, 96, seed=63)
    seg = segmenters("proxyclip", short_side=151, crop=0)
    compare(seg, tiny_state, image, SMALL, monkeypatch=monkeypatch)


@pytest.mark.parametrize("method", GUIDED)
def test_batch_one_vs_many(segmenters, tiny_state, method, monkeypatch):
    """Windows encoded one at a time and all at once give the reference's values; CorrCLIP's windows
    have different numbers of regions (padded region tokens)."""
    image = make_smooth_image(66, 100, seed=64)
    regions = regions_if_needed(method, image, seed=3)
    options = dict(short_side=168, crop=168, stride=56)
    single, many = segmenters(method, batch_size=1, **options), segmenters(method, batch_size=64, **options)
    info = compare(single, tiny_state, image, SMALL, regions=regions, monkeypatch=monkeypatch)
    compare(many, tiny_state, image, SMALL, regions=regions, monkeypatch=monkeypatch)
    np.testing.assert_allclose(single.segment(image, regions=regions).probs, info["result"].probs, atol=2e-6, rtol=0)


def test_proxyclip_beta_gamma_and_thresholds(segmenters, tiny_state, monkeypatch):
    image = make_smooth_image(64, 64, seed=65)
    seg = segmenters("proxyclip", short_side=168, crop=168, stride=112, proxy_beta=0.8, proxy_gamma=5.0, prob_thd=0.4)
    compare(seg, tiny_state, image, VOC_LIKE, True, monkeypatch=monkeypatch)


@pytest.mark.parametrize("case", ["no zero", "one region", "two values", "upsampled", "largest ids"])
def test_corrclip_region_maps(segmenters, tiny_state, case, monkeypatch):
    """Region maps as users have them: the smallest id is "unsegmented" whatever it is; one or two
    distinct ids (no merging); a map smaller than the working size (nearest upsampling); ids up to 9999."""
    image = make_smooth_image(60, 84, seed=66)
    regions = {
        "no zero": regions_for(60, 84, seed=4, base=4),
        "one region": np.full((60, 84), 7, np.int64),
        "two values": np.where(np.arange(84)[None, :] < 30, 2, 5).repeat(60, axis=0),
        "upsampled": regions_for(60, 84, seed=5, count=8),
        "largest ids": np.unique(regions_for(60, 84, seed=6), return_inverse=True)[1].reshape(60, 84) + 9993,
    }[case]
    assert regions.max() < 10000
    seg = segmenters("corrclip", short_side=112 if case == "upsampled" else 168, crop=112, stride=56)
    compare(seg, tiny_state, image, SMALL, regions=regions, monkeypatch=monkeypatch)


def test_two_heads(two_head_ckpt, two_head_state, monkeypatch, tmp_path):
    """Width-128 CLIP (2 heads) and width-128 DINO (2 heads): heads are split and merged as the
    authors' models do, for both methods."""
    dino = tmp_path / "dino128.pth"
    torch.save(random_dino_state_dict(embed_dim=128, depth=2, seed=9), dino)
    base = itaclip.Segmenter(weights=str(two_head_ckpt), device="cpu", text_cache=False, method="proxyclip",
                             guide_weights=str(dino), short_side=168, crop=168, stride=112)
    image = make_smooth_image(56, 70, seed=67)
    for method in GUIDED:
        seg = base.for_method(method, guide_weights=str(dino), short_side=168, crop=168, stride=112)
        compare(seg, two_head_state, image, SMALL, regions=regions_if_needed(method, image, seed=7),
                monkeypatch=monkeypatch)


# ----------------------------------------------------------------------------------------- as a whole


@pytest.mark.parametrize("method", GUIDED)
def test_reference_segment_end_to_end(segmenters, tiny_state, dino_state, method):
    """The reference's one-call API (its own DINO) against Segmenter.segment: probabilities within
    the DINO stage's rounding, labels equal (CorrCLIP: after the region vote)."""
    image = make_smooth_image(70, 90, seed=68)
    regions = regions_if_needed(method, image, seed=8)
    seg = segmenters(method, short_side=168, crop=168, stride=112, prob_thd=0.3)
    seg.set_vocabulary(["cat", "dog", "sky"])
    result = seg.segment(image, regions=regions)
    probs, labels = guided.reference_segment(tiny_state, image, SMALL, False, method=method, guide_state=dino_state,
                                             regions=regions, short_side=168, crop=168, stride=112, prob_thd=0.3)
    np.testing.assert_allclose(result.probs, probs, atol=1e-3, rtol=0)
    assert_labels_match(result.labels, labels, probs, closing=False, prob_thd=0.3, tie_tol=2e-3)


def test_proxyclip_all_masked_window_attends_to_itself(segmenters, tiny_state, monkeypatch):
    """β large enough that every S′ of a window is negative, the diagonal included: the authors' code
    gives NaN logits there; the engine lets each such row attend to itself only (docs/METHOD.md), and
    equals the reference with that rule wherever the reference is finite."""
    image = make_smooth_image(56, 56, seed=69)
    seg = segmenters("proxyclip", short_side=112, crop=112, stride=56, proxy_beta=50.0)
    seg.set_vocabulary(["cat", "dog", "sky"])
    result = seg.segment(image)
    assert np.isfinite(result.probs).all()
    text, _ = ref.reference_text_features(tiny_state, SMALL, False, None, 0.0)
    monkeypatch.setattr(guided, "reference_dino_forward", engine_dino_forward(seg.encoder.dino))
    dino_state = {k: v for k, v in seg.encoder.dino.model.state_dict().items()}
    with torch.no_grad():
        authors = guided.reference_logits(tiny_state, image, text, method="proxyclip", guide_state=dino_state,
                                          short_side=112, crop=112, stride=56, proxy_beta=50.0)
        assert torch.isnan(authors).all()

        def attends_to_itself(final_patches, beta=1.2, gamma=3.0):
            return torch.eye(final_patches.shape[0])

        monkeypatch.setattr(guided, "reference_proxy_attention", attends_to_itself)
        rule = guided.reference_logits(tiny_state, image, text, method="proxyclip", guide_state=dino_state,
                                       short_side=112, crop=112, stride=56, proxy_beta=50.0)
    seen = {}
    seg.segment(image, on_similarity_maps=lambda logits: seen.update(logits=logits.clone()))
    torch.testing.assert_close(seen["logits"], rule, atol=LOGIT_ATOL, rtol=0)


@pytest.mark.parametrize("method", GUIDED)
def test_tlp_after_the_guided_maps(segmenters, tiny_state, method, monkeypatch):
    """PEARL's TLP is a refinement for every method: after a guided method's maps it gives the
    reference's TLP of the reference's maps (the engine's DINO injected; TLP's 25 CG steps amplify
    float rounding, hence naive_frontier's own tolerance for TLP)."""
    import naive_frontier as nf
    from helpers.exactness import logit_tolerance

    image = make_smooth_image(60, 80, seed=64)
    regions = regions_if_needed(method, image, seed=3)
    seg = segmenters(method, short_side=224, crop=224, stride=112, tlp=True, tlp_grid=30)
    seg.set_vocabulary(["cat", "dog", "sky"])
    text, _ = ref.reference_text_features(tiny_state, SMALL, False, None, 0.0)
    monkeypatch.setattr(guided, "reference_dino_forward", engine_dino_forward(seg.encoder.dino))
    seen = {}
    seg.segment(image, regions=regions, on_similarity_maps=lambda logits: seen.update(logits=logits.clone()))
    with torch.no_grad():
        maps = guided.reference_logits(tiny_state, image, text, method=method, guide_state=guided.load_guide_state(
            dict(seg.encoder.dino.model.state_dict())), regions=regions, short_side=224, crop=224, stride=112)
        resized = ref.reference_normalise(ref.reference_resize(image, 224))
        expected = nf.reference_tlp(maps, ref._bilinear(resized, image.shape[:2]), text, 30)
    torch.testing.assert_close(seen["logits"], expected, atol=logit_tolerance(seg.config), rtol=0)
