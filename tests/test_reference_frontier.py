"""The naive reference of SC-CLIP, SFP, PEARL and ResCLIP (tests/naive_frontier.py) checked against
independent facts: hand-built inputs whose answers are known, the same formulas written once more
(numpy, float64, or another formulation), and the limits the iterations converge to. Nothing here
touches the engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import naive_frontier as nf
import naive_reference as ref
from helpers.images import make_smooth_image

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("single_thread")]


# ------------------------------------------------------------------------------------ block numbers


def test_block_numbers_per_depth():
    assert nf.frontier_blocks("scclip", 12) == dict(outliers=11, pre=9, post=4, multi=tuple(range(4, 11)), res_cls=0.3)
    # the authors' ViT-L/14 answer (list indices 16 / 6 / 8…18 of the outputs of blocks 1 … 23)
    assert nf.frontier_blocks("scclip", 24) == dict(outliers=23, pre=17, post=7, multi=tuple(range(9, 20)),
                                                    res_cls=0.1)
    assert nf.frontier_blocks("sfp", 24)["multi"] == tuple(range(4, 11))  # hard-coded in SFP's code
    assert nf.frontier_blocks("resclip", 12) == dict(rcs=(6, 7, 8, 9))
    assert nf.frontier_blocks("pearl", 6) == {}
    for method in ("scclip", "sfp", "resclip"):
        with pytest.raises(ValueError, match="12- and 24-block"):
            nf.frontier_blocks(method, 6)


# ---------------------------------------------------------------------------------------------- LOF


def _cluster_with_outliers(seed: int = 0):
    """190 points in a tight 8-D cluster and 10 far points, each far from all others."""
    rng = np.random.default_rng(seed)
    points = rng.normal(0, 1, size=(200, 8))
    far = rng.choice(200, size=10, replace=False)
    directions = rng.normal(0, 1, size=(10, 8))
    points[far] = 40 * directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.uniform(1, 2, (10, 1))
    return torch.tensor(points, dtype=torch.float32), sorted(far.tolist())


def _lof_rederived(points: np.ndarray, k: int = 30, contamination: float = 0.05):
    """SC-CLIP's variant written from its definition in float64: with squared distances and each
    point's own k-distance kd_i in the reachability, LRD_i = k / kd_i and LOF_i = mean_j kd_i / kd_j."""
    d2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    order = np.argsort(d2, axis=1, kind="stable")[:, 1:k + 1]
    kd = np.take_along_axis(d2, order[:, -1:], axis=1)[:, 0]
    scores = np.array([np.mean(kd[i] / kd[order[i]]) for i in range(len(points))])
    threshold = np.quantile(scores, 1 - contamination, method="linear")
    return scores, [i for i in range(len(points)) if scores[i] > threshold]


def test_lof_finds_the_planted_outliers_and_matches_a_rederivation():
    points, planted = _cluster_with_outliers()
    outliers, scores = nf.reference_lof(points)
    assert outliers == planted
    expected_scores, expected_outliers = _lof_rederived(points.double().numpy())
    np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=2e-5)
    assert outliers == expected_outliers


def test_lof_threshold_is_strict_and_interpolated():
    """200 scores: the 95 % quantile lies between the 190th and 191st sorted values, so exactly 10 are
    above it; on a random cloud the selection equals numpy's quantile rule."""
    points = torch.tensor(np.random.default_rng(3).normal(size=(120, 5)), dtype=torch.float32)
    outliers, scores = nf.reference_lof(points)
    threshold = np.quantile(scores.double().numpy(), 0.95, method="linear")
    assert outliers == [i for i in range(120) if float(scores[i]) > threshold]
    assert len(outliers) == 6  # strictly above sorted position 0.95·119 = 113.05: positions 114 … 119
    with pytest.raises(ValueError, match="more than 30"):
        nf.reference_lof(points[:30])


