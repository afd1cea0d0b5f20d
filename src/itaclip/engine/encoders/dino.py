"""DINO's forward on batches of windows: the guide of ProxyCLIP and CorrCLIP.

The library's own pass over a DINO ViT's parameters (:mod:`itaclip.engine.weights.dino` loads them
into timm's ``VisionTransformer``, used here as a container): DINO's positional rule for other input
sizes (the "+0.1" scale factor, which timm's resampling does not reproduce), the two outputs the
methods read — the final normed patch tokens (ProxyCLIP) and the last block's q + k (CorrCLIP) —
and the same arithmetic modes as CLIP's trunk (fp32, an autocast dtype, int8 dynamic quantisation
of the projections), decided in one place (:func:`~itaclip.engine.encoders.vit.execution_linears`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .vit import execution_linears

#: CLIP's normalisation on the 0–1 scale (s, m) and ImageNet's (μ, σ): both methods feed DINO the
#: CLIP-normalised window re-normalised as ((x·s + m) − μ) / σ with these literal constants.
CLIP_UNIT_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_UNIT_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Head width of every DINO release (the head count is not stored in the weights).
HEAD_DIM = 64


class DinoTrunk(nn.Module):
    """A DINO ViT on (B, 3, h, w) CLIP-normalised windows; token tensors are (B, 1 + fh·fw, D′)
    with the class token first and patch tokens row-major, (fh, fw) = (h // p′, w // p′)."""

    def __init__(self, model: nn.Module, int8: bool = False, autocast_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.model = model
        self.blocks = model.blocks
        self.depth = len(self.blocks)
        self.patch_size = model.patch_embed.proj.kernel_size[0]
        self.width = model.cls_token.shape[-1]
        self.heads = max(1, self.width // HEAD_DIM)
        self.linears = execution_linears(nn.ModuleList(
            nn.ModuleDict({"qkv": b.attn.qkv, "proj": b.attn.proj, "fc1": b.mlp.fc1, "fc2": b.mlp.fc2})
            for b in self.blocks), int8, autocast_dtype)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    def dino_input(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised windows → DINO's input, per channel ((x·s + m) − μ) / σ in float32."""
        def column(values) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)

        unit = images.float() * column(CLIP_UNIT_STD) + column(CLIP_UNIT_MEAN)
        return (unit - column(IMAGENET_MEAN)) / column(IMAGENET_STD)

    def positional_embedding(self, height: int, width: int) -> torch.Tensor:
        """(1 + fh·fw, D′) table for an input of height × width pixels, by DINO's rule: the stored
        table when the token count matches and the input is square; otherwise its patch part
        resampled bicubically with the scale factor ((fh + 0.1)/n, (fw + 0.1)/n) (not resized to
        (fh, fw): the factor itself maps the coordinates), the class entry kept."""
        table = self.model.pos_embed[0]
        n = int(round((table.shape[0] - 1) ** 0.5))
        rows, cols = height // self.patch_size, width // self.patch_size
        if rows * cols == n * n and height == width:
            return table
        key = (height, width)
        if key not in self._pos_cache:
            patch = table[1:].float().reshape(1, n, n, -1).permute(0, 3, 1, 2)
            patch = F.interpolate(patch, scale_factor=((rows + 0.1) / n, (cols + 0.1) / n), mode="bicubic",
                                  align_corners=False)
            patch = patch.permute(0, 2, 3, 1).reshape(rows * cols, -1)
            self._pos_cache[key] = torch.cat([table[:1], patch.to(table.dtype)]).detach()
        return self._pos_cache[key]

    def grid(self, images: torch.Tensor) -> tuple[int, int]:
        return images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) CLIP-normalised windows → tokens (B, 1 + fh·fw, D′) (leftover pixels dropped)."""
        return self.embed_dino_input(self.dino_input(images))

    def embed_dino_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) inputs already in DINO's normalisation → tokens (B, 1 + fh·fw, D′)."""
        x = self.model.patch_embed.proj(inputs).flatten(2).transpose(1, 2)
        cls = self.model.cls_token.to(x.dtype).expand(x.shape[0], 1, -1)
        table = self.positional_embedding(inputs.shape[-2], inputs.shape[-1])
        return torch.cat([cls, x], dim=1) + table.to(x.dtype)

    def qkv(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index``'s projection of norm1(x): (B, T, 3D′), channels [q | k | v]."""
        return self.linears[index]["qkv"](self.blocks[index].norm1(x))

    def block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """One pre-norm block (softmax attention over heads of 64 channels, exact GELU), x updated in place."""
        batch, tokens, width = x.shape
        q, k, v = self.qkv(index, x).view(batch, tokens, 3, self.heads, width // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, width)
        x.add_(self.linears[index]["proj"](mixed))
        hidden = F.gelu(self.linears[index]["fc1"](self.blocks[index].norm2(x)))
        return x.add_(self.linears[index]["fc2"](hidden))

    def final_features(self, images: torch.Tensor) -> torch.Tensor:
        """The final normed patch tokens (B, fh·fw, D′): every block, then ``norm`` (ProxyCLIP's guide)."""
        x = self.embed(images)
        for index in range(self.depth):
            x = self.block(index, x)
        return self.model.norm(x[:, 1:])

    def last_query_key(self, images: torch.Tensor) -> torch.Tensor:
        """q + k of the last block for the patch tokens (B, fh·fw, D′), all heads together, from the
        tokens entering that block (CorrCLIP's guide; the rest of the last block is not needed)."""
        x = self.embed(images)
        for index in range(self.depth - 1):
            x = self.block(index, x)
        qkv = self.qkv(self.depth - 1, x[:, 1:])
        return qkv[..., :self.width] + qkv[..., self.width:2 * self.width]
