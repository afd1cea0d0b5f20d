"""PEARL's text-aware Laplacian propagation (TLP) of the query similarity maps, for every method.

The (Q, H, W) maps (cosines, before the logit scale) and the image are average-pooled to about
``grid`` cells per side; on that grid the maps are smoothed by solving ``(C + L) X = C·ℓ`` with 25
conjugate-gradient steps, where C trusts confident pixels (softmax of the raw cosines, boosted where
a query agrees with itself) and L is a graph Laplacian whose edge weights fall across image edges and
rise where neighbouring pixels prefer the same query; X is resized back. As PEARL's code
(github.com/PGSmall/PEARL @ c26062b) runs it: the text affinity enters through its diagonal only, one
system is solved over all queries at once, and the iteration count is fixed (no early stop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: PEARL's constants: text temperature, diagonal boost, edge sharpness, CG steps, data-weight floor.
TEXT_TEMPERATURE, DIAGONAL_BOOST, EDGE_SHARPNESS, CG_STEPS, MIN_CONFIDENCE = 0.5, 10.0, 5.0, 25, 0.05


def text_agreement(text: torch.Tensor) -> torch.Tensor:
    """(Q, 1, 1) diagonal of PEARL's text affinity: rows of softmax(T Tᵀ / 0.5) + 10·I normalised to
    sum 1 (+1e-6), T the (Q, E) query features re-normalised. Only the diagonal is ever used."""
    unit = F.normalize(text, dim=-1)
    affinity = torch.softmax((unit @ unit.T) / TEXT_TEMPERATURE, dim=1)
    affinity = affinity + DIAGONAL_BOOST * torch.eye(affinity.shape[0], device=text.device, dtype=affinity.dtype)
    affinity = affinity / (affinity.sum(dim=1, keepdim=True) + 1e-6)
    return torch.diagonal(affinity)[:, None, None]


def _laplacian(x: torch.Tensor, w_h: torch.Tensor, w_v: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    diff_h = w_h * (x[:, :, 1:] - x[:, :, :-1])
    out[:, :, 1:] += diff_h
    out[:, :, :-1] -= diff_h
    diff_v = w_v * (x[:, 1:, :] - x[:, :-1, :])
    out[:, 1:, :] += diff_v
    out[:, :-1, :] -= diff_v
    return out


def tlp(logits: torch.Tensor, guide: torch.Tensor, text: torch.Tensor, grid: int = 80) -> torch.Tensor:
    """Propagated (Q, H, W) logits from (Q, H, W) ``logits``, the (3, H, W) normalised image ``guide``
    at the same size and the (Q, E) query features; float32 throughout."""
    _, height, width = logits.shape
    diag = text_agreement(text.float())
    sh, sw = max(1, round(height / float(grid))), max(1, round(width / float(grid)))  # Python's round: half to even
    pooled = sh > 1 or sw > 1
    image, start = guide.float(), logits.float()
    if pooled:
        image, start = _block_mean(image, sh, sw), _block_mean(start, sh, sw)

    p = torch.softmax(start, dim=0)
    confidence = p.amax(dim=0)
    agree = torch.clamp((p * (diag * p)).sum(dim=0), 0.0, 1.0)
    data_weight = torch.clamp(confidence, min=MIN_CONFIDENCE) ** 2 * (1.0 + agree)

    grey = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    gx = torch.abs(grey[:, 1:] - grey[:, :-1])
    gy = torch.abs(grey[1:, :] - grey[:-1, :])
    gx = gx / (gx.mean() + 1e-6)
    gy = gy / (gy.mean() + 1e-6)
    gate_h = (p[:, :, 1:] * (diag * p[:, :, :-1])).sum(dim=0)
    gate_v = (p[:, 1:, :] * (diag * p[:, :-1, :])).sum(dim=0)
    w_h = torch.clamp(torch.exp(-EDGE_SHARPNESS * gx) * (1.0 + torch.clamp(gate_h, 0.0, 1.0)), 0.0, 1.0)
    w_v = torch.clamp(torch.exp(-EDGE_SHARPNESS * gy) * (1.0 + torch.clamp(gate_v, 0.0, 1.0)), 0.0, 1.0)

    def system(x: torch.Tensor) -> torch.Tensor:
        return data_weight * x + 1 * _laplacian(x, w_h, w_v)

    # Conjugate gradient, one system over every query and pixel (inner products sum over both).
    rhs = data_weight * start
    x = start.clone()
    residual = rhs - system(x)
    direction = residual.clone()
    rho = (residual * residual).sum()
    for _ in range(CG_STEPS):
        a_dir = system(direction)
        alpha = rho / ((direction * a_dir).sum() + 1e-12)
        x = x + alpha * direction
        residual = residual - alpha * a_dir
        rho_new = (residual * residual).sum()
        direction = residual + (rho_new / (rho + 1e-12)) * direction
        rho = rho_new
    if pooled:
        x = F.interpolate(x[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return x.to(logits.dtype)


def _block_mean(x: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """Average pooling of (C, H, W) over non-overlapping sh×sw blocks, trailing rows and columns
    dropped (``avg_pool2d``'s floor mode), each block's mean taken over its values in row order."""
    channels, height, width = x.shape
    rows, cols = height // sh, width // sw
    blocks = x[:, :rows * sh, :cols * sw].reshape(channels, rows, sh, cols, sw).permute(0, 1, 3, 2, 4)
    return blocks.reshape(channels, rows, cols, sh * sw).mean(dim=-1)