# ---------------------------------------------------------------------- outlier positions and fill


def test_outlier_positions_divide_by_the_row_count():
    assert nf.outlier_positions([0, 5, 13, 15], 4, 4) == [(0, 0), (1, 1), (3, 1), (3, 3)]  # square: row-major
    # 2×3 grid: token 3 is row-major (1, 0) but the authors' formula puts it at (1, 1)
    assert nf.outlier_positions([3], 2, 3) == [(1, 1)]
    with pytest.raises(ValueError, match=r"outlier token 4 maps to \(2, 0\) outside the 2×3 patch grid"):
        nf.outlier_positions([4], 2, 3)
    with pytest.raises(ValueError, match=r"maps to \(0, 2\) outside the 3×2"):
        nf.outlier_positions([2], 3, 2)


def test_fill_on_a_hand_built_grid():
    grid = torch.arange(20, dtype=torch.float32).reshape(4, 5, 1) * torch.tensor([1.0, -2.0])  # (4, 5, 2)
    values = grid[..., 0]
    # (1, 1): neighbours of an interior point, minus the listed (1, 2); (1, 2) likewise minus (1, 1);
    # (3, 4): a corner with its 3 neighbours; (0, 0) with all in-grid neighbours listed -> isolated
    isolated = [(0, 0), (0, 1), (1, 0)]
    positions = [(1, 1), (1, 2), (3, 4)] + isolated
    out = nf.reference_fill(grid, positions)
    expect_11 = np.mean([values[r, c] for r, c in [(0, 2), (2, 0), (2, 1), (2, 2)]])
    expect_12 = np.mean([values[r, c] for r, c in [(0, 2), (0, 3), (1, 3), (2, 1), (2, 2), (2, 3)]])
    expect_34 = np.mean([values[r, c] for r, c in [(2, 3), (2, 4), (3, 3)]])
    assert float(out[1, 1, 0]) == pytest.approx(expect_11) and float(out[1, 1, 1]) == pytest.approx(-2 * expect_11)
    assert float(out[1, 2, 0]) == pytest.approx(expect_12)
    assert float(out[3, 4, 0]) == pytest.approx(expect_34)
    assert torch.equal(out[0, 0], grid[0, 0])  # SC-CLIP: no valid neighbour -> unchanged
    assert float(out[0, 1, 0]) == pytest.approx(float(values[0, 2]))  # its only unlisted neighbour
    unlisted = torch.ones(4, 5, dtype=torch.bool)
    for r, c in positions:
        unlisted[r, c] = False
    assert torch.equal(out[unlisted], grid[unlisted])
    sfp = nf.reference_fill(grid, positions, keep_isolated=False)
    assert torch.equal(sfp[0, 0], torch.zeros(2)) and torch.equal(sfp[1, 1], out[1, 1])
    assert torch.equal(nf.reference_fill(grid, []), grid)


def test_fill_equals_the_convolution_form():
    """The authors' formulation: 3×3 ones kernel without centre on the masked map / the same
    convolution of the mask, written to every listed position that has a valid neighbour."""
    g = torch.Generator().manual_seed(5)
    grid = torch.randn(7, 7, 3, generator=g)
    positions = [(0, 0), (0, 1), (3, 3), (3, 4), (6, 6), (2, 5)]
    mask = torch.ones(1, 1, 7, 7)
    for r, c in positions:
        mask[0, 0, r, c] = 0
    kernel = torch.ones(1, 1, 3, 3)
    kernel[0, 0, 1, 1] = 0
    fmap = grid.permute(2, 0, 1)[:, None]  # (3, 1, 7, 7)
    sums = F.conv2d(fmap * mask, kernel, padding=1)
    counts = F.conv2d(mask, kernel, padding=1)
    expected = grid.clone()
    for r, c in positions:
        if counts[0, 0, r, c] > 0:
            expected[r, c] = sums[:, 0, r, c] / counts[0, 0, r, c]
    torch.testing.assert_close(nf.reference_fill(grid, positions), expected, atol=1e-6, rtol=0)


