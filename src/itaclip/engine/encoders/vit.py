"""CLIP's vision transformer as batched steps that the window encoders compose.

Every method runs CLIP's patch embedding and most of its blocks unchanged, then does something of
its own: replaces the last block, keeps some blocks' outputs or attention maps, adds tokens, or
reads a block's values only. :class:`VisionTrunk` offers those steps on the model's own parameters
(no copies), with one place that decides their arithmetic (fp32, an autocast dtype, or int8
dynamic quantisation).

Why the blocks are re-implemented here instead of calling ``blk(x)``: methods need a block's
q/k/v projections, and recomputing them next to ``nn.MultiheadAttention`` would double the work;
one explicit pass computes q, k, v once and runs fused attention (SDPA) on them, which is the same
computation as the module's.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ItaclipError

#: ``on_qkv(block index, q, k, v)``: called with each block's (B, heads, T, head_dim) projections.
QkvHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
#: ``on_output(block index, x)``: called with each block's output tokens (B, T, D); ``x`` is updated in
#: place by the next block, so a hook that keeps it keeps a copy.
OutputHook = Callable[[int, torch.Tensor], None]


def quick_gelu_(x: torch.Tensor) -> torch.Tensor:
    """CLIP's QuickGELU ``x · sigmoid(1.702·x)`` computed in place (same operations, same values):
    the MLP's hidden activations are the encoder's largest tensors."""
    gate = torch.mul(x, 1.702)
    gate.sigmoid_()
    return x.mul_(gate)


def int8_engine() -> str:
    """The quantised engine for the int8 projections: oneDNN where the CPU has AMX tiles (it uses
    them: about 1.6× fbgemm's speed on a Sapphire Rapids core), else torch's default (fbgemm)."""
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    if has_amx and "onednn" in torch.backends.quantized.supported_engines:
        return "onednn"
    return torch.backends.quantized.engine


def execution_linears(linears: nn.Module, int8: bool = False, autocast_dtype: Optional[torch.dtype] = None
                      ) -> nn.Module:
    """The arithmetic of a model's projections: ``linears`` (modules sharing the model's parameters)
    as they are (fp32), as a copy in ``autocast_dtype``, or as an int8 dynamically quantised copy."""
    if autocast_dtype is not None:
        # For use under torch.autocast(dtype=autocast_dtype): a copy of the projections in that
        # dtype, so autocast does not convert every weight again on every call (it caches
        # conversions only for weights that require gradients). Same rounding, same results.
        linears = copy.deepcopy(linears).to(autocast_dtype)
    if int8:
        from torch.ao.quantization import quantize_dynamic

        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = int8_engine()  # the engine that packs the weights runs them
        try:
            with warnings.catch_warnings():  # torch announces a future move of quantised tensors
                warnings.simplefilter("ignore")
                linears = quantize_dynamic(copy.deepcopy(linears), {nn.Linear}, dtype=torch.qint8)
        finally:
            torch.backends.quantized.engine = previous
    return linears


class VisionTrunk(nn.Module):
    """The steps of open_clip's ``VisionTransformer`` (OpenAI layout) on batches of crops.

    Blocks are 0-indexed here (block ``i`` is the paper's layer ``i + 1``). Token tensors are
    (B, T, D) with the class token first and patch tokens row-major after it.
    """

    def __init__(self, visual: nn.Module, int8: bool = False, autocast_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.visual = visual
        self.blocks = visual.transformer.resblocks
        self.depth = len(self.blocks)
        self.patch_size = visual.conv1.kernel_size[0]
        self.width = visual.conv1.weight.shape[0]
        self.heads = self.blocks[-1].attn.num_heads
        self.scale = (self.width // self.heads) ** -0.5
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        # The projections of every block as plain Linear modules sharing the model's parameters,
        # so that one place decides their arithmetic (fp32, or int8 dynamic quantisation).
        self.linears = execution_linears(nn.ModuleList(_block_linears(block) for block in self.blocks),
                                         int8, autocast_dtype)

    def grid(self, images: torch.Tensor) -> tuple[int, int]:
        """(gh, gw) patch grid of (…, H, W) crops; leftover pixels beyond whole patches are dropped."""
        grid_h, grid_w = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        if grid_h < 1 or grid_w < 1:
            raise ItaclipError(f"crop {tuple(images.shape[-2:])} is smaller than one {self.patch_size}px patch")
        return grid_h, grid_w

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

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 3, H, W) normalised crops → tokens (B, 1 + gh·gw, D) after ``ln_pre``, and (gh, gw)."""
        visual = self.visual
        grid_h, grid_w = self.grid(images)
        dtype = visual.conv1.weight.dtype
        x = visual.conv1(images.to(dtype)).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(images.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(grid_h, grid_w).to(x.dtype)
        return visual.ln_pre(x), (grid_h, grid_w)

    def qkv(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v of block ``index`` for tokens x (B, T, D): (B, heads, T, head_dim) views of one
        projection (no copies; SDPA and matmul take the strided views)."""
        batch, tokens, width = x.shape
        qkv = self.linears[index]["qkv"](self.blocks[index].ln_1(x))
        return qkv.view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)

    def out(self, index: int, mixed: torch.Tensor) -> torch.Tensor:
        """Block ``index``'s output projection of per-head values (B, heads, T, head_dim) → (B, T, D)."""
        batch, _, tokens, _ = mixed.shape
        return self.linears[index]["out"](mixed.transpose(1, 2).reshape(batch, tokens, self.width))

    def mlp(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The block's MLP on ln_2(x), with the activation applied in place."""
        from open_clip.transformer import QuickGELU  # here, not at import: loaded with the model anyway

        mlp = self.linears[index]["mlp"]
        hidden = mlp.c_fc(self.blocks[index].ln_2(x))
        hidden = quick_gelu_(hidden) if isinstance(mlp.gelu, QuickGELU) else mlp.gelu(hidden)
        return mlp.c_proj(hidden)

    def attention_weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """A block's own attention map ``softmax((q·s) kᵀ)`` (…, T, T) from its (…, T, head_dim) q and k —
        what SDPA applies without returning it (methods that read a block's map compute it here)."""
        return torch.matmul(q * self.scale, k.transpose(-1, -2)).softmax(dim=-1)

    def run(self, x: torch.Tensor, blocks: Iterable[int], on_qkv: Optional[QkvHook] = None,
            on_output: Optional[OutputHook] = None) -> torch.Tensor:
        """CLIP's own blocks ``blocks`` (0-indexed) on tokens x, updated in place and returned."""
        for index in blocks:
            q, k, v = self.qkv(index, x)
            if on_qkv is not None:
                on_qkv(index, q, k, v)
            # SDPA's CPU and GPU kernels return (B, heads, T, hd) as a transposed (B, T, heads, hd)
            # tensor, so merging the heads is a view; reshape copies only if a backend differs.
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
            # Residual adds in place into x: it stays fp32 under autocast, and no new (B, T, D)
            # tensor is allocated per step (nothing else holds x: ln_1/ln_2 return new tensors).
            x.add_(self.linears[index]["out"](out))
            x.add_(self.mlp(index, x))
            if on_output is not None:
                on_output(index, x)
        return x

    def body_flops(self, grid_h: int, grid_w: int) -> int:
        """FLOPs (multiply-add = 2) of the steps every encoder shares on one (gh·p, gw·p) crop: the patch
        embedding 2·N·3p²·D, blocks 1 … L-1 unchanged (2·T·12·D² projections and MLP, 4·T²·D attention
        matmuls each, T = 1 + N) and the projection head 2·N·D·E; the last block is the method's."""
        n = grid_h * grid_w
        tokens = 1 + n
        width, patch = self.width, self.patch_size
        flops = 2 * n * 3 * patch * patch * width
        flops += (self.depth - 1) * (2 * tokens * 12 * width * width + 4 * tokens * tokens * width)
        return flops + 2 * n * width * self.out_dim

    def head(self, patches: torch.Tensor) -> torch.Tensor:
        """``ln_post`` and the projection of (B, N, D) tokens → (B, N, E) L2-normalised features."""
        return F.normalize(self.visual.ln_post(patches) @ self.visual.proj, dim=-1)

    @property
    def out_dim(self) -> int:
        return self.visual.proj.shape[1] if self.visual.proj is not None else self.width


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
