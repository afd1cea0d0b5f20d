"""A naive, deliberately plain reference of SC-CLIP, SFP, PEARL and ResCLIP (SPEC-methods-2), and of
their refinements TLP and SFR, used only by the tests.

Same rules as tests/naive_reference.py, whose primitives it imports (transformer pieces, patch
embedding, positional table, Ω, PAMR, windows, resize, text features, post-processing): fp32 on the
CPU, one window at a time, explicit loops where a method is defined by one (LOF neighbours, outlier
fill, Newton–Schulz, conjugate gradient, SFR paths); nothing from itaclip is imported. Where the
authors' code differs from a literal reading of their papers, the code wins ("authors:").

Entry points:

* window encoders ``reference_scclip_features``, ``reference_sfp_features``,
  ``reference_pearl_features``, ``reference_resclip_features`` — one normalised (3, h, w) window ->
  (g_h·g_w, E) L2-normalised patch features;
* ``reference_tlp`` (PEARL's text-aware Laplacian propagation) and ``reference_sfr_matrix`` /
  ``reference_sfr_logits`` (ResCLIP's semantic feedback) as standalone refinements, and
  ``reference_feedback_features``: ResCLIP's RCS / SFR on the last blocks its code defines them
  for (clip, sclip, clearclip, naclip);
* ``reference_logits`` / ``reference_segment`` — the whole-image pipeline with the call signature
  of naive_reference's functions of the same names (plus the new methods' options); every method
  of naive_reference is delegated to it, so test_engine_exact's ``compare()`` can use this module
  for every method;
* ``frontier_blocks`` — the block numbers each method reads, per model depth.

Checked against the authors' code, out of tree (their segmentors run on the CPU in fp32 with
mmseg/mmengine base classes stubbed and their ``.cuda()`` calls made no-ops; their own text
features, windows, up-sampling, PAMR, TLP and post-processing), on the tests' random models
(tests/conftest.py TINY_SHAPE, width 64 = 1 head, and TWO_HEAD_SHAPE, width 128 = 2 heads; plus
a 24-block width-64 model for the ViT-L/14 indices), 72×96 images resized to 224×299 (two
224/112 windows) unless said, max |difference| over all cases:

* SC-CLIP @ 0417ba9 (17 runs: default, res_cls 0.1 + area 0.1 + prob 0.15 + logit 50, PAMR 3,
  16 names, crop 0 on 224×224, 24 blocks with the authors' ViT-L/14 indices 16/6/8–19/0.1):
  window logits 2.7e-7, query logits 2.4e-7, returned map 1.1e-6, labels identical; crop 0 on
  224×299: both fail (their IndexError, our ValueError) on the same outlier.
* SFP @ 2804f5b (19 runs: SOM, L2, LOF, res_cls 0.1 + area + prob + logit, PAMR 3, crop 0, 24
  blocks): window 2.7e-7, logits 2.4e-7, map 1.0e-6, labels identical; NaN windows (isolated
  outliers zeroed, then normalised) in the same places on both sides in 3 runs; crop 0 on
  224×299: both fail on the same outlier (1 head) or both run and agree (2 heads).
* PEARL @ c26062b (20 runs: TLP on/off, α_kk 0.3 / 0, 'svd', crop 0, TLP pooled 4×5 and 2×3 with
  trailing columns): window 3.0e-7; TLP off: logits 4.8e-7, map 1.9e-6; TLP on: logits 1.8e-5,
  map 1.0e-4 — TLP's conjugate gradient amplifies 1e-7 input rounding about 100× at full
  resolution (on identical inputs reference_tlp equals theirs to 0 / 1.8e-7); labels identical.
* ResCLIP @ 0e085f7 (22 runs: four per-dataset weight sets, σ 3, decay off, crop 0 on a 14×18
  grid, sfr_thd 0 / 0.99, PAMR 3, logit 60): window 2.7e-7, logits 2.4e-7, map 2.1e-6, labels
  identical. RCS/SFR on clip, sclip, clearclip, naclip (its code's other attn strategies, RCS and
  SFR each on/off, 32 runs): logits 3.0e-7, map 1.3e-6, labels identical.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Union

import numpy as np
import torch

import naive_reference as ref
from naive_reference import (
    _bilinear,
    _layer_norm,
    _out_proj,
    _patch_logits,
    _qkv,
    _standard_block,
    l2_normalise,
    reference_attention_map,
    reference_normalise,
    reference_omega,
    reference_pamr,
    reference_patch_embed,
    reference_positional_embedding,
    reference_resize,
    vision_dims,
)

#: The methods of this module (all others are naive_reference's).
FRONTIER_METHODS = ("scclip", "sfp", "pearl", "resclip")
#: Every method the two references implement (``reference_logits`` below runs each).
REFERENCE_METHODS = (*ref.REFERENCE_METHODS, *FRONTIER_METHODS)

# --------------------------------------------------------------------------------------------
# Block numbers (1-based: block b's output = the residual stream after block b)
# --------------------------------------------------------------------------------------------


def frontier_blocks(method: str, layers: int) -> dict:
    """Which blocks a method reads, as block numbers 1 … ``layers``.

    scclip: 12 blocks -> outliers on block 11, pre-similarity 9, post-similarity 4, multi-level
    sum 4 … 10, res_cls 0.3 (authors' base config: list indices 8 / 3 / 3…9 of the outputs of
    blocks 1 … L−1); 24 blocks -> 23 / 17 / 7 / 9 … 19, res_cls 0.1 (authors' answer in
    github.com/SuleBai/SC-CLIP/issues/5: pre_adjust_idx 16, post_adjust_idx 6, multi 8–19, res_cls
    0.1). sfp: its code hard-codes the same absolute indices as SC-CLIP's 12-block ones (hidden
    states [8], [3], [3:10]) and runs them unchanged on ViT-L/14 (its configs carry ViT-L/14
    thresholds), so 12 and 24 blocks both give 11|23 / 9 / 4 / 4 … 10. resclip: RCS from blocks
    6 … 9 (code: ``range(5, 9)``), unchanged for ViT-L/14 (the README lists it). pearl reads only the
    last block. Other depths raise ValueError: the authors give no rule.
    """
    if method == "pearl":
        return {}
    if method not in FRONTIER_METHODS:
        raise ValueError(f"unknown method {method!r}")
    if layers not in (12, 24):
        raise ValueError(f"{method} defines its block indices for 12- and 24-block models only, not {layers}")
    if method == "resclip":
        return dict(rcs=(6, 7, 8, 9))
    if method == "scclip" and layers == 24:
        return dict(outliers=23, pre=17, post=7, multi=tuple(range(9, 20)), res_cls=0.1)
    return dict(outliers=layers - 1, pre=9, post=4, multi=tuple(range(4, 11)), res_cls=0.3)


# --------------------------------------------------------------------------------------------
# The trunk: blocks 1 … L−1 unchanged, every output (and attention map) kept
# --------------------------------------------------------------------------------------------


def _embedded_tokens(state: dict, image: torch.Tensor) -> torch.Tensor:
    """(1 + N, D): class token + patch embeddings + positional table, through ``ln_pre``."""
    p = vision_dims(state)["patch"]
    g_h, g_w = image.shape[1] // p, image.shape[2] // p
    x = reference_patch_embed(state, image)
    x = torch.cat([state["visual.class_embedding"][None, :], x], dim=0)
    x = x + reference_positional_embedding(state, g_h, g_w)
    return _layer_norm(x, state, "visual.ln_pre")


def _block_prefix(block: int) -> str:
    return f"visual.transformer.resblocks.{block - 1}"


def reference_trunk(state: dict, image: torch.Tensor, *, attention: bool = False):
    """Blocks 1 … L−1 of one normalised (3, h, w) window, unchanged.

    Returns ``outputs`` (``outputs[b-1]`` = block b's output, (1+N, D)) and, with ``attention``, the
    per-head maps ``softmax((q·s) kᵀ)`` of each block ((heads, 1+N, 1+N), class token included);
    otherwise ``None``.
    """
    dims = vision_dims(state)
    x = _embedded_tokens(state, image)
    outputs, maps = [], []
    for block in range(1, dims["layers"]):
        prefix = _block_prefix(block)
        if attention:
            maps.append(reference_attention_map(_layer_norm(x, state, prefix + ".ln_1"), state, prefix,
                                                dims["heads"], "q-k"))
        x = _standard_block(x, state, prefix, dims["heads"])
        outputs.append(x)
    return outputs, (maps if attention else None)


def _last_block_qkv(state: dict, y: torch.Tensor):
    """q, k, v (heads, T, 64) of the last block's ``ln_1`` + ``in_proj`` on tokens y (T, D)."""
    dims = vision_dims(state)
    prefix = _block_prefix(dims["layers"])
    return _qkv(_layer_norm(y, state, prefix + ".ln_1"), state, prefix, dims["heads"])


def _last_out_proj(state: dict, heads_out: torch.Tensor) -> torch.Tensor:
    return _out_proj(heads_out, state, _block_prefix(vision_dims(state)["layers"]))


def _projected(state: dict, z: torch.Tensor) -> torch.Tensor:
    """``ln_post(z) @ proj`` on every row of z."""
    return _layer_norm(z, state, "visual.ln_post") @ state["visual.proj"]


# --------------------------------------------------------------------------------------------
# SC-CLIP / SFP building blocks (SPEC-methods-2 §2.1–2.2)
# --------------------------------------------------------------------------------------------


def reference_lof(tokens: torch.Tensor, n_neighbors: int = 30, contamination: float = 0.05):
    """SC-CLIP's PyTorch "LOF" on (N, D) tokens -> (outlier token indices ascending, scores (N,)).

    authors: squared Euclidean distances, the point's *own* k-distance in the reachability, the
    95 % quantile (linear interpolation) with a strict ``>`` — not scikit-learn's LOF.
    """
    n = tokens.shape[0]
    if n <= n_neighbors:
        raise ValueError(f"LOF needs more than {n_neighbors} patch tokens, the window has {n}")
    distances = torch.zeros(n, n)
    for i in range(n):
        distances[i] = (tokens - tokens[i]).norm(dim=1) ** 2  # ‖X_j − X_i‖², then squared
    neighbours, k_distance = [], torch.zeros(n)
    for i in range(n):
        order = torch.sort(distances[i], stable=True).indices[: n_neighbors + 1]
        neighbours.append(order[1:])  # drop the first: the token itself
        k_distance[i] = distances[i, order[-1]]
    lrd = torch.zeros(n)
    for i in range(n):
        reach = torch.maximum(distances[i, neighbours[i]], k_distance[i])
        lrd[i] = n_neighbors / reach.mean()
    scores = torch.zeros(n)
    for i in range(n):
        scores[i] = (lrd[neighbours[i]] / lrd[i]).mean()
    # the (1 − contamination) quantile with linear interpolation between sorted scores
    ordered = torch.sort(scores).values
    position = (1 - contamination) * (n - 1)
    low = int(math.floor(position))
    high = min(low + 1, n - 1)
    threshold = ordered[low] + (position - low) * (ordered[high] - ordered[low])
    return [i for i in range(n) if bool(scores[i] > threshold)], scores


def reference_som_outliers(attention: torch.Tensor, res_cls: float, top: int = 10) -> list[int]:
    """SFP's "SOM" outliers from one block's per-head maps (heads, 1+N, 1+N) -> patch indices.

    authors: row 0 (class token -> patches) of every head is scaled by res_cls·5 before the heads
    are averaged; a patch j is a candidate when that scaled attention exceeds its self-attention
    A[j, j] (strict); the ``top`` candidates by scaled attention, largest first.
    """
    scaled = attention.clone()
    scaled[:, 0, 1:] = scaled[:, 0, 1:] * (res_cls * 5.0)
    mean = scaled.mean(dim=0)
    n = mean.shape[0] - 1
    to_patch = [float(mean[0, 1 + j]) for j in range(n)]
    candidates = [j for j in range(n) if bool(mean[0, 1 + j] > mean[1 + j, 1 + j])]
    return sorted(candidates, key=lambda j: -to_patch[j])[:top]


def reference_l2_outliers(tokens: torch.Tensor, top: int = 10) -> list[int]:
    """SFP's "L2" outliers: the ``top`` patch tokens (N, D) of largest L2 norm, largest first."""
    norms = [float(t.norm()) for t in tokens]
    return sorted(range(len(norms)), key=lambda j: -norms[j])[:top]


def outlier_positions(indices: Sequence[int], g_h: int, g_w: int) -> list[tuple[int, int]]:
    """Grid positions of outlier tokens as the authors' code computes them: (t // g_h, t % g_h).

    authors: the token index is divided by the number of *rows* — the row-major position only for
    square grids. Their code raises IndexError when a position falls outside the g_h × g_w grid;
    here that is a ValueError saying so.
    """
    positions = []
    for t in indices:
        r, c = int(t) // g_h, int(t) % g_h
        if r >= g_h or c >= g_w:
            raise ValueError(
                f"outlier token {int(t)} maps to ({r}, {c}) outside the {g_h}×{g_w} patch grid "
                "(SC-CLIP/SFP place outliers with the row count; only square windows are safe)")
        positions.append((r, c))
    return positions


def reference_fill(grid: torch.Tensor, positions: Sequence[tuple[int, int]], *,
                   keep_isolated: bool = True) -> torch.Tensor:
    """Neighbour fill of a (g_h, g_w, D) map: each listed position takes the mean of its in-grid,
    non-listed 8-neighbours (read from the original map, all at once).

    A position without such neighbour keeps its value (SC-CLIP, ``keep_isolated``) or becomes 0
    (SFP's code: 0 / 1 written unconditionally). No positions: the map unchanged.
    """
    g_h, g_w = grid.shape[:2]
    listed = set(positions)
    out = grid.clone()
    for r, c in listed:
        total, count = torch.zeros(grid.shape[2]), 0
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr, dc) == (0, 0) or not (0 <= rr < g_h and 0 <= cc < g_w) or (rr, cc) in listed:
                    continue
                total = total + grid[rr, cc]
                count += 1
        if count:
            out[r, c] = total / count
        elif not keep_isolated:
            out[r, c] = 0.0
    return out