def test_som_outliers_on_a_hand_built_map():
    """Row 0 is scaled by res_cls·5 per head *before* the head mean; candidates beat their own
    self-attention strictly; the largest scaled values first, at most ``top``."""
    attention = torch.zeros(2, 5, 5)
    attention[:, 0, 1:] = torch.tensor([[0.25, 0.125, 0.5, 0.375], [0.25, 0.375, 0.0, 0.375]])  # mean .25 .25 .25 .375
    attention[:, 1:, 1:] = torch.diag(torch.tensor([0.25, 0.125, 0.5, 0.375]))
    # res_cls 0.2 -> ×1: only patch 1 beats its self-attention; equal values are not candidates
    assert nf.reference_som_outliers(attention, 0.2) == [1]
    # res_cls 0.4 -> ×2: .5 .5 .5 .75 -> patches 0, 1, 3; largest first, ties in index order
    assert nf.reference_som_outliers(attention, 0.4) == [3, 0, 1]
    assert nf.reference_som_outliers(attention, 0.4, top=2) == [3, 0]
    assert nf.reference_som_outliers(attention, 0.1) == []  # ×0.5: none


# -------------------------------------------------------------------------- PEARL: polar factor


def _newton_schulz_again(m: np.ndarray, steps: int) -> np.ndarray:
    a = m.T @ m
    norm = max(np.linalg.norm(a), 1e-6)
    y, z, eye = a / norm + 1e-6 * np.eye(len(m)), np.eye(len(m)), np.eye(len(m))
    for _ in range(steps):
        t = 1.5 * eye - 0.5 * z @ y
        y, z = y @ t, t @ z
    return m @ z / np.sqrt(norm)


def test_newton_schulz_is_five_steps_not_the_exact_polar_factor():
    g = torch.Generator().manual_seed(2)
    u, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    v, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    m = u @ torch.diag(torch.linspace(0.3, 3.0, 8)) @ v.t()  # singular values 0.3 … 3
    five = nf.reference_newton_schulz_polar(m)
    np.testing.assert_allclose(five.numpy(), _newton_schulz_again(m.double().numpy(), 5), atol=1e-5)
    exact = nf.reference_svd_polar(m)
    torch.testing.assert_close(exact, u @ v.t(), atol=1e-5, rtol=0)
    # 5 steps are not converged for this spread of singular values: not orthogonal, not U Vᵀ ...
    assert float((five.t() @ five - torch.eye(8)).abs().max()) > 0.05
    assert float((five - exact).abs().max()) > 0.02
    # ... but the iteration does converge to it
    many = nf.reference_newton_schulz_polar(m, iterations=40)
    torch.testing.assert_close(many, exact, atol=2e-4, rtol=0)
    errors = [float((nf.reference_newton_schulz_polar(m, iterations=n) - exact).abs().max()) for n in (1, 3, 5, 8)]
    assert errors == sorted(errors, reverse=True)


# ------------------------------------------------------------------------------------- PEARL: TLP


