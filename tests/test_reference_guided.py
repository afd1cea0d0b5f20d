"""Tests of the guided methods' naive reference itself (tests/naive_guided.py): its DINO against timm's
ViT on the same weights, and each rule of ProxyCLIP/CorrCLIP against a hand computation on small,
hand-built inputs. (The reference's agreement with the authors' own code is recorded in its
docstring; this module checks that its pieces stay what they claim to be.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import naive_guided as guided
import naive_reference as ref
from helpers.images import make_smooth_image
from random_models import random_dino_state_dict

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def dino_state() -> dict:
    return random_dino_state_dict(embed_dim=64, depth=2, seed=3)


# ------------------------------------------------------------------------------------------- DINO


def test_random_dino_has_the_released_layout(dino_state):
    """The keys and shapes of ``dino_vitbase8_pretrain.pth`` (scaled down): timm's DINO ViT accepts
    them with strict=True, and the reference reads the architecture back."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_base_patch8_224", pretrained=False, embed_dim=64, depth=2, num_heads=1,
                              num_classes=0)
    model.load_state_dict(dino_state, strict=True)
    assert list(dino_state)[:4] == ["cls_token", "pos_embed", "patch_embed.proj.weight",
                                    "patch_embed.proj.bias"]
    assert dino_state["pos_embed"].shape == (1, 1 + 28 * 28, 64)
    assert guided.dino_dims(dino_state) == dict(width=64, patch=8, heads=1, layers=2, grid=28)
    two_heads = random_dino_state_dict(embed_dim=128, depth=4, patch_size=16, grid=14)
    assert guided.dino_dims(two_heads) == dict(width=128, patch=16, heads=2, layers=4, grid=14)


