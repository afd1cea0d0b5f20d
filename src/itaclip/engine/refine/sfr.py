"""ResCLIP's semantic feedback refinement (SFR), for every last block with attention logits to mix.

A first pass of the window encoder labels each window (its own query logits, refined by a 10-step
PAMR guided by the window itself, thresholded at ``threshold``); the labels become a token × token
matrix — 1 for tokens of one label, decayed where the straight path between two tokens leaves that
label, blurred along the token index — that a second pass mixes into its last block's attention
logits: ``τ·((1 − λ)·logits + λ·feedback)``. Everything follows ResCLIP's code (github.com/yvhangyang/
ResCLIP @ 0e085f7), quirks included: labels are *query* indices, the path check looks only at a
prefix of each segment, the blur runs along the flattened token index (across grid rows), and the
feedback is rounded to float16 even in float32 runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .pamr import pamr

#: The first pass's PAMR (fixed in ResCLIP's code, independent of the pipeline's ``pamr_steps``).
FEEDBACK_PAMR_STEPS, FEEDBACK_PAMR_DILATIONS = 10, (8, 16)


@dataclass(frozen=True)
class SemanticFeedback:
    """SFR's settings (config: ``sfr_thd``, ``sfr_weights``, ``gaussian_std``, ``entity_decay``,
    ``logit_scale``) and its two steps: :meth:`matrix` from a first pass, :meth:`mix` into logits."""

    threshold: float
    weights: tuple[float, float]
    std: float
    entity_decay: bool
    logit_scale: float

    def matrix(self, features: torch.Tensor, text: torch.Tensor, grid: tuple[int, int], crops: torch.Tensor,
               patch: int) -> torch.Tensor:
        """Feedback (B, 1+N, 1+N) float32 from a first pass: ``features`` (B, N, E) unit patch features
        of the (B, 3, h, w) normalised ``crops`` (each its own PAMR guide), ``text`` (Q, E) the
        query features, ``grid`` (gh, gw), ``patch`` the patch size in pixels. Class-token row and
        column are 0."""
        batch, tokens = features.shape[:2]
        logits = (features @ text.T).transpose(1, 2).reshape(batch, -1, *grid)
        logits = F.interpolate(logits, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        labels = torch.stack([self.temporary_labels(window, crop) for window, crop in zip(logits, crops)])
        patches = patch_labels(labels, patch, grid, logits.shape[1])
        flat = patches.flatten(1)
        same = (flat[:, :, None] == flat[:, None, :]).float()
        if self.entity_decay:
            same = torch.stack([decay_across_labels(matrix, labels_) for matrix, labels_ in zip(same, patches)])
        out = features.new_zeros(batch, 1 + tokens, 1 + tokens)
        out[:, 1:, 1:] = row_blur(same, self.std)
        return out

    def temporary_labels(self, logits: torch.Tensor, crop: torch.Tensor) -> torch.Tensor:
        """(h, w) query indices of one window's (Q, h, w) logits: PAMR with the window as guide,
        softmax over queries, argmax (first maximum); pixels whose top probability is below the
        threshold become query 0."""
        # A window of a batch comes out of the up-sampling channels-last (queries innermost), where
        # PAMR's shifted planes are strided reads, about 3.5× slower: the same values, one plane after another.
        refined = pamr(crop, logits.contiguous(), FEEDBACK_PAMR_STEPS, FEEDBACK_PAMR_DILATIONS)
        probs = torch.softmax(refined * self.logit_scale, dim=0)
        labels = probs.argmax(dim=0)
        labels[probs.amax(dim=0) < self.threshold] = 0
        return labels

    def feedback(self, matrix: torch.Tensor) -> torch.Tensor:
        """λ · (matrix / its max), as ResCLIP computes it: float16 (B, 1+N, 1+N)."""
        peak = matrix.amax(dim=(-2, -1), keepdim=True)
        rounded = (matrix / peak).to(torch.float16)
        return (rounded.to(torch.float32) * torch.tensor(self.weights[1], dtype=torch.float32)).to(torch.float16)

    def mix(self, logits: torch.Tensor, feedback: torch.Tensor) -> torch.Tensor:
        """``τ·((1 − λ)·logits + feedback)`` in place on pre-softmax logits (B, heads, T, T), before any
        neighbourhood bias; ``feedback`` from :meth:`feedback`."""
        tau, lam = self.weights
        return logits.mul_(1 - lam).add_(feedback[:, None].to(logits.dtype)).mul_(tau)


def patch_labels(labels: torch.Tensor, patch: int, grid: tuple[int, int], queries: int) -> torch.Tensor:
    """(B, h, w) labels → (B, gh, gw): each patch's most frequent label, ties → the smallest (what
    ``torch.mode`` gives on the CPU; counted here so that every device agrees). Rows and columns
    beyond the patch grid are dropped."""
    grid_h, grid_w = grid
    batch = labels.shape[0]
    cells = labels[:, :grid_h * patch, :grid_w * patch].reshape(batch, grid_h, patch, grid_w, patch)
    cells = cells.permute(0, 1, 3, 2, 4).reshape(batch, grid_h * grid_w, patch * patch)
    counts = torch.zeros(batch, grid_h * grid_w, queries, dtype=torch.int32, device=labels.device)
    counts.scatter_add_(2, cells, torch.ones_like(cells, dtype=torch.int32))
    return counts.argmax(dim=2).reshape(batch, grid_h, grid_w)  # first maximum: the smallest label


def decay_across_labels(same: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ResCLIP's "delete same entity" on one window: (N, N) same-label matrix, (gh, gw) patch labels.

    For tokens i, j at Chebyshev distance n (n_max = the largest in the grid), the points
    ``round(P_i·(1 − t_m) + P_j·t_m)`` for t = linspace(0, 1, n_max + 1), m = 0 … n (only: the
    steps are spaced for n_max, so a prefix of the segment is inspected) must all carry i's label;
    otherwise the entry is multiplied by exp(−n / n_max). A point's row depends only on the two rows
    and m (its column likewise), so the points come from (rows × rows) and (columns × columns) tables
    computed with the formula's float32 arithmetic; one (N, N) step per m."""
    grid_h, grid_w = labels.shape
    tokens = grid_h * grid_w
    index = torch.arange(tokens, device=labels.device)
    row, col = index // grid_w, index % grid_w
    flat = labels.reshape(-1)
    n_max = max(grid_h, grid_w) - 1
    t = torch.linspace(0, 1, n_max + 1, device=labels.device)

    def points(n: int) -> torch.Tensor:  # (M, n, n): rounded coordinate m of the segment from a to b
        a = torch.arange(n, device=labels.device).float()
        return torch.round(a[:, None, None] * (1 - t) + a[None, :, None] * t).long().permute(2, 0, 1)

    point_rows, point_cols = points(grid_h) * grid_w, points(grid_w)
    steps = torch.maximum((row[None, :] - row[:, None]).abs(), (col[None, :] - col[:, None]).abs())
    own = flat[:, None]
    broken = torch.zeros(tokens, tokens, dtype=torch.bool, device=labels.device)
    for m in range(1, n_max + 1):  # m = 0 is token i itself
        cells = (point_rows[m].repeat_interleave(grid_w, 0).repeat_interleave(grid_w, 1)
                 + point_cols[m].repeat(grid_h, grid_h))
        broken |= (flat[cells] != own) & (steps >= m)
    return torch.where(broken, same * torch.exp(-steps.float() / n_max), same)


def row_blur(matrix: torch.Tensor, std: float) -> torch.Tensor:
    """ResCLIP's smoothing of (B, N, N) matrices: each row blurred as a 1-D signal along the token
    index with a normalised Gaussian (length min(N, int(6σ + 1)), made odd; zero padding), then
    ReLU and rows divided by (their sum + 1e-8). Written as one shifted add per kernel tap, in tap
    order, so the sums round as ResCLIP's reference does."""
    tokens = matrix.shape[-1]
    size = min(tokens, int(6 * std + 1))
    size = size if size % 2 == 1 else size + 1
    offsets = torch.arange(size) - size // 2
    kernel = torch.exp(-(offsets ** 2) / (2 * std ** 2))
    kernel = (kernel / kernel.sum()).tolist()
    blurred = torch.zeros_like(matrix)
    for weight, offset in zip(kernel, (offsets).tolist()):
        lo, hi = max(0, -offset), min(tokens, tokens - offset)
        if lo < hi:
            blurred[..., lo:hi] += weight * matrix[..., lo + offset:hi + offset]
    blurred = blurred.relu_()
    return blurred / (blurred.sum(dim=-1, keepdim=True) + 1e-8)