def _dense_tlp_system(logits: np.ndarray, guide: np.ndarray, diag: np.ndarray):
    """(Cw + L) x = Cw·ℓ written as one dense matrix per channel, from the formulas in float64."""
    q, h, w = logits.shape
    p = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    conf = p.max(0)
    agree = np.clip((diag[:, None, None] * p * p).sum(0), 0, 1)
    cw = np.maximum(conf, 0.05) ** 2 * (1 + agree)
    grey = 0.299 * guide[0] + 0.587 * guide[1] + 0.114 * guide[2]
    gx, gy = np.abs(np.diff(grey, axis=1)), np.abs(np.diff(grey, axis=0))
    gx, gy = gx / (gx.mean() + 1e-6), gy / (gy.mean() + 1e-6)
    gate_h = (p[:, :, 1:] * diag[:, None, None] * p[:, :, :-1]).sum(0)
    gate_v = (p[:, 1:, :] * diag[:, None, None] * p[:, :-1, :]).sum(0)
    w_h = np.clip(np.exp(-5 * gx) * (1 + np.clip(gate_h, 0, 1)), 0, 1)
    w_v = np.clip(np.exp(-5 * gy) * (1 + np.clip(gate_v, 0, 1)), 0, 1)
    n = h * w
    system = np.diag(cw.reshape(-1))
    for i in range(h):
        for j in range(w):
            edges = (((i, j + 1), w_h[i, j] if j + 1 < w else 0), ((i + 1, j), w_v[i, j] if i + 1 < h else 0))
            for (a, b), weight in edges:
                if weight:
                    s, t = i * w + j, a * w + b
                    # out[t] += w (x_t − x_s), out[s] −= w (x_t − x_s): the graph Laplacian
                    system[t, t] += weight
                    system[t, s] -= weight
                    system[s, s] += weight
                    system[s, t] -= weight
    rhs = cw.reshape(-1) * logits.reshape(q, n)
    assert n == system.shape[0]
    return np.stack([np.linalg.solve(system, rhs[c]) for c in range(q)]).reshape(q, h, w)


@pytest.mark.parametrize("queries, h, w, scale, steps", [(3, 6, 7, 1.0, 25), (8, 12, 14, 0.2, 100)])
def test_tlp_conjugate_gradient_reaches_the_dense_solution(queries, h, w, scale, steps):
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(queries, h, w, generator=g) * scale
    guide = torch.randn(3, h, w, generator=g)
    text = torch.randn(queries, 16, generator=g)
    diag = torch.diagonal(nf.reference_tlp_affinity(text)).double().numpy()
    expected = _dense_tlp_system(logits.double().numpy(), guide.double().numpy(), diag)
    solved = nf.reference_tlp(logits, guide, text, grid=80, iterations=steps)
    np.testing.assert_allclose(solved.numpy(), expected, atol=1e-5)
    if steps > 25:
        # near-uniform probabilities make the data term small: the authors' 25 steps stop short
        # of the solution — the reference reproduces the iteration, not the solution
        assert float(np.abs(nf.reference_tlp(logits, guide, text, grid=80).numpy() - expected).max()) > 1e-3


def test_tlp_text_affinity_on_orthogonal_texts():
    """T Tᵀ = I: softmax(I / 0.5) rows = (e², 1, 1)/(e² + 2); + 10 on the diagonal; rows / (sum + 1e-6)."""
    affinity = nf.reference_tlp_affinity(torch.eye(3) * 4.0)  # re-normalised inside
    e2 = math.exp(2)
    row_sum = 1 + 10
    assert float(affinity[0, 0]) == pytest.approx((e2 / (e2 + 2) + 10) / (row_sum + 1e-6), rel=1e-6)
    assert float(affinity[0, 1]) == pytest.approx((1 / (e2 + 2)) / (row_sum + 1e-6), rel=1e-6)