def _filled_tokens(tokens: torch.Tensor, positions, g_h: int, g_w: int, keep_isolated: bool) -> torch.Tensor:
    """reference_fill on (N, D) row-major patch tokens."""
    d = tokens.shape[1]
    return reference_fill(tokens.reshape(g_h, g_w, d), positions, keep_isolated=keep_isolated).reshape(g_h * g_w, d)


def reference_cosine(tokens: torch.Tensor, threshold: Optional[float] = None) -> torch.Tensor:
    """(N, N) cosine similarities of (N, D) tokens (x / ‖x‖, no eps); entries < threshold -> 0."""
    unit = l2_normalise(tokens)
    similarity = unit @ unit.t()
    if threshold is not None:
        similarity = torch.where(similarity < threshold, torch.zeros_like(similarity), similarity)
    return similarity


def reference_aggregate(tokens: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """``(S / (rowsum(S) + 1e-6)) @ tokens``."""
    return (similarity / (similarity.sum(dim=1, keepdim=True) + 1e-6)) @ tokens


def _similarity_softmax(similarity: torch.Tensor) -> torch.Tensor:
    """softmax over keys of M = 3·(S − mean(S)) with every M < 0 set to −∞ (the diagonal stays)."""
    m = (similarity - similarity.mean()) * 3.0
    m = torch.where(m < 0.0, torch.full_like(m, float("-inf")), m)
    return torch.softmax(m, dim=-1)


def _scclip_attention(state: dict, y: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """SC-CLIP's last-block attention on N patch tokens y (ln_1 applied inside): O(((softmax(M) +
    softmax(s·k kᵀ)) / 2) v) per head, M from the *unthresholded* similarity."""
    _, k, v = _last_block_qkv(state, y)
    s = k.shape[-1] ** -0.5
    weights = (_similarity_softmax(similarity)[None] + torch.softmax((k @ k.transpose(1, 2)) * s, dim=-1)) / 2
    return _last_out_proj(state, weights @ v)


def _sfp_attention(state: dict, y: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """SFP's last-block attention: O(((softmax(s·k kᵀ) + softmax(s·q qᵀ)) + softmax(M)) / 3 · v)."""
    q, k, v = _last_block_qkv(state, y)
    s = q.shape[-1] ** -0.5
    weights = torch.softmax((k @ k.transpose(1, 2)) * s, dim=-1) + torch.softmax((q @ q.transpose(1, 2)) * s, dim=-1)
    weights = (weights + _similarity_softmax(similarity)[None]) / 3
    return _last_out_proj(state, weights @ v)


def _similarity_attention(state: dict, y: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """SFP's "sinkhorn_attn" (no Sinkhorn iteration): O(softmax(M) v)."""
    _, _, v = _last_block_qkv(state, y)
    return _last_out_proj(state, _similarity_softmax(similarity)[None] @ v)


def reference_scclip_features(state: dict, image: torch.Tensor, *, res_cls: Optional[float] = None) -> torch.Tensor:
    """SC-CLIP's (g_h·g_w, E) normalised patch features of one normalised (3, h, w) window.

    ``res_cls`` None: the depth's default of ``frontier_blocks`` (0.3 for 12 blocks). Windows need
    more than 30 patches (LOF's neighbours; the authors' topk fails below). If LOF flags no token
    the authors' code raises IndexError; here nothing is filled.
    """
    dims = vision_dims(state)
    blocks = frontier_blocks("scclip", dims["layers"])
    res_cls = blocks["res_cls"] if res_cls is None else res_cls
    g_h, g_w = image.shape[1] // dims["patch"], image.shape[2] // dims["patch"]
    outputs, _ = reference_trunk(state, image)
    x = outputs[blocks["outliers"] - 1]
    cls_token, patches = x[0], x[1:]
    outliers, _ = reference_lof(patches)
    positions = outlier_positions(outliers, g_h, g_w)

    repaired = _filled_tokens(patches, positions, g_h, g_w, keep_isolated=True)
    mid = reference_cosine(_filled_tokens(outputs[blocks["pre"] - 1][1:], positions, g_h, g_w, True))
    pre = torch.where(mid < 0.4, torch.zeros_like(mid), mid)
    post = reference_cosine(outputs[blocks["post"] - 1][1:], threshold=0.4)

    z = reference_aggregate(repaired, pre)
    z = _scclip_attention(state, z, mid) + res_cls * cls_token
    z = reference_aggregate(z, post)

    summed = torch.zeros_like(x)
    for block in blocks["multi"]:  # authors: zeros, then blocks in order
        summed = summed + outputs[block - 1]
    multi = _scclip_attention(state, summed[1:], mid) + res_cls * summed[0]
    multi = reference_aggregate(multi, post)
    return l2_normalise(_projected(state, z + multi))


def reference_sfp_features(state: dict, image: torch.Tensor, *, res_cls: float = 0.3,
                           outlier_mode: str = "SOM", isolated_outliers: str = "zero") -> torch.Tensor:
    """SFP's (g_h·g_w, E) normalised patch features of one normalised (3, h, w) window.

    ``outlier_mode``: 'SOM' (default: class-token vs self attention of block L−1), 'L2' (10
    largest norms) or 'LOF' (SC-CLIP's). authors: one thresholded similarity for the attention and
    the aggregation; q-q added to the attention; isolated outliers are zeroed by the fill
    (``isolated_outliers`` 'zero': the window becomes NaN; 'keep': SC-CLIP's rule, this project's).
    """
    if isolated_outliers not in ("zero", "keep"):
        raise ValueError(f"isolated_outliers must be 'zero' or 'keep', got {isolated_outliers!r}")
    keep = isolated_outliers == "keep"
    dims = vision_dims(state)
    blocks = frontier_blocks("sfp", dims["layers"])
    g_h, g_w = image.shape[1] // dims["patch"], image.shape[2] // dims["patch"]
    outputs, maps = reference_trunk(state, image, attention=outlier_mode == "SOM")
    x = outputs[blocks["outliers"] - 1]
    cls_token, patches = x[0], x[1:]
    if outlier_mode == "SOM":
        outliers = reference_som_outliers(maps[blocks["outliers"] - 1], res_cls)
    elif outlier_mode == "L2":
        outliers = reference_l2_outliers(patches)
    elif outlier_mode == "LOF":
        outliers, _ = reference_lof(patches)
    else:
        raise ValueError(f"unknown SFP outlier mode {outlier_mode!r} (SOM, L2, LOF)")
    positions = outlier_positions(outliers, g_h, g_w)

    repaired = _filled_tokens(patches, positions, g_h, g_w, keep_isolated=keep)
    similarity = reference_cosine(_filled_tokens(outputs[blocks["pre"] - 1][1:], positions, g_h, g_w, keep),
                                  threshold=0.4)
    post = reference_cosine(outputs[blocks["post"] - 1][1:], threshold=0.4)

    z = reference_aggregate(repaired, similarity)
    z = _sfp_attention(state, z, similarity) + res_cls * cls_token
    z = reference_aggregate(z, post)

    summed = torch.stack([outputs[block - 1] for block in blocks["multi"]]).sum(dim=0)
    multi = _similarity_attention(state, summed[1:], similarity) + res_cls * summed[0]
    multi = reference_aggregate(multi, post)
    return l2_normalise(_projected(state, z + multi))


# --------------------------------------------------------------------------------------------
# PEARL (§2.3)
# --------------------------------------------------------------------------------------------


def reference_newton_schulz_polar(m: torch.Tensor, iterations: int = 5, eps: float = 1e-6) -> torch.Tensor:
    """PEARL's approximate orthogonal polar factor of a (d, d) matrix M: ``iterations`` coupled
    Newton–Schulz steps for (MᵀM)^-½ on MᵀM / ‖MᵀM‖_F + eps·I, then M (Z / √‖MᵀM‖_F)."""
    d = m.shape[0]
    eye = torch.eye(d)
    a = m.t() @ m
    norm = torch.clamp(a.reshape(-1).norm(), min=eps)
    y = a / norm + eps * eye
    z = eye.clone()
    for _ in range(iterations):
        t = 0.5 * (3.0 * eye - z @ y)
        y = y @ t
        z = t @ z
    return m @ (z / torch.sqrt(norm))


def reference_svd_polar(m: torch.Tensor) -> torch.Tensor:
    """The exact polar factor U Vᵀ of M = U Σ Vᵀ (PEARL's 'svd' solver)."""
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    return u @ vh


def reference_pearl_features(state: dict, image: torch.Tensor, *, kk_weight: float = 0.08,
                             polar_solver: str = "polar", polar_iterations: int = 5) -> torch.Tensor:
    """PEARL's (g_h·g_w, E) normalised patch features of one normalised (3, h, w) window: block L
    replaced by Procrustes-aligned attention (no residual, no FFN), one head at a time."""
    outputs, _ = reference_trunk(state, image)
    q, k, v = _last_block_qkv(state, outputs[-1])
    logits = _pearl_logits(q, k, kk_weight, polar_solver, polar_iterations)
    z = _last_out_proj(state, torch.softmax(logits, dim=-1) @ v)
    return _unit_rows(_projected(state, z)[1:])


def _pearl_logits(q: torch.Tensor, k: torch.Tensor, kk_weight: float, polar_solver: str = "polar",
                  polar_iterations: int = 5) -> torch.Tensor:
    """PEARL's pre-softmax attention logits (heads, T, T) of the last block, one head at a time."""
    s = q.shape[-1] ** -0.5
    out = []
    for h in range(q.shape[0]):
        qh, kh = q[h], k[h]
        weight = qh.norm(dim=1)
        weight[0] = 0.0  # the class token does not move the centroids
        weight = weight / (weight.sum() + 1e-6)
        q_centred = qh - (weight[:, None] * qh).sum(dim=0)
        k_centred = kh - (weight[:, None] * kh).sum(dim=0)
        m = k_centred.t() @ q_centred
        if polar_solver == "polar":
            rotation = reference_newton_schulz_polar(m, polar_iterations)
        elif polar_solver == "svd":
            rotation = reference_svd_polar(m)
        else:
            raise ValueError(f"unknown polar solver {polar_solver!r} (polar, svd)")
        logits = (qh * s) @ (kh @ rotation).t()  # authors: the uncentred keys are rotated
        out.append(logits + kk_weight * ((k_centred @ k_centred.t()) * s))
    return torch.stack(out)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """F.normalize: x / max(‖x‖, 1e-12) per row."""
    return x / torch.clamp(x.norm(dim=-1, keepdim=True), min=1e-12)


def _laplacian(x: torch.Tensor, w_h: torch.Tensor, w_v: torch.Tensor) -> torch.Tensor:
    """TLP's weighted graph Laplacian of (Q, Hs, Ws) maps, edge weights shared by all channels;
    accumulation order of the authors (horizontal +=, −=, vertical +=, −=)."""
    out = torch.zeros_like(x)
    diff_h = w_h * (x[:, :, 1:] - x[:, :, :-1])
    out[:, :, 1:] += diff_h
    out[:, :, :-1] -= diff_h
    diff_v = w_v * (x[:, 1:, :] - x[:, :-1, :])
    out[:, 1:, :] += diff_v
    out[:, :-1, :] -= diff_v
    return out


def reference_tlp_affinity(text_features: torch.Tensor) -> torch.Tensor:
    """PEARL's text affinity S (Q, Q): softmax(T Tᵀ / 0.5) per row, + 10·I, rows / (sum + 1e-6).

    authors: only its diagonal is used (``einsum('cc,bcij->bcij')``)."""
    t = _unit_rows(text_features)
    s = torch.softmax((t @ t.t()) / 0.5, dim=1)
    s = s + 10.0 * torch.eye(s.shape[0])
    return s / (s.sum(dim=1, keepdim=True) + 1e-6)


def _average_pool(x: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """Mean over non-overlapping sh×sw blocks of (C, H, W); trailing rows/columns dropped."""
    c, h, w = x.shape
    hs, ws = h // sh, w // sw
    out = torch.zeros(c, hs, ws)
    for i in range(hs):
        for j in range(ws):
            out[:, i, j] = x[:, i * sh:(i + 1) * sh, j * sw:(j + 1) * sw].reshape(c, -1).mean(dim=1)
    return out


def reference_tlp(logits: torch.Tensor, guide: torch.Tensor, text_features: torch.Tensor, grid: int = 80,
                  iterations: int = 25) -> torch.Tensor:
    """PEARL's text-aware Laplacian propagation of query logits (SPEC-methods-2 §2.3.3).

    Inputs: ``logits`` (Q, H, W) raw query similarities (cosines, *before* the logit scale) at the
    size they are refined at (PEARL: the original image size); ``guide`` (3, H, W) the normalised
    RGB image at that size (PEARL: the normalised resized image, bilinearly resized); the (Q, E)
    query text features (re-normalised here). Pools both to about ``grid`` cells per side
    (``round(H / grid)``, Python rounding), solves (Cw + L) X = Cw·ℓ by ``iterations`` conjugate-
    gradient steps (one system over all channels, no early stop) and resizes X back. Returns
    (Q, H, W) logits.
    """
    diag = torch.diagonal(reference_tlp_affinity(text_features))[:, None, None]
    _, h, w = logits.shape
    sh, sw = max(1, round(h / float(grid))), max(1, round(w / float(grid)))
    pooled = sh > 1 or sw > 1
    image = _average_pool(guide, sh, sw) if pooled else guide
    start = _average_pool(logits, sh, sw) if pooled else logits

    p = torch.softmax(start, dim=0)
    confidence = p.max(dim=0).values
    agree = torch.clamp((p * (diag * p)).sum(dim=0), 0.0, 1.0)
    data_weight = torch.clamp(confidence, min=0.05) ** 2 * (1.0 + agree)

    grey = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    gx = torch.abs(grey[:, 1:] - grey[:, :-1])
    gy = torch.abs(grey[1:, :] - grey[:-1, :])
    gx = gx / (gx.mean() + 1e-6)
    gy = gy / (gy.mean() + 1e-6)
    gate_h = (p[:, :, 1:] * (diag * p[:, :, :-1])).sum(dim=0)
    gate_v = (p[:, 1:, :] * (diag * p[:, :-1, :])).sum(dim=0)
    w_h = torch.clamp(torch.exp(-5.0 * gx) * (1.0 + torch.clamp(gate_h, 0.0, 1.0)), 0.0, 1.0)
    w_v = torch.clamp(torch.exp(-5.0 * gy) * (1.0 + torch.clamp(gate_v, 0.0, 1.0)), 0.0, 1.0)

    def apply(x):
        return data_weight * x + 1 * _laplacian(x, w_h, w_v)

    rhs = data_weight * start
    x = start.clone()
    r = rhs - apply(x)
    direction = r.clone()
    rho = (r * r).sum()
    for _ in range(iterations):
        a_dir = apply(direction)
        alpha = rho / ((direction * a_dir).sum() + 1e-12)
        x = x + alpha * direction
        r = r - alpha * a_dir
        rho_new = (r * r).sum()
        direction = r + (rho_new / (rho + 1e-12)) * direction
        rho = rho_new
    return _bilinear(x, (h, w)) if pooled else x


# --------------------------------------------------------------------------------------------
# ResCLIP (§2.4): RCS and SFR
# --------------------------------------------------------------------------------------------


def reference_patch_mode(labels: torch.Tensor, patch: int) -> torch.Tensor:
    """(h, w) integer labels -> (h // p, w // p): each p×p patch's most frequent label, ties -> the
    smallest (torch.mode on the CPU); leftover rows/columns beyond the patch grid dropped."""
    g_h, g_w = labels.shape[0] // patch, labels.shape[1] // patch
    out = torch.zeros(g_h, g_w, dtype=torch.int64)
    for i in range(g_h):
        for j in range(g_w):
            block = labels[i * patch:(i + 1) * patch, j * patch:(j + 1) * patch].reshape(-1)
            values, counts = torch.unique(block, return_counts=True)  # values ascending
            out[i, j] = values[int(torch.argmax(counts))]  # first maximum = smallest value
    return out


def reference_entity_decay(same: torch.Tensor, patch_labels: torch.Tensor) -> torch.Tensor:
    """ResCLIP's "delete same entity" decay of the (N, N) same-label matrix of a (g_h, g_w) grid.

    For tokens i, j: n = Chebyshev distance, n_max = the largest n of the grid; the points
    round(P_i·(1 − t_m) + P_j·t_m) with t = linspace(0, 1, n_max + 1) (float32, round half to even)
    for m = 0 … n only — authors: the grid is spaced for n_max steps, so only a prefix of the
    segment is checked. If any point's label differs from i's: entry × exp(−n / n_max).
    """
    g_h, g_w = patch_labels.shape
    n_tokens = g_h * g_w
    rows = (torch.arange(n_tokens) // g_w).float()
    cols = (torch.arange(n_tokens) % g_w).float()
    flat = patch_labels.reshape(-1)
    n_max = max(g_h, g_w) - 1
    t = torch.linspace(0, 1, n_max + 1)[None, :]
    out = same.clone()
    for i in range(n_tokens):  # token i against every j at once; m along the second axis
        steps = torch.maximum((rows - rows[i]).abs(), (cols - cols[i]).abs())
        r = torch.round(rows[i] * (1 - t) + rows[:, None] * t).long()
        c = torch.round(cols[i] * (1 - t) + cols[:, None] * t).long()
        inspected = torch.arange(n_max + 1)[None, :] <= steps[:, None]
        broken = ((patch_labels[r, c] != flat[i]) & inspected).any(dim=1)
        decay = torch.exp(-steps / n_max)
        out[i] = torch.where(broken, out[i] * decay, out[i])
    return out


def reference_row_blur(matrix: torch.Tensor, std: float) -> torch.Tensor:
    """ResCLIP's 1-D Gaussian blur of every row of an (N, N) matrix along the token index
    (row-major, so it crosses grid rows): K = min(N, int(6σ + 1)), made odd; g(u) = exp(−u²/2σ²)
    for u = −K//2 … K//2, normalised; zero padding; then ReLU and rows / (row sum + 1e-8)."""
    n = matrix.shape[1]
    size = min(n, int(6 * std + 1))
    size = size if size % 2 == 1 else size + 1
    u = torch.arange(size) - size // 2
    kernel = torch.exp(-(u ** 2) / (2 * std ** 2))
    kernel = kernel / kernel.sum()
    half = size // 2
    blurred = torch.zeros_like(matrix)
    for a in range(size):
        offset = a - half  # out[:, x] += g[a] · in[:, x + offset]
        lo, hi = max(0, -offset), min(n, n - offset)
        blurred[:, lo:hi] += kernel[a] * matrix[:, lo + offset:hi + offset]
    blurred = torch.relu(blurred)
    return blurred / (blurred.sum(dim=1, keepdim=True) + 1e-8)


def reference_sfr_matrix(window_logits: torch.Tensor, window_image: torch.Tensor, *, patch: int,
                         logit_scale: float, sfr_thd: float, gaussian_std: float = 5.0,
                         entity_decay: bool = True) -> torch.Tensor:
    """ResCLIP's semantic feedback matrix (1+N, 1+N), float32, from a first pass.

    Inputs: ``window_logits`` (Q, h, w) the window's raw query similarities of a first pass,
    up-sampled to the window's own size; ``window_image`` (3, h, w) the normalised window (PAMR
    guide); the method's logit scale; ``sfr_thd`` (ResCLIP's temp_thd). Steps: 10-step PAMR
    (dilations 8, 16), softmax over *queries*, argmax, top probability < sfr_thd -> query 0, patch
    mode, same-label matrix, entity decay, 1-D row blur; class-token row and column 0.
    """
    refined = reference_pamr(window_image, window_logits, 10, (8, 16))
    probs = torch.softmax(refined * logit_scale, dim=0)
    labels = probs.argmax(dim=0)
    labels[probs.max(dim=0).values < sfr_thd] = 0
    patch_labels = reference_patch_mode(labels, patch)
    flat = patch_labels.reshape(-1)
    same = (flat[:, None] == flat[None, :]).float()
    if entity_decay:
        same = reference_entity_decay(same, patch_labels)
    n = flat.shape[0]
    out = torch.zeros(1 + n, 1 + n)
    out[1:, 1:] = reference_row_blur(same, gaussian_std)
    return out


def reference_sfr_logits(logits: torch.Tensor, sfr: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """ResCLIP's SFR mix of pre-softmax attention logits: τ·((1 − λ)·logits + λ·fp16(sfr / max sfr)).

    ``logits`` (heads, 1+N, 1+N) float32 (ResCLIP: s·k kᵀ, before Ω); ``sfr`` from
    ``reference_sfr_matrix``; ``weights`` (τ, λ). authors: sfr / max is rounded to float16 and λ·that
    is a float16 tensor (the float32 product rounded to float16), added to the float32 term.
    """
    tau, lam = weights
    rounded = (sfr / sfr.max()).to(torch.float16)
    feedback = (rounded.to(torch.float32) * torch.tensor(lam, dtype=torch.float32)).to(torch.float16)
    return tau * ((1 - lam) * logits + feedback)


#: Methods whose last block can take ResCLIP's RCS and SFR: the attn_strategy values of ResCLIP's code
#: (clip, sclip, clearclip, naclip — residual and FFN kept for clip and sclip, removed for clearclip
#: and naclip) and resclip itself; plus this project's extension to ITACLIP's and PEARL's last blocks
#: (their attention logits are mixed like the others'; ITACLIP's RCS mixes the map fused with its
#: intermediate layers, the map that multiplies the values).
SFR_METHODS = ("itaclip", "clip", "sclip", "clearclip", "naclip", "resclip", "pearl")


def _self_self_maps(state: dict, y: torch.Tensor, prefix: str, heads: int, attention: str) -> torch.Tensor:
    """naive_reference's attention map of a block (sum of one softmax per term) from its input tokens y."""
    return reference_attention_map(_layer_norm(y, state, prefix + ".ln_1"), state, prefix, heads, attention)


def reference_feedback_features(state: dict, image: torch.Tensor, text: Optional[torch.Tensor], method: str, *,
                                gaussian_std: float = 5.0, rcs_weights: Optional[Sequence[float]] = None,
                                sfr_thd: Optional[float] = None, sfr_weights: Optional[Sequence[float]] = None,
                                logit_scale: float = 40.0, entity_decay: bool = True, attention: str = "q-q+k-k",
                                remove_ffn: bool = True, intermediate_layers: Sequence[int] = (7, 8, 10),
                                kk_weight: float = 0.08) -> torch.Tensor:
    """(g_h·g_w, E) normalised patch features of one normalised (3, h, w) window for a last block of
    ``SFR_METHODS`` with ResCLIP's residual attention (RCS, ``rcs_weights``) and semantic feedback
    (SFR, ``sfr_thd`` and ``sfr_weights``), each optional — as ResCLIP's ``custom_attn`` defines them.

    Pre-softmax logits per method: clip (q·s) kᵀ; sclip s·q qᵀ and s·k kᵀ (two softmaxes, summed);
    clearclip s·q qᵀ; naclip and resclip s·k kᵀ, + Ω after the SFR mix; itaclip one term per
    ``attention`` term (its softmaxes summed, then fused ½/½ with the mean map of
    ``intermediate_layers``; residual kept, MLP unless ``remove_ffn``); pearl its Procrustes logits
    (``kk_weight``; no residual, no MLP). SFR mixes every logits term (``reference_sfr_logits``); RCS
    mixes the map that multiplies the values: τ_r((1 − λ_r)·A + λ_r·A_rcs), A_rcs = the mean of blocks
    6 … 9's q-k maps. With SFR, a first pass (same block, RCS included, no SFR) gives the window's
    temporary labels; ``text`` (Q, E) and ``logit_scale`` are needed for it. resclip = naclip with
    both, RCS and SFR required.
    """
    if method not in SFR_METHODS:
        raise ValueError(f"no residual attention / semantic feedback for method {method!r} (only {SFR_METHODS})")
    if method == "resclip":
        if sfr_thd is None or rcs_weights is None or sfr_weights is None:
            raise ValueError("resclip needs sfr_thd, rcs_weights and sfr_weights (the authors' code has no defaults)")
    if (sfr_thd is None) != (sfr_weights is None):
        raise ValueError("semantic feedback needs both sfr_thd and sfr_weights")
    dims = vision_dims(state)
    p, heads = dims["patch"], dims["heads"]
    g_h, g_w = image.shape[1] // p, image.shape[2] // p
    outputs, maps = reference_trunk(state, image, attention=rcs_weights is not None)
    rcs = None
    if rcs_weights is not None:
        rcs = torch.stack([maps[block - 1] for block in frontier_blocks("resclip", dims["layers"])["rcs"]]).mean(dim=0)
    x = outputs[-1]
    q, k, v = _last_block_qkv(state, x)
    s = q.shape[-1] ** -0.5
    prefix = _block_prefix(dims["layers"])
    recorded = None
    if method == "itaclip":
        terms = []
        for term in ref.parse_attention(attention):
            if term == "q-k":
                terms.append((q * s) @ k.transpose(1, 2))
            else:
                a = {"q": q, "k": k, "v": v}[term[0]]
                terms.append((a @ a.transpose(1, 2)) * s)
        if intermediate_layers:
            inputs = [_embedded_tokens(state, image)] + outputs  # inputs[b-1] enters block b
            recorded = torch.stack([_self_self_maps(state, inputs[layer - 1], _block_prefix(layer), heads, attention)
                                    for layer in intermediate_layers]).mean(dim=0)
    elif method == "pearl":
        terms = [_pearl_logits(q, k, kk_weight)]
    elif method == "clip":
        terms = [(q * s) @ k.transpose(1, 2)]
    elif method == "sclip":
        terms = [(q @ q.transpose(1, 2)) * s, (k @ k.transpose(1, 2)) * s]
    elif method == "clearclip":
        terms = [(q @ q.transpose(1, 2)) * s]
    else:  # naclip, resclip
        terms = [(k @ k.transpose(1, 2)) * s]
    omega = reference_omega(g_h, g_w, gaussian_std) if method in ("naclip", "resclip") else None

    def features(sfr: Optional[torch.Tensor]) -> torch.Tensor:
        weights = None
        for term in terms:
            logits = term if sfr is None else reference_sfr_logits(term, sfr, sfr_weights)
            if omega is not None:
                logits = logits + omega
            part = torch.softmax(logits, dim=-1)
            weights = part if weights is None else weights + part
        if recorded is not None:
            weights = 0.5 * weights + 0.5 * recorded
        if rcs is not None:
            tau_r, lam_r = rcs_weights
            weights = tau_r * ((1 - lam_r) * weights + lam_r * rcs)
        z = _last_out_proj(state, weights @ v)
        if method in ("clip", "sclip", "itaclip"):  # residual kept
            z = x + z
        if method in ("clip", "sclip") or (method == "itaclip" and not remove_ffn):
            z = z + ref._mlp(_layer_norm(z, state, prefix + ".ln_2"), state, prefix)
        if method == "pearl":
            return _unit_rows(_projected(state, z)[1:])
        return l2_normalise(_projected(state, z))[1:]

    if sfr_thd is None:
        return features(None)
    first = _patch_logits(features(None), text, g_h, g_w, tuple(image.shape[1:]))
    sfr = reference_sfr_matrix(first, image, patch=p, logit_scale=logit_scale, sfr_thd=sfr_thd,
                               gaussian_std=gaussian_std, entity_decay=entity_decay)
    return features(sfr)


def reference_resclip_features(state: dict, image: torch.Tensor, text: torch.Tensor, *, logit_scale: float,
                               sfr_thd: Optional[float], rcs_weights: Optional[Sequence[float]],
                               sfr_weights: Optional[Sequence[float]], gaussian_std: float = 5.0,
                               entity_decay: bool = True) -> torch.Tensor:
    """ResCLIP's (g_h·g_w, E) normalised patch features of one normalised (3, h, w) window: NACLIP's
    last block (k-k + Ω, no residual, no FFN) with RCS and SFR (``reference_feedback_features``).

    ``text`` (Q, E) query features and ``logit_scale`` feed the first pass's temporary labels;
    A = softmax(E + Ω), then τ_r((1 − λ_r)A + λ_r·A_rcs); first pass E = s·k kᵀ, final pass E = the
    SFR mix of s·k kᵀ.
    """
    return reference_feedback_features(state, image, text, "resclip", gaussian_std=gaussian_std,
                                       rcs_weights=rcs_weights, sfr_thd=sfr_thd, sfr_weights=sfr_weights,
                                       logit_scale=logit_scale, entity_decay=entity_decay)


# --------------------------------------------------------------------------------------------
# Whole image (SPEC-methods-2 §1)
# --------------------------------------------------------------------------------------------


#: Options of this module (keyword arguments of reference_logits / reference_segment): the four
#: methods' own, and RCS / SFR (``rcs_weights``, ``sfr_thd``, ``sfr_weights``, ``entity_decay``) for
#: every method of ``SFR_METHODS``.
FRONTIER_OPTIONS = ("res_cls", "outlier_mode", "isolated_outliers", "kk_weight", "polar_solver", "polar_iterations",
                    "sfr_thd", "rcs_weights", "sfr_weights", "entity_decay")
#: Feedback options: given for a method of naive_reference, its last block gets RCS / SFR.
FEEDBACK_OPTIONS = ("rcs_weights", "sfr_thd", "sfr_weights", "entity_decay")


def _encoder(state: dict, text: torch.Tensor, method: str, options: dict):
    """image -> normalised patch features, with the method's options bound."""
    if method == "scclip":
        return lambda img: reference_scclip_features(state, img, res_cls=options.get("res_cls"))
    if method == "sfp":
        res_cls = 0.3 if options.get("res_cls") is None else options["res_cls"]
        return lambda img: reference_sfp_features(state, img, res_cls=res_cls,
                                                  outlier_mode=options.get("outlier_mode", "SOM"),
                                                  isolated_outliers=options.get("isolated_outliers", "zero"))
    if method == "pearl" and not any(options.get(name) is not None for name in FEEDBACK_OPTIONS[:3]):
        return lambda img: reference_pearl_features(state, img, kk_weight=options.get("kk_weight", 0.08),
                                                    polar_solver=options.get("polar_solver", "polar"),
                                                    polar_iterations=options.get("polar_iterations", 5))
    return lambda img: reference_feedback_features(
        state, img, text, method, logit_scale=options["logit_scale"], sfr_thd=options.get("sfr_thd"),
        rcs_weights=options.get("rcs_weights"), sfr_weights=options.get("sfr_weights"),
        gaussian_std=options.get("gaussian_std", 5.0), entity_decay=options.get("entity_decay", True),
        **{name: options[name] for name in ("attention", "remove_ffn", "intermediate_layers", "kk_weight")
           if name in options})


def reference_logits(
    state: dict,
    image_rgb_uint8: np.ndarray,
    text: torch.Tensor,
    *,
    short_side: int = 336,
    crop: int = 224,
    stride: int = 28,
    pamr_steps: int = 10,
    pamr_dilations: Sequence[int] = (8, 16),
    method: str = "itaclip",
    tlp: Optional[bool] = None,
    tlp_grid: int = 80,
    logit_scale: float = 40.0,
    image_engineering: bool = True,
    views: Sequence[str] = ("grey", "blur", "vflip", "hflip"),
    lam: float = 0.75,
    authors_whole_image: bool = False,
    **options,
) -> torch.Tensor:
    """Refined query logits (Q, H, W) at the original size — the map the softmax is taken of.

    Windows and canvas as naive_reference (``crop`` 0: one window over the resized image, its logits
    up-sampled to the resized size; clearclip/maskclip windows padded). ``authors_whole_image``:
    SC-CLIP/SFP ``crop`` 0 as their authors' code runs it (SCLIP's branch: the whole resized image's
    logits straight to the original size, no PAMR) instead of this project's whole-image path.
    Then bilinear to the original size, PAMR (``pamr_steps`` > 0), then TLP (``tlp``: None = on for
    pearl only; any method may have it). The methods of naive_reference without feedback options
    are delegated to it (``options`` = its encoder options; the four methods' own options are
    ignored, so one call can pass every configuration field); with ``rcs_weights`` / ``sfr_thd`` +
    ``sfr_weights`` their last block gets ResCLIP's RCS / SFR (``SFR_METHODS`` only).
    ``logit_scale`` is used only by the SFR's temporary labels. ITACLIP's views (``image_engineering``,
    ``views``, ``lam``) apply to every method, a view being one more image through the encoder.
    """
    tlp = (method == "pearl") if tlp is None else tlp
    query_text = text
    h, w = image_rgb_uint8.shape[:2]
    resized = reference_normalise(reference_resize(image_rgb_uint8, short_side))
    view_options = dict(image_engineering=image_engineering, views=tuple(views), lam=lam)
    feedback = any(options.get(name) is not None for name in FEEDBACK_OPTIONS[:3])
    if method in ("scclip", "sfp") and feedback:
        raise ValueError(f"no residual attention / semantic feedback for method {method!r}")
    if method not in FRONTIER_METHODS and not feedback:
        options = {k: v for k, v in options.items() if k not in FRONTIER_OPTIONS}  # not theirs: ignored
        logits = ref.reference_logits(state, image_rgb_uint8, text, short_side=short_side, crop=crop, stride=stride,
                                      pamr_steps=pamr_steps, pamr_dilations=pamr_dilations, method=method,
                                      **view_options, **options)
    else:
        unknown = set(options) - set(FRONTIER_OPTIONS) - {"gaussian_std", "attention", "remove_ffn",
                                                          "intermediate_layers"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        if method == "pearl":
            text = _unit_rows(text)  # authors: F.normalize on the query features before F Tᵀ
        encoder = _encoder(state, text, method, dict(options, logit_scale=logit_scale))
        if crop == 0 and method in ("scclip", "sfp") and authors_whole_image:
            logits = ref.reference_crop_logits(state, resized, text, encoder=encoder, size=(h, w), **view_options)
            pamr_steps = 0  # authors: SCLIP's whole-image branch runs no PAMR
        else:
            canvas = ref.reference_slide(state, resized, text, crop=crop, stride=stride, method=method, encoder=encoder,
                                         **view_options)
            logits = _bilinear(canvas, (h, w))
        if pamr_steps > 0:
            logits = reference_pamr(_bilinear(resized, (h, w)), logits, pamr_steps, pamr_dilations)
    if tlp:
        logits = reference_tlp(logits, _bilinear(resized, (h, w)), query_text, tlp_grid)
    return logits


def reference_postprocess(logits: torch.Tensor, query_class: Sequence[int], *, method: str = "itaclip",
                          logit_scale: float = 40.0, prob_thd: float = 0.0, area_thd: Optional[float] = None,
                          closing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """naive_reference's post-processing (softmax over queries, max per class, SCLIP's area rule,
    prob_thd, labels) -> (the class map the argmax is taken of, labels). ResCLIP's area threshold
    is broken in the authors' code: refused. PEARL and ResCLIP return that map divided by its
    per-pixel sum (labels unaffected); the contract, and this function, return it undivided."""
    if method == "resclip" and area_thd is not None:
        raise ValueError("resclip has no working area threshold (the authors' code indexes the wrong axis)")
    return ref.reference_postprocess(logits, query_class, logit_scale=logit_scale, prob_thd=prob_thd,
                                     area_thd=area_thd, closing=closing)


def reference_segment(
    state_dict: Union[dict, str, os.PathLike],
    image_rgb_uint8: np.ndarray,
    classes: Sequence[Sequence[str]],
    has_background: bool,
    aux_texts: Optional[Sequence[str]] = None,
    *,
    alpha: float = 0.0,
    short_side: int = 336,
    crop: int = 224,
    stride: int = 28,
    pamr_steps: int = 10,
    pamr_dilations: Sequence[int] = (8, 16),
    logit_scale: float = 40.0,
    prob_thd: float = 0.0,
    area_thd: Optional[float] = None,
    closing: bool = True,
    method: str = "itaclip",
    tlp: Optional[bool] = None,
    tlp_grid: int = 80,
    image_engineering: bool = True,
    views: Sequence[str] = ("grey", "blur", "vflip", "hflip"),
    lam: float = 0.75,
    **options,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole method on one (H, W, 3) uint8 RGB image -> (probs (C, H, W) float32, labels (H, W)),
    as naive_reference.reference_segment, for every method; ``options``: the encoder options of
    naive_reference (attention, remove_ffn, intermediate_layers, gaussian_std) or ``FRONTIER_OPTIONS``.
    Pass every option explicitly (the authors' per-dataset settings are not defaults here)."""
    state = state_dict if ref._is_loaded(state_dict) else ref.load_reference_state(state_dict)
    classes = [tuple(names) for names in classes]
    text, query_class = ref.reference_text_features(state, classes, has_background, aux_texts, alpha)
    if method == "resclip" and area_thd is not None:
        raise ValueError("resclip has no working area threshold (the authors' code indexes the wrong axis)")
    with torch.no_grad():
        logits = reference_logits(state, image_rgb_uint8, text, short_side=short_side, crop=crop, stride=stride,
                                  pamr_steps=pamr_steps, pamr_dilations=pamr_dilations, method=method, tlp=tlp,
                                  tlp_grid=tlp_grid, logit_scale=logit_scale, image_engineering=image_engineering,
                                  views=views, lam=lam, **options)
    return reference_postprocess(logits, query_class, method=method, logit_scale=logit_scale, prob_thd=prob_thd,
                                 area_thd=area_thd, closing=closing)
