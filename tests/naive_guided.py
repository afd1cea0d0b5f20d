"""A naive, deliberately plain reference of the DINO-guided methods ProxyCLIP and CorrCLIP (v1), used
only by the tests.

Written from SPEC-guided (ProxyCLIP @ e7b767f, CorrCLIP @ 103bc18, DINO @ 7c446df) as the authors'
code runs them, independently of the engine in ``itaclip`` (nothing is imported from it): the DINO
guide is computed from its state dict (DINO's released layout) with DINO's own positional rule, and
every stage is written out one window at a time in fp32 on the CPU. CLIP's pieces (patch embedding,
positional table, blocks, text features, image resize, post-processing) are the ones of
``naive_reference``; where the authors' code differs from a literal reading of their papers, the
authors' behaviour wins and the place is marked with "authors:". Where their code only works for
square windows (ProxyCLIP's grids), the general (rows, columns) form is written.

Tensors are fp32 on the CPU. Image tensors are ``(3, H, W)``, token tensors ``(N, D)`` (no batch
dimension), region maps ``(H, W)`` int64.

Stage isolation: every DINO pass goes through the module-level ``reference_dino_forward``, so a
test can monkeypatch it (e.g. with the engine's own DINO outputs) to compare the later stages alone.

Verification (out of tree, not part of the suite): the authors' segmentors — ProxyCLIP's
``ProxyCLIPSegmentation`` and CorrCLIP v1's ``CorrCLIPSegmentation`` with their vendored open_clip,
DINO's ``vision_transformer.py`` behind a patched ``torch.hub.load`` — were run in fp32 on the CPU
(mmseg/mmengine stubbed, ``.half()`` made a no-op) on the test suite's random CLIPs (``TINY_SHAPE``:
width 64, 1 head; ``TWO_HEAD_SHAPE``: width 128, 2 heads) and random DINOs (``random_dino_state_dict``
width 64 / 128, 3 blocks, patch 8), 15 cases: 336/112 windows on 168×225 images resized to
336×450; 301×401 images at short side 301 (windows padded 17/18 rows); crop 224/112 with
``prob_thd`` 0.6; ProxyCLIP's whole image (crop 0) on a square image; ProxyCLIP on a non-square
padded window (251×301 → 280×336) and a non-square whole image with its two grid quirks corrected
in a copy of its code (the general form written here); CorrCLIP with region maps holding 6–8
regions, an unsegmented part, non-consecutive ids, a pair DBSCAN merges (2–8 regions → 1–4 clusters
per window), a map without 0, and a map nearest-upsampled ×2.8. Figures, max over the cases:
text features 1.2e-7; DINO final tokens 3.1e-6 and q+k 4.1e-6 (values up to ~5) against DINO's
own model; window-averaged logits at the original size 3.0e-7 and probabilities 1.6e-6 in 11
cases; labels identical (0 pixels differ) in all 15. In the other 4 one pair of DINO similarities
lies within that 1e-6 rounding of a hard cut (ProxyCLIP's S' < 0, CorrCLIP's S > mean) and flips,
giving logits up to 3.5e-4 and probabilities up to 1.2e-3 apart; with DINO's own features
substituted (the monkeypatch above) every case agrees to 3.6e-7. One case reproduces a quirk of
ProxyCLIP: a window whose mean DINO cosine exceeds 1/β has every S' < 0 (the diagonal included),
so its attention rows are all −∞, its logits NaN, and the pixels it covers get NaN probabilities
and label 0 — identically here and in the authors' code.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

import naive_reference as ref

#: CLIP's normalisation on the 0–1 scale and ImageNet's, as both methods re-normalise DINO's input.
CLIP_UNIT_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_UNIT_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Windows are zero-padded (centred) to multiples of this many pixels.
WINDOW_MULTIPLE = 56
#: CorrCLIP: value of padded region-map pixels, and offset of merged region ids.
REGION_PAD_VALUE = 10000
MERGE_OFFSET = 10000
#: CorrCLIP constants fixed in the authors' code.
DBSCAN_EPS = 0.2
SCOPE_TEMPERATURE = 4.0  # TAU
SPATIAL_WEIGHT = 1.0  # ALPHA
SEMANTIC_WEIGHT = 0.5  # BETA

GUIDED_METHODS = ("proxyclip", "corrclip")

# --------------------------------------------------------------------------------------------
# DINO (SPEC-guided §1)
# --------------------------------------------------------------------------------------------


def dino_dims(dino_state: dict) -> dict:
    """Architecture read from a DINO state dict: width D', patch p', heads D'/64, blocks L', table side n."""
    width, _, patch, _ = dino_state["patch_embed.proj.weight"].shape
    blocks = len({k.split(".")[1] for k in dino_state if k.startswith("blocks.")})
    return dict(width=width, patch=patch, heads=max(1, width // 64), layers=blocks,
                grid=math.isqrt(dino_state["pos_embed"].shape[1] - 1))


def reference_dino_input(window: torch.Tensor) -> torch.Tensor:
    """CLIP-normalised (3, h, w) window -> DINO's input: ((x·s + m) − μ) / σ per channel, float32."""
    out = torch.empty_like(window)
    for c in range(3):
        unit = window[c] * CLIP_UNIT_STD[c] + CLIP_UNIT_MEAN[c]
        out[c] = (unit - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    return out


def reference_dino_positional(dino_state: dict, h: int, w: int) -> torch.Tensor:
    """(1 + fh·fw, D') table for an h × w input (fh, fw = h//p', w//p').

    DINO's rule: the stored table when the token count matches *and* h == w; otherwise the n×n patch
    table resampled with ``scale_factor=((fh+0.1)/n, (fw+0.1)/n)`` (bicubic, align_corners False),
    the class entry kept.
    """
    d = dino_dims(dino_state)
    table = dino_state["pos_embed"][0]
    n, width = d["grid"], d["width"]
    f_h, f_w = h // d["patch"], w // d["patch"]
    if f_h * f_w == n * n and h == w:
        return table
    grid = table[1:].reshape(1, n, n, width).permute(0, 3, 1, 2)
    resampled = F.interpolate(grid, scale_factor=((f_h + 0.1) / n, (f_w + 0.1) / n), mode="bicubic",
                              align_corners=False)
    assert resampled.shape[-2:] == (f_h, f_w), resampled.shape
    return torch.cat([table[:1], resampled[0].permute(1, 2, 0).reshape(f_h * f_w, width)])


def _dino_layer_norm(x: torch.Tensor, dino_state: dict, prefix: str) -> torch.Tensor:
    weight, bias = dino_state[prefix + ".weight"], dino_state[prefix + ".bias"]
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps=1e-6)