def test_tlp_pooling_rounds_half_to_even_and_drops_trailing_rows():
    """101×100 with grid 40: sh = round(2.525) = 3, sw = round(2.5) = 2 (half to even); the pooled
    solve is the unpooled solve of the block means, resized back; the 2 trailing rows are ignored."""
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(4, 101, 100, generator=g) * 0.3
    guide = torch.randn(3, 101, 100, generator=g)
    text = torch.randn(4, 16, generator=g)
    pooled = nf.reference_tlp(logits, guide, text, grid=40)
    blocks = lambda x: x[:, :99, :].reshape(x.shape[0], 33, 3, 50, 2).mean(dim=(2, 4))  # noqa: E731
    small = nf.reference_tlp(blocks(logits), blocks(guide), text, grid=1000)
    expected = F.interpolate(small[None], size=(101, 100), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(pooled, expected, atol=1e-4, rtol=0)  # block means summed in another order
    changed_logits, changed_guide = logits.clone(), guide.clone()
    changed_logits[:, 99:] += 5.0
    changed_guide[:, 99:] -= 3.0
    assert torch.equal(nf.reference_tlp(changed_logits, changed_guide, text, grid=40), pooled)


# ------------------------------------------------------------------------------- ResCLIP: SFR parts


def test_patch_mode_ties_go_to_the_smallest_label():
    labels = torch.tensor([
        [1, 2, 3, 0, 7],
        [2, 1, 3, 0, 7],
        [5, 5, 4, 4, 9],
        [5, 2, 4, 6, 9],
        [8, 8, 8, 8, 8],  # leftover row and column (p = 2): dropped
    ])
    assert nf.reference_patch_mode(labels, 2).tolist() == [[1, 0], [5, 4]]


def test_patch_mode_equals_torch_mode_on_the_cpu():
    """The authors take torch.mode of each patch's p² labels; its CPU tie rule is 'smallest'."""
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 3, (12, 16), generator=g)
    patches = labels.unfold(0, 4, 4).unfold(1, 4, 4).reshape(3, 4, -1)
    assert torch.equal(nf.reference_patch_mode(labels, 4), torch.mode(patches, dim=-1).values)


def test_entity_decay_inspects_only_a_prefix_of_each_segment():
    """1×9 grid, n_max = 8, labels A A A B A A A A A: (0, 4) crosses B at column 3, but with
    t = m/8 for m ≤ 4 the points are round(0, .5, 1, 1.5, 2) = 0, 0, 1, 2, 2: B is never seen."""
    labels = torch.tensor([[0, 0, 0, 1, 0, 0, 0, 0, 0]])
    flat = labels.reshape(-1)
    same = (flat[:, None] == flat[None, :]).float()
    out = nf.reference_entity_decay(same, labels)
    assert float(out[0, 4]) == 1.0  # quirk: not decayed
    assert float(out[0, 8]) == pytest.approx(math.exp(-1.0))  # the full segment sees column 3
    # (0, 6): t = m/8, m ≤ 6 -> 6·t = 0, .75, 1.5, 2.25, 3, 3.75, 4.5 -> 0, 1, 2, 2, 3, ...: column 3 seen
    assert float(out[0, 6]) == pytest.approx(math.exp(-6 / 8))
    assert float(out[0, 3]) == 0.0 and float(out[3, 3]) == 1.0  # different labels stay 0
    assert float(out[5, 8]) == 1.0  # 5 -> 8: columns 5, 5, 6, 6 (prefix), all A
    # from column 4 back to 0: points round(4 − 4t) = 4, 4, 3, ... : column 3 (B) is seen -> decayed
    assert float(out[4, 0]) == pytest.approx(math.exp(-4 / 8))


def test_entity_decay_on_a_grid_uses_the_chebyshev_distance():
    labels = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    flat = labels.reshape(-1)
    out = nf.reference_entity_decay((flat[:, None] == flat[None, :]).float(), labels)
    # (0,0) -> (2,2): n = 2 = n_max, points (0,0), (1,1), (2,2): the centre (label 1) breaks it
    assert float(out[0, 8]) == pytest.approx(math.exp(-1.0))
    # (0,0) -> (0,2) along the top row: unbroken
    assert float(out[0, 2]) == 1.0
    # (0,1) -> (2,1): n = 2, points (0,1), (1,1), (2,1): broken
    assert float(out[1, 7]) == pytest.approx(math.exp(-1.0))