@pytest.mark.parametrize("width", [64, 128])
def test_dino_forward_matches_timm_at_224(width):
    """At 224² the positional table is used as stored, so DINO's forward is timm's: the final normed
    tokens and the last block's q + k agree to float rounding."""
    timm = pytest.importorskip("timm")
    state = random_dino_state_dict(embed_dim=width, depth=2, seed=width)
    model = timm.create_model("vit_base_patch8_224", pretrained=False, embed_dim=width, depth=2,
                              num_heads=width // 64, num_classes=0)
    model.load_state_dict(state, strict=True)
    model.eval()
    recorded = {}
    model.blocks[-1].attn.qkv.register_forward_hook(lambda module, args, out: recorded.setdefault("qkv", out))
    image = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.forward_features(image[None])[0]
        final, qk = guided.reference_dino_forward(state, image)
    qkv = recorded["qkv"][0]
    torch.testing.assert_close(final, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(qk, qkv[:, :width] + qkv[:, width:2 * width], atol=1e-5, rtol=0)


def test_dino_input_renormalisation():
    """x·s + m with CLIP's 0–1 statistics, then ImageNet's; a zero (padding) pixel becomes (m − μ)/σ."""
    window = torch.zeros(3, 2, 2)
    window[:, 0, 0] = torch.tensor([1.0, -2.0, 0.5])
    out = guided.reference_dino_input(window)
    for c in range(3):
        pad = (guided.CLIP_UNIT_MEAN[c] - guided.IMAGENET_MEAN[c]) / guided.IMAGENET_STD[c]
        assert float(out[c, 1, 1]) == pytest.approx(pad, abs=1e-6)
        value = float(window[c, 0, 0]) * guided.CLIP_UNIT_STD[c] + guided.CLIP_UNIT_MEAN[c]
        expected = (value - guided.IMAGENET_MEAN[c]) / guided.IMAGENET_STD[c]
        assert float(out[c, 0, 0]) == pytest.approx(expected, abs=1e-6)


def _cubic_matrix(n_out: int, n_in: int, scale: float) -> np.ndarray:
    """PyTorch's bicubic (A = −0.75, align_corners False) as an (n_out, n_in) matrix in float64, with the
    source coordinate (dst + 0.5)/scale − 0.5 and border taps clamped."""
    a = -0.75

    def near(x):  # |x| ≤ 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    matrix = np.zeros((n_out, n_in))
    for dst in range(n_out):
        src = (dst + 0.5) / scale - 0.5
        base = math.floor(src)
        t = src - base
        for tap, weight in zip(range(base - 1, base + 3), (far(t + 1), near(t), near(1 - t), far(2 - t))):
            matrix[dst, min(max(tap, 0), n_in - 1)] += weight
    return matrix


def _hand_table(state: dict, f_h: int, f_w: int, scale_h: float, scale_w: float) -> np.ndarray:
    n = guided.dino_dims(state)["grid"]
    table = state["pos_embed"][0, 1:].double().numpy().reshape(n, n, -1)
    rows, cols = _cubic_matrix(f_h, n, scale_h), _cubic_matrix(f_w, n, scale_w)
    return np.einsum("ai,ijc,bj->abc", rows, table, cols).reshape(f_h * f_w, -1)


@pytest.mark.parametrize("h, w", [(336, 336), (280, 336), (336, 448), (112, 448)])
def test_dino_positional_plus_point_one_rule(dino_state, h, w):
    """Resampled table = bicubic with scale factors ((fh + 0.1)/n, (fw + 0.1)/n), not a resize to
    (fh, fw); the class entry is kept. 112×448 has n² tokens but h ≠ w: DINO resamples it too."""
    n = 28
    f_h, f_w = h // 8, w // 8
    table = guided.reference_dino_positional(dino_state, h, w)
    assert table.shape == (1 + f_h * f_w, 64)
    torch.testing.assert_close(table[0], dino_state["pos_embed"][0, 0])
    expected = _hand_table(dino_state, f_h, f_w, (f_h + 0.1) / n, (f_w + 0.1) / n)
    np.testing.assert_allclose(table[1:].double().numpy(), expected, atol=1e-5, rtol=0)
    resized = _hand_table(dino_state, f_h, f_w, f_h / n, f_w / n)  # the rule this is not
    assert np.abs(table[1:].double().numpy() - resized).max() > 1e-3


def test_dino_positional_kept_for_square_224(dino_state):
    stored = dino_state["pos_embed"][0]
    assert torch.equal(guided.reference_dino_positional(dino_state, 224, 224), stored)
    # leftover pixels do not count: 231² is still a 28×28 grid; 224×231 has 28×28 tokens but h ≠ w,
    # so DINO resamples (scale 28.1/28: shifted values)
    assert torch.equal(guided.reference_dino_positional(dino_state, 231, 231), stored)
    assert not torch.allclose(guided.reference_dino_positional(dino_state, 224, 231), stored, atol=1e-3)


# ------------------------------------------------------------------------------------ label maps


@pytest.mark.parametrize("size_in, size_out", [((7, 9), (7, 9)), ((5, 6), (10, 12)), ((35, 42), (17, 21)),
                                               ((17, 21), (35, 42)), ((120, 161), (336, 451)),
                                               ((13, 3), (5, 11)), ((2, 2), (82, 94))])
def test_nearest_index_rule(size_in, size_out):
    """min(⌊dst · in/out⌋, in − 1) in float32 is what F.interpolate(mode='nearest') picks (2 -> 82 and
    2 -> 94 are sizes where the same rule in float64 picks other pixels)."""
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 50, size=size_in))
    expected = F.interpolate(labels[None, None].float(), size=size_out, mode="nearest")[0, 0].long()
    assert torch.equal(guided.reference_nearest(labels, size_out), expected)


def test_window_padding_amounts():
    assert guided.reference_pad_amounts(336, 448) == (0, 0, 0, 0)
    assert guided.reference_pad_amounts(301, 336) == (17, 18, 0, 0)
    assert guided.reference_pad_amounts(251, 301) == (14, 15, 17, 18)
    assert guided.reference_pad_amounts(57, 55) == (27, 28, 0, 1)


# ---------------------------------------------------------------------------------- region merging


def _unit(angle_deg: float, dim: int = 4) -> torch.Tensor:
    v = torch.zeros(dim)
    v[0], v[1] = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return v