def _dino_linear(x: torch.Tensor, dino_state: dict, prefix: str) -> torch.Tensor:
    return ref._linear(x, dino_state[prefix + ".weight"], dino_state[prefix + ".bias"])


def reference_dino_forward(dino_state: dict, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DINO on one DINO-normalised (3, h, w) image -> (final, qk), both (1 + fh·fw, D'), class token first.

    ``final`` = ``norm`` of the last block's output (ProxyCLIP's guide); ``qk`` = q + k of the last
    block's ``qkv`` (all heads, before any split), from the tokens entering that block (CorrCLIP's).
    Leftover ``side mod p'`` pixels are dropped by the patch embedding.
    """
    d = dino_dims(dino_state)
    heads, width = d["heads"], d["width"]
    # CLIP's patch embedding written out, with DINO's kernel, plus its bias.
    x = ref.reference_patch_embed({"visual.conv1.weight": dino_state["patch_embed.proj.weight"]}, image)
    x = x + dino_state["patch_embed.proj.bias"]
    x = torch.cat([dino_state["cls_token"][0], x])
    x = x + reference_dino_positional(dino_state, image.shape[1], image.shape[2])
    qk = None
    for index in range(d["layers"]):
        prefix = f"blocks.{index}"
        t = _dino_linear(_dino_layer_norm(x, dino_state, prefix + ".norm1"), dino_state, prefix + ".attn.qkv")
        q, k, v = t[:, :width], t[:, width:2 * width], t[:, 2 * width:]
        if index == d["layers"] - 1:
            qk = q + k
        qh, kh, vh = (ref._split_heads(a, heads) for a in (q, k, v))
        attn = torch.softmax((qh @ kh.transpose(-1, -2)) * (qh.shape[-1] ** -0.5), dim=-1)
        x = x + _dino_linear(ref._merge_heads(attn @ vh), dino_state, prefix + ".attn.proj")
        y = _dino_layer_norm(x, dino_state, prefix + ".norm2")
        hidden = _dino_linear(y, dino_state, prefix + ".mlp.fc1")
        x = x + _dino_linear(F.gelu(hidden), dino_state, prefix + ".mlp.fc2")  # exact (erf) GELU
    return _dino_layer_norm(x, dino_state, "norm"), qk


# --------------------------------------------------------------------------------------------
# Nearest resizing of label maps (SPEC-guided §4.4)
# --------------------------------------------------------------------------------------------


def nearest_indices(in_size: int, out_size: int) -> list[int]:
    """PyTorch's ``mode='nearest'`` source index of every output index: identity when the sizes are
    equal, else min(⌊dst · (in/out)⌋, in − 1) with the ratio and the product in float32."""
    if in_size == out_size:
        return list(range(out_size))
    ratio = np.float32(in_size) / np.float32(out_size)
    return [min(int(np.floor(np.float32(dst) * ratio)), in_size - 1) for dst in range(out_size)]


def reference_nearest(label_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) integer map -> (H, W), each output pixel a copy of its nearest source pixel."""
    rows = nearest_indices(label_map.shape[0], size[0])
    cols = nearest_indices(label_map.shape[1], size[1])
    return label_map[rows][:, cols]


