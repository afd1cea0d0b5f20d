"""The dense visual encoder: a small adapter over open_clip's ``VisionTransformer`` (SPEC §1).

Blocks 1…L-1 run unchanged (ITACLIP records self-self attention maps at its intermediate layers
meanwhile); only the last block differs between methods (itaclip.engine.methods): its attention weights,
whether its residual and MLP are kept. ITACLIP's last block uses the fused map
``Â = ½·A_L + ½·mean(A_l')`` on its own values, keeps the residual and (by default) drops its MLP.
Output: L2-normalised patch features.

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
from open_clip.transformer import QuickGELU
from torch import nn

from .config import ATTENTION_TERMS, IDENTITY
from .errors import ItaclipError


def self_self_attention(terms: Sequence[str], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        scale: float, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Σ over ``terms`` of softmax attention maps; q, k, v: (..., T, head_dim) → (..., T, T).

    ``q-q`` is softmax(q qᵀ·s) (likewise k-k, v-v); ``q-k`` is the original softmax((q·s) kᵀ).
    ``bias`` (T, T), if given, is added to every term's scaled logits before its softmax.
    """
    total: Optional[torch.Tensor] = None
    for term in terms:
        if term == "q-k":
            logits = torch.matmul(q * scale, k.transpose(-1, -2))
        else:
            a = {"q-q": q, "k-k": k, "v-v": v}[term].contiguous()
            logits = torch.matmul(a, a.transpose(-1, -2)).mul_(scale)
        if bias is not None:
            logits.add_(bias)
        attn = logits.softmax(dim=-1)
        total = attn if total is None else total.add_(attn)
    assert total is not None
    return total


def quick_gelu_(x: torch.Tensor) -> torch.Tensor:
    """CLIP's QuickGELU ``x · sigmoid(1.702·x)`` computed in place (same operations, same values):
    the MLP's hidden activations are the encoder's largest tensors."""
    gate = torch.mul(x, 1.702)
    gate.sigmoid_()
    return x.mul_(gate)


def neighbourhood_bias(grid_h: int, grid_w: int, std: float) -> torch.Tensor:
    """NACLIP's Ω for a grid_h×grid_w patch grid: (1 + N, 1 + N), N = grid_h·grid_w.

    Ω[t, t'] = exp(-((r-r')² + (c-c')²) / (2σ²)) for patch tokens t = (r, c), t' = (r', c') in
    row-major order (peak 1, no normalisation); zero row and column for the class token. The
    values are those of the authors' Gaussian window (float32 ``linspace`` in units of 1/(σ√2),
    squared, summed, exponentiated), gathered at the tokens' offsets instead of convolving one-hot
    maps with it.
    """
    c = 1.0 / (std * math.sqrt(2.0))
    axes = [torch.linspace(-(n - 1) * c, (n - 1) * c, 2 * n - 1, dtype=torch.float32) for n in (grid_h, grid_w)]
    window = torch.exp(-(axes[0][:, None] ** 2 + axes[1][None, :] ** 2))  # (2·gh-1, 2·gw-1), peak 1
    rows = torch.arange(grid_h).repeat_interleave(grid_w)
    cols = torch.arange(grid_w).repeat(grid_h)
    patch = window[rows[:, None] - rows[None, :] + grid_h - 1, cols[:, None] - cols[None, :] + grid_w - 1]
    return F.pad(patch, (1, 0, 1, 0))


def int8_engine() -> str:
    """The quantised engine for the int8 projections: oneDNN where the CPU has AMX tiles (it uses
    them: about 1.6× fbgemm's speed on a Sapphire Rapids core), else torch's default (fbgemm)."""
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    if has_amx and "onednn" in torch.backends.quantized.supported_engines:
        return "onednn"
    return torch.backends.quantized.engine