def _components(distance: np.ndarray, eps: float) -> list[int]:
    """Connected components of the graph d ≤ eps, numbered in order of their lowest member."""
    r = len(distance)
    label = [-1] * r
    current = 0
    for start in range(r):
        if label[start] >= 0:
            continue
        stack, label[start] = [start], current
        while stack:
            i = stack.pop()
            for j in range(r):
                if label[j] < 0 and distance[i, j] <= np.float32(eps):
                    label[j] = current
                    stack.append(j)
        current += 1
    return label


def test_region_merging_is_connected_components_of_close_pairs():
    """Regions 3, 5, 8 form a chain (d(3,5), d(5,8) < 0.2 but d(3,8) > 0.2): one cluster; 10000 (the
    padding value) merges with 9; 6 stays alone. Region 0 (the smallest value) looks like 3 but is
    never merged and keeps its value."""
    # cell values on a 3×4 grid, and the feature direction (degrees) of each region
    grid = torch.tensor([[0, 3, 3, 5], [5, 8, 6, 6], [9, 9, 10000, 0]])
    angles = {0: 0.0, 3: 0.0, 5: 30.0, 8: 60.0, 6: 120.0, 9: 200.0, 10000: 215.0}
    qk = ref.l2_normalise(torch.stack([_unit(angles[int(v)]) for v in grid.reshape(-1)]))
    merged = guided.reference_merge_regions(grid, qk)

    values = [3, 5, 6, 8, 9, 10000]
    e = torch.stack([_unit(angles[v]) for v in values])
    t = e @ e.t()
    expected_clusters = _components((t.max() - t).numpy(), guided.DBSCAN_EPS)
    assert expected_clusters == [0, 0, 1, 0, 2, 2]  # the hand-built case is what it claims to be
    expected = grid.clone()
    for value, cluster in zip(values, expected_clusters):
        expected[grid == value] = guided.MERGE_OFFSET + cluster
    assert torch.equal(merged, expected)


def test_region_merging_needs_three_values():
    grid = torch.tensor([[0, 4], [4, 0]])
    qk = ref.l2_normalise(torch.randn(4, 3))
    assert torch.equal(guided.reference_merge_regions(grid, qk), grid)


def test_scope_attention_allowed_pairs():
    """Same region (not the smallest) -> allowed; any pair touching the smallest-valued region ->
    allowed only above the mean similarity; other pairs -> weight 0. Rows are softmax(4·S)."""
    merged = torch.tensor([[2, 10000, 10000], [10001, 2, 10001]])  # 2 = unsegmented
    angles = [0.0, 10.0, 170.0, 90.0, 100.0, 95.0]
    qk = torch.stack([_unit(a) for a in angles])
    attention = guided.reference_scope_attention(qk, merged)
    s = qk @ qk.t()
    mean = float(s.mean())
    labels = merged.reshape(-1).tolist()
    for a in range(6):
        allowed = [(labels[a] == labels[b] != 2)
                   or ((labels[a] == 2 or labels[b] == 2) and float(s[a, b]) > mean) for b in range(6)]
        weights = torch.tensor([math.exp(4 * float(s[a, b])) if ok else 0.0 for b, ok in enumerate(allowed)])
        torch.testing.assert_close(attention[a], (weights / weights.sum()).float(), atol=1e-6, rtol=0)
    assert float(attention[0, 2]) == 0  # unsegmented cell vs a dissimilar cell: blocked
    assert float(attention[1, 3]) == 0  # two different regions: blocked


# --------------------------------------------------------------------------------- region tokens


def test_region_token_mask_on_a_2x2_grid():
    """Tokens [mct_0, mct_1, cls, p0, p1, p2, p3] for the CLIP-grid map [[7, 3], [3, 3]] (ρ_0 = value 3 =
    patches 1, 2, 3; ρ_1 = value 7 = patch 0)."""
    mask, region_of_patch = guided.reference_region_token_mask(torch.tensor([[7, 3], [3, 3]]))
    allowed = [  # row attends to column
        [0, 0, 1, 0, 1, 1, 1],  # mct_0: cls and its patches only (not itself, not mct_1)
        [0, 0, 1, 1, 0, 0, 0],  # mct_1
        [0, 0, 1, 1, 1, 1, 1],  # cls: cls and patches, never the MCTs
        [0, 0, 1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1, 1],
    ]
    expected = torch.where(torch.tensor(allowed, dtype=torch.bool), 0.0, float("-inf"))
    assert torch.equal(mask, expected)
    assert region_of_patch.tolist() == [[1, 0], [0, 0]]