# --------------------------------------------------------------------------------------------
# CLIP pieces shared by both methods
# --------------------------------------------------------------------------------------------


def _clip_input_tokens(state: dict, image: torch.Tensor) -> torch.Tensor:
    """conv1, class token, positional table (CLIP's rule), ``ln_pre``: (1 + gh·gw, D)."""
    p = ref.vision_dims(state)["patch"]
    x = ref.reference_patch_embed(state, image)
    x = torch.cat([state["visual.class_embedding"][None, :], x])
    x = x + ref.reference_positional_embedding(state, image.shape[1] // p, image.shape[2] // p)
    return ref._layer_norm(x, state, "visual.ln_pre")


def _last_block(state: dict) -> str:
    return f"visual.transformer.resblocks.{ref.vision_dims(state)['layers'] - 1}"


def reference_value_on_dino_grid(state: dict, x: torch.Tensor, clip_grid: tuple[int, int],
                                 dino_grid: tuple[int, int]) -> torch.Tensor:
    """The last block's value path on tokens x (1 + gh·gw, D): ``ln_1``, the v third of ``in_proj``,
    class token dropped, (D, gh, gw) bilinear to the DINO grid -> (fh·fw, D)."""
    prefix = _last_block(state)
    width = x.shape[1]
    v_weight = state[prefix + ".attn.in_proj_weight"][2 * width:]
    v_bias = state[prefix + ".attn.in_proj_bias"][2 * width:]
    v = ref._linear(ref._layer_norm(x, state, prefix + ".ln_1"), v_weight, v_bias)
    v = v[1:].t().reshape(width, *clip_grid)
    return ref._bilinear(v, dino_grid).reshape(width, -1).t()


def _attend_values(state: dict, attention: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``out_proj(A v)`` (no residual, no FFN): (F, F) × (F, D) -> (F, D)."""
    prefix = _last_block(state)
    return ref._linear(attention @ v, state[prefix + ".attn.out_proj.weight"],
                       state[prefix + ".attn.out_proj.bias"])


# --------------------------------------------------------------------------------------------
# ProxyCLIP (SPEC-guided §2)
# --------------------------------------------------------------------------------------------


def reference_proxy_attention(final_patches: torch.Tensor, beta: float = 1.2,
                              gamma: float = 3.0) -> torch.Tensor:
    """(F, D') DINO final patch features -> (F, F) attention: S = cosines, S' = (S − β·mean(S))·γ,
    S' < 0 -> −∞, softmax over rows (mean over all F² entries)."""
    f = ref.l2_normalise(final_patches)
    s = f @ f.t()
    s = (s - s.mean() * beta) * gamma
    s[s < 0] = float("-inf")
    return torch.softmax(s, dim=-1)


def reference_proxy_features(state: dict, dino_state: dict, window: torch.Tensor, *, beta: float = 1.2,
                             gamma: float = 3.0) -> tuple[torch.Tensor, tuple[int, int]]:
    """L2-normalised features (fh·fw, E) of one CLIP-normalised (3, h, w) window and its DINO grid.

    authors: the grids are taken as (h//8, h//8) for DINO and (w//16, h//16) for CLIP's values (a
    crash or a transposition unless h == w); the general (rows, columns) form is written here.
    """
    p, p_dino = ref.vision_dims(state)["patch"], dino_dims(dino_state)["patch"]
    h, w = window.shape[1:]
    clip_grid, dino_grid = (h // p, w // p), (h // p_dino, w // p_dino)
    final, _ = reference_dino_forward(dino_state, reference_dino_input(window))
    attention = reference_proxy_attention(final[1:], beta, gamma)

    x = _clip_input_tokens(state, window)
    heads = ref.vision_dims(state)["heads"]
    for index in range(ref.vision_dims(state)["layers"] - 1):
        x = ref._standard_block(x, state, f"visual.transformer.resblocks.{index}", heads)
    z = _attend_values(state, attention, reference_value_on_dino_grid(state, x, clip_grid, dino_grid))
    z = ref._layer_norm(z, state, "visual.ln_post") @ state["visual.proj"]
    return ref.l2_normalise(z), dino_grid


# --------------------------------------------------------------------------------------------
# CorrCLIP (SPEC-guided §3)
# --------------------------------------------------------------------------------------------


def reference_dbscan_clusters(distances: np.ndarray) -> np.ndarray:
    """Cluster ids (0, 1, …) of r regions from their (r, r) float32 distance matrix, as the authors
    compute them: scikit-learn's ``DBSCAN(metric='precomputed', eps=0.2, min_samples=1)``."""
    from sklearn.cluster import DBSCAN

    return DBSCAN(metric="precomputed", eps=DBSCAN_EPS, min_samples=1).fit_predict(distances)


def reference_merge_regions(region_map: torch.Tensor, qk: torch.Tensor) -> torch.Tensor:
    """Merge a window's regions on the DINO grid by their mean DINO q+k feature.

    ``region_map`` (fh, fw) int64 values v_0 < … < v_r; ``qk`` (fh·fw, D') L2-normalised rows. Only
    when r ≥ 2: e_i = normalised mean of ``qk`` over region i (i ≥ 1; region 0, the smallest value,
    is skipped), distance max(e eᵀ) − e eᵀ, DBSCAN clusters; every cell of region i ≥ 1 becomes
    ``MERGE_OFFSET + cluster(i)``, region 0 keeps v_0. (authors: padding cells, value 10000, are a
    region like any other and may then share 10000 with cluster 0.)
    """
    values = torch.unique(region_map)
    if len(values) <= 2:
        return region_map.clone()
    flat = region_map.reshape(-1)
    means = torch.stack([qk[flat == v].mean(dim=0) for v in values])
    e = ref.l2_normalise(means)[1:]
    t = e @ e.t()
    clusters = reference_dbscan_clusters((t.max() - t).numpy())
    merged = region_map.clone()
    for value, cluster in zip(values[1:], clusters):
        merged[region_map == value] = MERGE_OFFSET + int(cluster)
    return merged


def reference_scope_attention(qk: torch.Tensor, merged: torch.Tensor) -> torch.Tensor:
    """(F, F) attention of CorrCLIP's scope reconstruction.

    S = qk qkᵀ; a pair (a, b) is allowed when a and b are in the same region other than the
    smallest-valued one, or when one of them is in the smallest-valued region and S_ab > mean(S)
    (mean over all F² entries); blocked pairs get −∞; softmax(4·S) over rows.
    """
    s = qk @ qk.t()
    labels = merged.reshape(-1)
    unsegmented = labels.min()
    row, col = labels[:, None], labels[None, :]
    same_region = (row == col) & (row != unsegmented)
    touches_unsegmented = (row == unsegmented) | (col == unsegmented)
    allowed = same_region | (touches_unsegmented & (s > s.mean()))
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.softmax(SCOPE_TEMPERATURE * s, dim=-1)


def reference_region_token_mask(clip_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive attention mask for the n region tokens ("MCTs") put before [cls, patches].

    ``clip_map`` (gh, gw): the merged map on CLIP's grid; its n distinct values (ascending, all of
    them) give the one-hot region maps ρ_j. Returns (mask (n+1+N, n+1+N) with 0 = allowed, −∞ =
    blocked, and the (gh, gw) index j of every patch): class and patch tokens attend to class and
    patch tokens only; MCT j attends to the class token and to the patches of ρ_j only.
    """
    values = torch.unique(clip_map)
    n = len(values)
    region_of_patch = torch.searchsorted(values, clip_map.reshape(-1))
    size = n + 1 + clip_map.numel()
    mask = torch.full((size, size), float("-inf"))
    mask[n:, n:] = 0
    for j in range(n):
        mask[j, n] = 0
        mask[j, n + 1:][region_of_patch == j] = 0
    return mask, region_of_patch.reshape(clip_map.shape)


def spatial_blocks(layers: int) -> list[int]:
    """0-based indices of the blocks whose outputs CorrCLIP's spatial branch averages:
    L−2−NS … L−3 with NS = 5, 12, 28 for L = 12, 24, 32 and L − 4 otherwise."""
    count = {12: 5, 24: 12, 32: 28}.get(layers, layers - 4)
    blocks = list(range(max(layers - 2 - count, 0), layers - 2))
    if not blocks:
        raise ValueError(f"CorrCLIP's spatial branch has no blocks for a {layers}-block CLIP")
    return blocks


def reference_corr_features(state: dict, dino_state: dict, window: torch.Tensor,
                            window_regions: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """L2-normalised features (fh·fw, E) of one CLIP-normalised (3, h, w) window with its (h, w)
    region map (padding pixels = 10000), and its DINO grid."""
    dims = ref.vision_dims(state)
    p, heads, layers = dims["patch"], dims["heads"], dims["layers"]
    h, w = window.shape[1:]
    p_dino = dino_dims(dino_state)["patch"]
    clip_grid, dino_grid = (h // p, w // p), (h // p_dino, w // p_dino)

    _, qk = reference_dino_forward(dino_state, reference_dino_input(window))
    qk = ref.l2_normalise(qk[1:])
    merged = reference_merge_regions(reference_nearest(window_regions, dino_grid), qk)
    attention = reference_scope_attention(qk, merged)

    # Region tokens: n copies of the class token after ln_pre, put first; one mask for every block.
    clip_map = reference_nearest(merged, clip_grid)
    mask, region_of_patch = reference_region_token_mask(clip_map)
    x = _clip_input_tokens(state, window)
    n = mask.shape[0] - x.shape[0]
    x = torch.cat([x[:1].repeat(n, 1), x])
    recorded = []
    for index in range(layers - 1):
        x = ref._standard_block(x, state, f"visual.transformer.resblocks.{index}", heads, mask)
        if index in spatial_blocks(layers):
            recorded.append(x[n:])
    z_main = _attend_values(state, attention,
                            reference_value_on_dino_grid(state, x[n:], clip_grid, dino_grid))
    z_spatial = _attend_values(state, attention, reference_value_on_dino_grid(
        state, torch.stack(recorded).mean(dim=0), clip_grid, dino_grid))

    # Semantic branch: the full last block (mask, residual, FFN); every DINO cell takes the output of
    # the region token of the CLIP cell nearest to it.
    region_tokens = ref._standard_block(x, state, _last_block(state), heads, mask)[:n]
    rows = nearest_indices(clip_grid[0], dino_grid[0])
    cols = nearest_indices(clip_grid[1], dino_grid[1])
    z_semantic = torch.stack([region_tokens[int(region_of_patch[r, c])] for r in rows for c in cols])

    ln_post = lambda z: ref._layer_norm(z, state, "visual.ln_post")  # noqa: E731
    z = ln_post(z_main) + ln_post(z_spatial) * SPATIAL_WEIGHT + ln_post(z_semantic) * SEMANTIC_WEIGHT
    return ref.l2_normalise(z @ state["visual.proj"]), dino_grid


# --------------------------------------------------------------------------------------------
# Windows and the whole image (SPEC-guided §4, §2.2)
# --------------------------------------------------------------------------------------------


def reference_pad_amounts(h: int, w: int, multiple: int = WINDOW_MULTIPLE) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding to the next multiple, centred (the extra pixel at the
    bottom/right)."""
    extra_h, extra_w = (multiple - h % multiple) % multiple, (multiple - w % multiple) % multiple
    return extra_h // 2, extra_h - extra_h // 2, extra_w // 2, extra_w - extra_w // 2


def reference_window_logits(state: dict, dino_state: dict, window: torch.Tensor, text: torch.Tensor, *,
                            method: str, window_regions: Optional[torch.Tensor] = None, beta: float = 1.2,
                            gamma: float = 3.0) -> torch.Tensor:
    """Logits (Q, h, w) of one CLIP-normalised (3, h, w) window: pad to multiples of 56 (the region map
    with 10000), features on the DINO grid × text, bilinear to the padded size, padding cut."""
    _, h, w = window.shape
    top, bottom, left, right = reference_pad_amounts(h, w)
    padded = torch.zeros(3, top + h + bottom, left + w + right)
    padded[:, top:top + h, left:left + w] = window
    if method == "proxyclip":
        features, grid = reference_proxy_features(state, dino_state, padded, beta=beta, gamma=gamma)
    elif method == "corrclip":
        padded_regions = torch.full(padded.shape[1:], REGION_PAD_VALUE, dtype=torch.int64)
        padded_regions[top:top + h, left:left + w] = window_regions
        features, grid = reference_corr_features(state, dino_state, padded, padded_regions)
    else:
        raise ValueError(f"unknown guided method {method!r}")
    logits = ref._patch_logits(features, text, grid[0], grid[1], padded.shape[1:])
    return logits[:, top:top + h, left:left + w]


def reference_logits(
    state: dict,
    image_rgb_uint8: np.ndarray,
    text: torch.Tensor,
    *,
    method: str,
    guide_state: dict,
    regions: Optional[np.ndarray] = None,
    short_side: int = 336,
    crop: int = 336,
    stride: int = 112,
    proxy_beta: float = 1.2,
    proxy_gamma: float = 3.0,
) -> torch.Tensor:
    """Window-averaged logits (Q, H, W) at the image's original size (before any softmax).

    ``regions`` (H, W) integer map at the original size (CorrCLIP only): nearest-resized to the
    resized image, cut per window. ``crop`` 0 (ProxyCLIP only): one pass on the whole resized image,
    no padding, logits bilinear straight to the original size.
    """
    if method not in GUIDED_METHODS:
        raise ValueError(f"unknown guided method {method!r}")
    if method == "corrclip" and (regions is None or crop == 0):
        raise ValueError("corrclip needs a region map and sliding windows")
    h0, w0 = image_rgb_uint8.shape[:2]
    image = ref.reference_normalise(ref.reference_resize(image_rgb_uint8, short_side))
    _, h, w = image.shape
    if crop == 0:
        features, grid = reference_proxy_features(state, guide_state, image, beta=proxy_beta,
                                                  gamma=proxy_gamma)
        return ref._patch_logits(features, text, grid[0], grid[1], (h0, w0))

    resized_regions = None
    if regions is not None:
        assert regions.shape == (h0, w0), (regions.shape, (h0, w0))
        resized_regions = reference_nearest(torch.from_numpy(np.asarray(regions, dtype=np.int64)), (h, w))
    canvas = torch.zeros(text.shape[0], h, w)
    count = torch.zeros(1, h, w)
    for y1, y2, x1, x2 in ref.reference_windows(h, w, crop, stride):
        window_regions = None if resized_regions is None else resized_regions[y1:y2, x1:x2]
        canvas[:, y1:y2, x1:x2] += reference_window_logits(
            state, guide_state, image[:, y1:y2, x1:x2], text, method=method, window_regions=window_regions,
            beta=proxy_beta, gamma=proxy_gamma)
        count[:, y1:y2, x1:x2] += 1
    return ref._bilinear(canvas / count, (h0, w0))


def load_guide_state(source) -> dict[str, torch.Tensor]:
    """fp32 copies of every tensor of a DINO state dict (a dict or a ``.pth`` file)."""
    if not isinstance(source, dict):
        source = torch.load(source, map_location="cpu", weights_only=True)
    return {key: value.detach().to(torch.float32).clone() for key, value in source.items()}


def reference_region_vote(labels: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """CorrCLIP's map correction: every region except the smallest-valued one takes the most frequent
    label of its pixels (the smallest label on ties); the rest keeps its labels."""
    out = labels.copy()
    for value in np.unique(regions)[1:]:
        inside = regions == value
        votes = np.bincount(labels[inside])
        out[inside] = int(np.argmax(votes))  # first maximum = smallest label
    return out


def reference_segment(
    state_dict: Union[dict, str, os.PathLike],
    image_rgb_uint8: np.ndarray,
    classes: Sequence[Sequence[str]],
    has_background: bool,
    aux_texts: Optional[Sequence[str]] = None,
    *,
    method: str,
    guide_state: Union[dict, str, os.PathLike],
    regions: Optional[np.ndarray] = None,
    alpha: float = 0.0,
    short_side: int = 336,
    crop: int = 336,
    stride: int = 112,
    proxy_beta: float = 1.2,
    proxy_gamma: float = 3.0,
    logit_scale: float = 40.0,
    prob_thd: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole method on one (H, W, 3) uint8 RGB image -> (probs (C, H, W) float32, labels (H, W) int64).

    ``probs`` is the map the argmax is taken of: softmax over names, max over each class's names
    (CorrCLIP: *before* the region vote, which changes labels only). No PAMR, area threshold or
    closing (the authors have none). ``state_dict``/``guide_state``: CLIP (OpenAI layout) and DINO state
    dicts or files; ``regions`` (H, W) integers, the smallest value = unsegmented (CorrCLIP only).
    """
    state = state_dict if ref._is_loaded(state_dict) else ref.load_reference_state(state_dict)
    guide_state = load_guide_state(guide_state)
    classes = [tuple(names) for names in classes]
    text, query_class = ref.reference_text_features(state, classes, has_background, aux_texts, alpha)
    with torch.no_grad():
        logits = reference_logits(state, image_rgb_uint8, text, method=method, guide_state=guide_state,
                                  regions=regions, short_side=short_side, crop=crop, stride=stride,
                                  proxy_beta=proxy_beta, proxy_gamma=proxy_gamma)
    probs, labels = ref.reference_postprocess(logits, query_class, logit_scale=logit_scale, prob_thd=prob_thd,
                                              area_thd=None, closing=False)
    if method == "corrclip":
        labels = reference_region_vote(labels, np.asarray(regions))
    return probs, labels