class DenseEncoder(nn.Module):
    """Patch features of crops: (B, 3, H, W) normalised images → (B, gh·gw, E) unit vectors."""

    def __init__(self, visual: nn.Module, attention: Sequence[str] = ("q-q", "k-k"),
                 intermediate_layers: Sequence[int] = (7, 8, 10), remove_ffn: bool = True,
                 int8: bool = False, autocast_dtype: Optional[torch.dtype] = None, *,
                 residual: bool = True, gaussian_std: Optional[float] = None):
        """``attention``: the last block's terms (or ``(IDENTITY,)``); ``intermediate_layers``:
        blocks whose maps are fused into it (ITACLIP); ``remove_ffn``/``residual``: drop the last
        block's MLP / its residual connection; ``gaussian_std``: add NACLIP's neighbourhood bias Ω
        with this σ (patches) to the last block's attention logits."""
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
        self.residual = residual
        self.gaussian_std = gaussian_std
        self._bias_cache: dict[tuple[int, int], torch.Tensor] = {}
        self.patch_size = visual.conv1.kernel_size[0]
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        # The projections of every block as plain Linear modules sharing the model's parameters,
        # so that one place decides their arithmetic (fp32, or int8 dynamic quantisation).
        self.linears = nn.ModuleList(_block_linears(block) for block in self.blocks)
        if autocast_dtype is not None:
            # For use under torch.autocast(dtype=autocast_dtype): a copy of the projections in that
            # dtype, so autocast does not convert every weight again on every call (it caches
            # conversions only for weights that require gradients). Same rounding, same results.
            self.linears = copy.deepcopy(self.linears).to(autocast_dtype)
        if int8:
            from torch.ao.quantization import quantize_dynamic

            previous = torch.backends.quantized.engine
            torch.backends.quantized.engine = int8_engine()  # the engine that packs the weights runs them
            try:
                with warnings.catch_warnings():  # torch announces a future move of quantised tensors
                    warnings.simplefilter("ignore")
                    self.linears = quantize_dynamic(copy.deepcopy(self.linears), {nn.Linear}, dtype=torch.qint8)
            finally:
                torch.backends.quantized.engine = previous

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

    def flops(self, grid_h: int, grid_w: int) -> int:
        """FLOPs of one pass over one (grid_h·p, grid_w·p) crop, counted from the shapes
        (multiply-add = 2 FLOPs). For T = 1 + gh·gw tokens, width D, L blocks, output dim E, n
        attention terms and R recorded layers:

        * patch embedding: 2·(T-1)·(3·p²)·D;
        * linear layers: 2·T·12·D² per block (qkv 3D², out D², MLP 8D²), less 2·T·8·D² when the
          last block's MLP is dropped;
        * attention matmuls: 4·T²·D per block 1…L-1 (q·kᵀ and A·v over all heads);
        * self-self maps: 2·T²·D per term for each recorded block and the last block, plus
          2·T²·D for the last block's Â·v (no maps, no Â·v when the last block has no attention
          term of :data:`~itaclip.engine.config.ATTENTION_TERMS`);
        * projection: 2·(T-1)·D·E.

        LayerNorms, softmaxes, activations and additions are not counted. ViT-B/16 at 224 px with
        the paper's settings: 33.8 GFLOP per pass (35.3 for the unmodified ViT).
        """
        visual = self.visual
        blocks = len(self.blocks)
        width = visual.conv1.weight.shape[0]
        patch = self.patch_size
        out_dim = visual.proj.shape[1] if visual.proj is not None else width
        n = grid_h * grid_w
        tokens = 1 + n
        terms = sum(term in ATTENTION_TERMS for term in self.attention)  # softmax maps computed
        flops = 2 * n * 3 * patch * patch * width
        flops += blocks * 2 * tokens * 12 * width * width
        if self.remove_ffn:
            flops -= 2 * tokens * 8 * width * width
        flops += (blocks - 1) * 4 * tokens * tokens * width
        flops += (len(self.recorded) + 1) * terms * 2 * tokens * tokens * width
        if terms:
            flops += 2 * tokens * tokens * width  # Â·v
        flops += 2 * n * width * out_dim
        return flops

    def attention_bias(self, grid_h: int, grid_w: int, device: torch.device) -> Optional[torch.Tensor]:
        """The last block's Ω for this grid (computed once per grid size), or None."""
        if self.gaussian_std is None:
            return None
        key = (grid_h, grid_w)
        if key not in self._bias_cache:
            self._bias_cache[key] = neighbourhood_bias(grid_h, grid_w, self.gaussian_std).to(device)
        return self._bias_cache[key]

    def _qkv(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v of block ``index`` for tokens x (B, T, D): (B, heads, T, head_dim) views of one
        projection (no copies; SDPA and matmul take the strided views)."""
        block = self.blocks[index]
        batch, tokens, width = x.shape
        heads = block.attn.num_heads
        qkv = self.linears[index]["qkv"](block.ln_1(x))
        return qkv.view(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)

    def _mlp(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The block's MLP on ln_2(x), with the activation applied in place."""
        mlp = self.linears[index]["mlp"]
        hidden = mlp.c_fc(self.blocks[index].ln_2(x))
        hidden = quick_gelu_(hidden) if isinstance(mlp.gelu, QuickGELU) else mlp.gelu(hidden)
        return mlp.c_proj(hidden)

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
        scale = (x.shape[-1] // last.attn.num_heads) ** -0.5
        recorded_sum: Optional[torch.Tensor] = None
        for index in range(len(body)):
            q, k, v = self._qkv(index, x)
            if index in self.recorded:
                attn = self_self_attention(self.attention, q, k, v, scale)
                recorded_sum = attn if recorded_sum is None else recorded_sum.add_(attn)
            # SDPA's CPU and GPU kernels return (B, heads, T, hd) as a transposed (B, T, heads, hd)
            # tensor, so merging the heads is a view; reshape copies only if a backend differs.
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
            # Residual adds in place into x: it stays fp32 under autocast, and no new (B, T, D)
            # tensor is allocated per step (nothing else holds x: ln_1/ln_2 return new tensors).
            x.add_(self.linears[index]["out"](out))
            x.add_(self._mlp(index, x))

        q, k, v = self._qkv(len(body), x)
        if self.attention == (IDENTITY,):
            mixed = v
        else:
            fused = self_self_attention(self.attention, q, k, v, scale,
                                        self.attention_bias(grid_h, grid_w, x.device))
            if recorded_sum is not None:
                fused = fused.mul_(0.5).add_(recorded_sum.div_(len(self.recorded)), alpha=0.5)
            mixed = torch.matmul(fused, v)
        attended = self.linears[-1]["out"](mixed.transpose(1, 2).reshape(x.shape))
        x = x.add_(attended) if self.residual else attended
        if not self.remove_ffn:
            x.add_(self._mlp(len(body), x))

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