def test_region_tokens_leave_class_and_patch_tokens_unchanged(tiny_state):
    """With the mask, the class and patch tokens after CLIP's blocks are exactly vanilla CLIP's."""
    window = ref.reference_normalise(make_smooth_image(112, 112, seed=4))
    x = guided._clip_input_tokens(tiny_state, window)
    clip_map = torch.from_numpy(np.random.default_rng(1).integers(0, 3, size=(7, 7))) * 5
    mask, _ = guided.reference_region_token_mask(clip_map)
    n = mask.shape[0] - x.shape[0]
    assert n == len(torch.unique(clip_map))
    plain, with_tokens = x, torch.cat([x[:1].repeat(n, 1), x])
    for index in range(3):
        prefix = f"visual.transformer.resblocks.{index}"
        plain = ref._standard_block(plain, tiny_state, prefix, 1)
        with_tokens = ref._standard_block(with_tokens, tiny_state, prefix, 1, mask)
    torch.testing.assert_close(with_tokens[n:], plain, atol=1e-5, rtol=0)
    assert not torch.allclose(with_tokens[0], with_tokens[1])  # the region tokens did see different patches


def test_spatial_branch_blocks():
    assert guided.spatial_blocks(12) == [5, 6, 7, 8, 9]
    assert guided.spatial_blocks(24) == list(range(10, 22))
    assert guided.spatial_blocks(32) == list(range(2, 30))
    assert guided.spatial_blocks(6) == [2, 3]
    with pytest.raises(ValueError):
        guided.spatial_blocks(3)


# ------------------------------------------------------------------------------------ region vote


def test_region_vote_mode_with_ties_to_the_smallest_label():
    regions = np.array([[0, 0, 4, 4, 4],
                        [0, 2, 2, 4, 4],
                        [2, 2, 9, 9, 9]])
    labels = np.array([[5, 1, 3, 1, 3],
                       [6, 7, 7, 1, 2],
                       [0, 0, 4, 8, 8]])
    voted = guided.reference_region_vote(labels, regions)
    expected = np.array([[5, 1, 1, 1, 1],   # region 4: labels 3,1,3,1,2 -> tie 1/3 -> 1
                         [6, 0, 0, 1, 1],   # region 2: 7,7,0,0 -> tie -> 0; region 0 untouched
                         [0, 0, 8, 8, 8]])  # region 9: 4,8,8 -> 8
    np.testing.assert_array_equal(voted, expected)
    # without a 0 the smallest id present is the one left alone
    shifted = guided.reference_region_vote(labels, regions + 3)
    np.testing.assert_array_equal(shifted[regions == 0], labels[regions == 0])


def test_corrclip_probabilities_are_taken_before_the_vote(tiny_state, dino_state, tmp_path):
    """End to end on a tiny image (the DINO weights given as a file): the probabilities do not depend on
    the vote, labels are constant on every region but the smallest-valued one."""
    image = make_smooth_image(56, 70, seed=9)
    regions = np.zeros((56, 70), np.int64)
    regions[5:30, 10:40], regions[30:50, 20:70] = 3, 8
    classes = [("sky", "wall"), ("cat",), ("dog",)]
    options = dict(method="corrclip", guide_state=dino_state, regions=regions, short_side=112, crop=112,
                   stride=56)
    torch.save(dino_state, tmp_path / "dino.pth")
    probs, labels = guided.reference_segment(tiny_state, image, classes, True,
                                             **dict(options, guide_state=tmp_path / "dino.pth"))
    assert probs.shape == (3, 56, 70) and labels.shape == (56, 70)
    for value in (3, 8):
        assert len(np.unique(labels[regions == value])) == 1
    text, query_class = ref.reference_text_features(tiny_state, classes, True)
    with torch.no_grad():
        logits = guided.reference_logits(tiny_state, image, text, **options)
    plain_probs, _ = ref.reference_postprocess(logits, query_class, closing=False)
    np.testing.assert_array_equal(probs, plain_probs)