def test_row_blur_crosses_grid_rows():
    """Grid 2×3 (N = 6), σ = 0.5: K = min(6, int(4)) = 4 -> 5; a 1 at token 2 (end of grid row 0)
    spreads onto token 3 (start of grid row 1); rows sum to 1."""
    matrix = torch.zeros(6, 6)
    matrix[0, 2] = 1.0
    matrix[1] = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    out = nf.reference_row_blur(matrix, 0.5)
    u = np.arange(5) - 2
    kernel = np.exp(-(u ** 2) / (2 * 0.5 ** 2))
    kernel /= kernel.sum()
    for row in range(2):
        blurred = np.convolve(matrix[row].numpy().astype(np.float64), kernel[::-1], mode="same")
        np.testing.assert_allclose(out[row].numpy(), blurred / (blurred.sum() + 1e-8), atol=1e-6)
    assert float(out[0, 3]) > 0.05  # crossed into the next grid row
    assert not out[2:].any()  # empty rows stay 0 (0 / 1e-8)
    np.testing.assert_allclose(out[:2].sum(dim=1).numpy(), 1.0, atol=1e-6)


def test_sfr_logits_round_the_feedback_to_float16():
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 5, 5, generator=g)
    sfr = torch.zeros(5, 5)
    sfr[1:, 1:] = torch.rand(4, 4, generator=g) * 0.37
    mixed = nf.reference_sfr_logits(logits, sfr, (2.2, 0.7))
    normalised = (sfr.numpy() / sfr.numpy().max()).astype(np.float16)  # float32 division, then float16
    feedback = (normalised.astype(np.float32) * np.float32(0.7)).astype(np.float16).astype(np.float64)
    expected = 2.2 * ((1 - 0.7) * logits.double().numpy() + feedback)
    np.testing.assert_allclose(mixed.numpy(), expected, atol=2e-6)
    unrounded = 2.2 * ((1 - 0.7) * logits + 0.7 * sfr / sfr.max())
    assert float((mixed - unrounded).abs().max()) > 2e-5  # the rounding is visible at this scale
    # the authors' expression (λ times a float16 tensor) gives the same float16 values
    rounded = (sfr / sfr.max()).to(torch.float16)
    assert torch.equal((0.7 * rounded).float(), torch.from_numpy(feedback.astype(np.float32)))


def test_sfr_matrix_of_a_window_with_one_label_is_the_blurred_ones():
    """sfr_thd above every probability: every temporary label is query 0, the same-label matrix is all
    ones, no decay applies; rows are the blurred ones (edge rows lose mass to the zero padding)."""
    g = torch.Generator().manual_seed(10)
    logits = torch.randn(3, 48, 64, generator=g)
    image = torch.randn(3, 48, 64, generator=g)
    sfr = nf.reference_sfr_matrix(logits, image, patch=16, logit_scale=40, sfr_thd=1.01)
    assert sfr.shape == (13, 13) and not sfr[0].any() and not sfr[:, 0].any()
    torch.testing.assert_close(sfr[1:, 1:], nf.reference_row_blur(torch.ones(12, 12), 5.0), atol=0, rtol=0)


# ------------------------------------------------------------------------------ whole-image pieces


@pytest.mark.parametrize("method, options", [
    ("naclip", dict(gaussian_std=3.0, image_engineering=False)),
    ("itaclip", dict(attention="q-q+k-k", remove_ffn=True, intermediate_layers=(7, 8, 10), views=("grey", "hflip"),
                     lam=0.7)),
])
def test_old_methods_are_delegated_unchanged(tiny_state, method, options):
    image = make_smooth_image(40, 56, seed=30)
    text, query_class = ref.reference_text_features(tiny_state, [("cat",), ("dog", "puppy")])
    options = dict(short_side=96, crop=96, stride=64, pamr_steps=2, method=method, **options)
    with torch.no_grad():
        logits = nf.reference_logits(tiny_state, image, text, res_cls=None, sfr_thd=None, **options)
        assert torch.equal(logits, ref.reference_logits(tiny_state, image, text, **options))
    for got, expected in zip(nf.reference_postprocess(logits, query_class, prob_thd=0.4, area_thd=0.2),
                             ref.reference_postprocess(logits, query_class, prob_thd=0.4, area_thd=0.2)):
        assert np.array_equal(got, expected)


