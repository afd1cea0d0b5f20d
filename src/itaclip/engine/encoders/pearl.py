"""PEARL's window encoder: CLIP's blocks 1 … L-1 unchanged, then Procrustes-aligned attention.

In the last block (no residual, no MLP) each head's keys are rotated towards its queries by the
orthogonal factor of ``k_cᵀ q_c`` (keys and queries centred on their norm-weighted means, the class
token weighing nothing), approximated as PEARL's code does by exactly five coupled Newton–Schulz
steps (github.com/PGSmall/PEARL @ c26062b, ``pearl/attn.py``); a centred k-k term is added with
weight ``kk_weight``. ResCLIP's RCS and SFR apply to these logits like to any last block's.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from . import WindowContext
from .last_block import Feedback
from .vit import VisionTrunk

#: Newton–Schulz steps of PEARL's polar factor (fixed in its code: an approximation, not converged).
POLAR_STEPS = 5
POLAR_EPS = 1e-6


def polar_factor(m: torch.Tensor, steps: int = POLAR_STEPS, eps: float = POLAR_EPS) -> torch.Tensor:
    """PEARL's approximate orthogonal polar factor of (…, d, d) matrices M: ``steps`` coupled
    Newton–Schulz iterations for (MᵀM)^-½ on MᵀM / ‖MᵀM‖_F + eps·I, then M·Z / √‖MᵀM‖_F."""
    eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
    a = m.transpose(-1, -2) @ m
    norm = torch.clamp(a.flatten(-2).norm(dim=-1), min=eps)[..., None, None]
    y = a / norm + eps * eye
    z = eye.expand_as(a)
    for _ in range(steps):
        t = 0.5 * (3.0 * eye - z @ y)
        y = y @ t
        z = t @ z
    return m @ (z / torch.sqrt(norm))


def procrustes_logits(q: torch.Tensor, k: torch.Tensor, scale: float, kk_weight: float) -> torch.Tensor:
    """PEARL's attention logits (B, heads, T, T) from (B, heads, T, head_dim) q and k (class token first):
    ``(s·q)(k R)ᵀ + kk_weight·(k_c k_cᵀ)·s`` with R the polar factor of ``k_cᵀ q_c``."""
    weight = q.norm(dim=-1)
    weight[..., 0] = 0.0  # the class token does not move the centroids
    weight = weight / (weight.sum(dim=-1, keepdim=True) + 1e-6)
    q_centred = q - (weight[..., None] * q).sum(dim=-2, keepdim=True)
    k_centred = k - (weight[..., None] * k).sum(dim=-2, keepdim=True)
    rotation = polar_factor(k_centred.transpose(-1, -2) @ q_centred)
    logits = (q * scale) @ (k @ rotation).transpose(-1, -2)  # the uncentred keys are rotated
    return logits + kk_weight * ((k_centred @ k_centred.transpose(-1, -2)) * scale)


class ProcrustesEncoder(nn.Module):
    """Patch features of crops: (B, 3, H, W) normalised images → (B, gh·gw, E) unit vectors."""

    def __init__(self, visual: nn.Module, kk_weight: float = 0.08, int8: bool = False,
                 autocast_dtype: Optional[torch.dtype] = None, *, rcs_weights: Optional[Sequence[float]] = None,
                 feedback: Optional[dict] = None):
        super().__init__()
        self.trunk = VisionTrunk(visual, int8=int8, autocast_dtype=autocast_dtype)
        self.kk_weight = kk_weight
        self.patch_size = self.trunk.patch_size
        self.feedback = Feedback(self.trunk, rcs_weights, feedback)

    def flops(self, grid_h: int, grid_w: int) -> int:
        """FLOPs of one pass over one crop (multiply-add = 2): CLIP's blocks 1 … L-1, the last
        block's projections (no MLP), its logits (q·(kR)ᵀ, k_c k_cᵀ), A·v and the projection head; the
        64×64 polar factors and the feedback's extra pass are counted like the last-block family's."""
        width = self.trunk.width
        n = grid_h * grid_w
        tokens = 1 + n
        flops = self.trunk.body_flops(grid_h, grid_w)
        flops += 2 * tokens * 4 * width * width + 3 * 2 * tokens * tokens * width
        flops += len(self.feedback.blocks) * 2 * tokens * tokens * width
        if self.feedback.semantic is not None:
            flops += 2 * tokens * width * width + 2 * tokens * tokens * width + 2 * n * width * self.trunk.out_dim
        return flops

    def forward(self, images: torch.Tensor, context: Optional[WindowContext] = None
                ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Returns (features (B, gh·gw, E), (gh, gw)), L2-normalised per token."""
        trunk, feedback = self.trunk, self.feedback
        x, grid = trunk.embed(images)
        last = trunk.depth - 1
        x = trunk.run(x, range(last), on_qkv=feedback.record if feedback.blocks else None)
        q, k, v = trunk.qkv(last, x)
        with torch.autocast(x.device.type, enabled=False):  # PEARL computes its alignment in float32
            logits = procrustes_logits(q.float(), k.float(), trunk.scale, self.kk_weight)
        rcs = feedback.residual_map()

        def last_block(mix: Optional[Callable]) -> torch.Tensor:
            mixed = logits if mix is None else mix(logits.clone())
            weights = feedback.mix_residual(mixed.softmax(dim=-1), rcs)
            return trunk.head(trunk.out(last, torch.matmul(weights.to(v.dtype), v))[:, 1:])

        return feedback.features(last_block, images, context, grid), grid
