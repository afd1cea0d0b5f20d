"""ITACLIP's dense visual encoder: a small adapter over open_clip's ``VisionTransformer`` (SPEC §1).

Blocks 1…L-1 run unchanged while self-self attention maps are recorded at the intermediate
layers; the last block uses the fused map ``Â = ½·A_L + ½·mean(A_l')`` on its own values, keeps
the residual and (by default) drops its MLP. Output: L2-normalised patch features.

Why the blocks are re-implemented here instead of calling ``blk(x)``: the recorded layers need
their q/k projections, and recomputing them next to ``nn.MultiheadAttention`` would double the
work; one explicit pass computes q, k, v once and runs fused attention (SDPA) on them, which is
the same computation as the module's.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ItaclipError


def self_self_attention(terms: Sequence[str], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        scale: float) -> torch.Tensor:
    """Σ over ``terms`` of softmax attention maps; q, k, v: (B·heads, T, head_dim) → (B·heads, T, T).

    ``q-q`` is softmax(q qᵀ·s) (likewise k-k, v-v); ``q-k`` is the original softmax((q·s) kᵀ).
    """
    total: Optional[torch.Tensor] = None
    for term in terms:
        if term == "q-k":
            logits = torch.bmm(q * scale, k.transpose(1, 2))
        else:
            a = {"q-q": q, "k-k": k, "v-v": v}[term]
            logits = torch.bmm(a, a.transpose(1, 2)) * scale
        attn = logits.softmax(dim=-1)
        total = attn if total is None else total.add_(attn)
    assert total is not None
    return total


class DenseEncoder(nn.Module):
    """Patch features of crops: (B, 3, H, W) normalised images → (B, gh·gw, E) unit vectors."""

    def __init__(self, visual: nn.Module, attention: Sequence[str] = ("q-q", "k-k"),
                 intermediate_layers: Sequence[int] = (7, 8, 10), remove_ffn: bool = True,
                 int8: bool = False):
        super().__init__()
        self.visual = visual
        self.blocks = visual.transformer.resblocks
        depth = len(self.blocks)
        bad = [layer for layer in intermediate_layers if not 1 <= layer < depth]
        if bad:
            raise ItaclipError(
                f"intermediate layers {list(intermediate_layers)} are invalid for a {depth}-block model: "
                f"use layers 1..{depth - 1}"
            )
        self.attention = tuple(attention)
        self.recorded = frozenset(layer - 1 for layer in intermediate_layers)  # 0-indexed block ids
        self.remove_ffn = remove_ffn
        self.patch_size = visual.conv1.kernel_size[0]
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        # The projections of every block as plain Linear modules sharing the model's parameters,
        # so that one place decides their arithmetic (fp32, or int8 dynamic quantisation).
        self.linears = nn.ModuleList(_block_linears(block) for block in self.blocks)
        if int8:
            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():  # torch announces a future move of quantised tensors
                warnings.simplefilter("ignore")
                self.linears = quantize_dynamic(copy.deepcopy(self.linears), {nn.Linear}, dtype=torch.qint8)

    def positional_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """(1 + gh·gw, D) table; resampled with the '+0.1' bicubic scale factor when the grid differs."""
        table = self.visual.positional_embedding
        n = table.shape[0] - 1
        if grid_h * grid_w == n:
            return table
        key = (grid_h, grid_w)
        if key not in self._pos_cache:
            side = int(math.sqrt(n))
            patch = table[1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
            patch = F.interpolate(
                patch, scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side),
                mode="bicubic", align_corners=False,
            )
            patch = patch.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1).to(table.dtype)
            self._pos_cache[key] = torch.cat([table[:1], patch], dim=0).detach()
        return self._pos_cache[key]

    def _qkv(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of block ``index`` for tokens x (B, T, D), each (B·heads, T, head_dim)."""
        block = self.blocks[index]
        batch, tokens, width = x.shape
        heads = block.attn.num_heads
        qkv = self.linears[index]["qkv"](block.ln_1(x))
        qkv = qkv.view(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        q, k, v = (t.reshape(batch * heads, tokens, width // heads) for t in qkv)
        return q, k, v

    @staticmethod
    def _merge_heads(out: torch.Tensor, batch: int) -> torch.Tensor:
        bh, tokens, head_dim = out.shape
        heads = bh // batch
        return out.view(batch, heads, tokens, head_dim).transpose(1, 2).reshape(batch, tokens, heads * head_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Returns (features (B, gh·gw, E), (gh, gw)); features are L2-normalised per token."""
        visual = self.visual
        batch = images.shape[0]
        grid_h, grid_w = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        if grid_h < 1 or grid_w < 1:
            raise ItaclipError(f"crop {tuple(images.shape[-2:])} is smaller than one {self.patch_size}px patch")
        dtype = visual.conv1.weight.dtype
        x = visual.conv1(images.to(dtype)).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(batch, 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(grid_h, grid_w).to(x.dtype)
        x = visual.ln_pre(x)

        *body, last = self.blocks
        head_dim = x.shape[-1] // last.attn.num_heads
        scale = head_dim ** -0.5
        recorded_sum: Optional[torch.Tensor] = None
        for index, block in enumerate(body):
            linears = self.linears[index]
            q, k, v = self._qkv(index, x)
            if index in self.recorded:
                attn = self_self_attention(self.attention, q, k, v, scale)
                recorded_sum = attn if recorded_sum is None else recorded_sum.add_(attn)
            heads = block.attn.num_heads
            out = F.scaled_dot_product_attention(
                q.view(batch, heads, -1, head_dim), k.view(batch, heads, -1, head_dim),
                v.view(batch, heads, -1, head_dim),
            )
            x = x + linears["out"](out.transpose(1, 2).reshape(x.shape))
            x = x + linears["mlp"](block.ln_2(x))

        linears = self.linears[-1]
        q, k, v = self._qkv(len(body), x)
        fused = self_self_attention(self.attention, q, k, v, scale)
        if recorded_sum is not None:
            fused = 0.5 * fused + 0.5 * (recorded_sum / len(self.recorded))
        x = x + linears["out"](self._merge_heads(torch.bmm(fused, v), batch))
        if not self.remove_ffn:
            x = x + linears["mlp"](last.ln_2(x))

        features = visual.ln_post(x[:, 1:]) @ visual.proj
        return F.normalize(features, dim=-1), (grid_h, grid_w)


def _linear_sharing(weight: nn.Parameter, bias: Optional[nn.Parameter]) -> nn.Linear:
    """An ``nn.Linear`` whose parameters are the given tensors (no copy)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = weight
    layer.bias = bias
    return layer


def _block_linears(block: nn.Module) -> nn.ModuleDict:
    attn = block.attn
    return nn.ModuleDict({
        "qkv": _linear_sharing(attn.in_proj_weight, attn.in_proj_bias),
        "out": _linear_sharing(attn.out_proj.weight, attn.out_proj.bias),
        "mlp": block.mlp,
    })