@pytest.mark.parametrize("method", ["clip", "sclip", "clearclip", "naclip"])
def test_feedback_features_without_feedback_are_the_zoo_methods(tiny_state, method):
    window = ref.reference_normalise(make_smooth_image(96, 112, seed=33))
    with torch.no_grad():
        plain = nf.reference_feedback_features(tiny_state, window, None, method, gaussian_std=3.0)
        zoo = ref.l2_normalise(ref.reference_method_tokens(tiny_state, window, method, 3.0))[1:]
    torch.testing.assert_close(plain, zoo, atol=1e-6, rtol=0)


def test_refused_combinations(tiny_state):
    image = make_smooth_image(40, 56, seed=31)
    with pytest.raises(ValueError, match="area threshold"):
        nf.reference_segment(tiny_state, image, [("cat",), ("dog",)], False, method="resclip", area_thd=0.1,
                             sfr_thd=0.3, rcs_weights=(2, 0.3), sfr_weights=(1.8, 0.7))
    text, _ = ref.reference_text_features(tiny_state, [("cat",), ("dog",)])
    window = ref.reference_normalise(ref.reference_resize(image, 96))[:, :, :96]
    with pytest.raises(ValueError, match="needs sfr_thd"):
        nf.reference_resclip_features(tiny_state, window, text, logit_scale=40, sfr_thd=None, rcs_weights=(2, 0.3),
                                      sfr_weights=(1.8, 0.7))
    with pytest.raises(ValueError, match="no residual attention / semantic feedback for method 'maskclip'"):
        nf.reference_feedback_features(tiny_state, window, text, "maskclip", sfr_thd=0.3, sfr_weights=(1.8, 0.7))


def test_scclip_whole_image_goes_straight_to_the_original_size(tiny_state):
    """SCLIP's crop-0 branch (``authors_whole_image``): the (Q, g_h, g_w) logits of the whole resized
    image are up-sampled in one step to the original size; PAMR is skipped. Without it, crop 0 is this
    project's whole-image path (resized size, then original size, PAMR as asked)."""
    image = make_smooth_image(50, 50, seed=32)
    text, _ = ref.reference_text_features(tiny_state, [("cat",), ("dog",)])
    with torch.no_grad():
        logits = nf.reference_logits(tiny_state, image, text, short_side=96, crop=0, pamr_steps=3, method="scclip",
                                     image_engineering=False, authors_whole_image=True)
        resized = ref.reference_normalise(ref.reference_resize(image, 96))
        features = nf.reference_scclip_features(tiny_state, resized)
    expected = F.interpolate((features @ text.t()).t().reshape(1, 2, 6, 6), size=(50, 50), mode="bilinear",
                             align_corners=False)[0]
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        project = nf.reference_logits(tiny_state, image, text, short_side=96, crop=0, pamr_steps=0, method="scclip",
                                      image_engineering=False)
    at_resized = F.interpolate((features @ text.t()).t().reshape(1, 2, 6, 6), size=(96, 96), mode="bilinear",
                               align_corners=False)
    expected = F.interpolate(at_resized, size=(50, 50), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(project, expected, atol=1e-6, rtol=0)


def test_scclip_refuses_a_non_square_whole_image_when_an_outlier_leaves_the_grid(tiny_state):
    image = make_smooth_image(72, 96, seed=40)  # resized 224×299: grid 14×18, outlier tokens ≥ 196 fall out
    text, _ = ref.reference_text_features(tiny_state, [("cat",), ("dog",)])
    with pytest.raises(ValueError, match="outside the 14×18 patch grid"):
        nf.reference_logits(tiny_state, image, text, short_side=224, crop=0, method="scclip", image_engineering=False)
