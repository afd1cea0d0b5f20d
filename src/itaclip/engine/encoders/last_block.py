"""The last-block family of window encoders (ITACLIP, CLIP, MaskCLIP, SCLIP, ClearCLIP, NACLIP, ResCLIP).

Blocks 1…L-1 run unchanged (ITACLIP records self-self attention maps at its intermediate layers
meanwhile); only the last block differs between these methods (itaclip.engine.methods): its
attention weights, whether its residual and MLP are kept. ITACLIP's last block uses the fused map
``Â = ½·A_L + ½·mean(A_l')`` on its own values, keeps the residual and (by default) drops its MLP.
ResCLIP's residual attention (RCS) and semantic feedback (SFR) apply to any of these last blocks
with attention logits (:class:`Feedback`; ResCLIP itself is NACLIP's block with both).
Output: L2-normalised patch features.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ATTENTION_TERMS, IDENTITY
from ..errors import ItaclipError
from ..refine.sfr import SemanticFeedback
from . import WindowContext
from .vit import VisionTrunk


def self_self_attention(terms: Sequence[str], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        scale: float, bias: Optional[torch.Tensor] = None,
                        mix: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """Σ over ``terms`` of softmax attention maps; q, k, v: (..., T, head_dim) → (..., T, T).

    ``q-q`` is softmax(q qᵀ·s) (likewise k-k, v-v); ``q-k`` is the original softmax((q·s) kᵀ).
    ``mix`` (ResCLIP's semantic feedback), if given, changes every term's scaled logits in place;
    ``bias`` (T, T), if given, is then added to them before the softmax.
    """
    total: Optional[torch.Tensor] = None
    for term in terms:
        if term == "q-k":
            logits = torch.matmul(q * scale, k.transpose(-1, -2))
        else:
            a = {"q-q": q, "k-k": k, "v-v": v}[term].contiguous()
            logits = torch.matmul(a, a.transpose(-1, -2)).mul_(scale)
        if mix is not None:
            logits = mix(logits)
        if bias is not None:
            logits.add_(bias)
        attn = logits.softmax(dim=-1)
        total = attn if total is None else total.add_(attn)
    assert total is not None
    return total


#: ResCLIP's residual attention (RCS) averages the q-k maps of these blocks (1-based), on the 12- and
#: 24-block models its authors ran.
RCS_BLOCKS = (6, 7, 8, 9)
RCS_DEPTHS = (12, 24)


def rcs_blocks(depth: int) -> tuple[int, ...]:
    """0-based indices of the blocks whose maps RCS averages, for a ``depth``-block model."""
    if depth not in RCS_DEPTHS:
        raise ItaclipError(f"ResCLIP's residual attention reads blocks 6-9 of 12- and 24-block models (its authors' "
                           f"indices); this model has {depth} blocks: leave --rcs-weights off (or use resclip's "
                           f"blocks on a ViT-B or ViT-L)")
    return tuple(block - 1 for block in RCS_BLOCKS)


class Feedback:
    """RCS and SFR for a window encoder whose last block has attention logits.

    ``rcs_weights`` (τ, λ) mixes the mean q-k map of blocks 6-9 into the last block's attention
    weights, ``τ·((1 − λ)·A + λ·A_rcs)``; ``feedback`` (settings of
    :class:`~itaclip.engine.refine.sfr.SemanticFeedback`) runs the last block twice, the second time
    with the first pass's semantic feedback mixed into its attention logits. Use :meth:`record` as the
    trunk's ``on_qkv`` hook, then :meth:`features` with a function that runs the last block."""

    def __init__(self, trunk: VisionTrunk, rcs_weights: Optional[Sequence[float]], feedback: Optional[dict]):
        self.trunk = trunk
        self.rcs_weights = None if rcs_weights is None else tuple(rcs_weights)
        self.blocks = frozenset(rcs_blocks(trunk.depth)) if rcs_weights is not None else frozenset()
        self.semantic = None if feedback is None else SemanticFeedback(**feedback)
        self._maps: list[torch.Tensor] = []

    @property
    def active(self) -> bool:
        return self.rcs_weights is not None or self.semantic is not None

    def record(self, index: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        if index in self.blocks:
            self._maps.append(self.trunk.attention_weights(q, k))

    def residual_map(self) -> Optional[torch.Tensor]:
        """The mean recorded map (B, heads, T, T) of this batch (emptying the record), or None."""
        if not self._maps:
            return None
        mean = torch.stack(self._maps).mean(dim=0)
        self._maps = []
        return mean

    def mix_residual(self, weights: torch.Tensor, rcs: Optional[torch.Tensor]) -> torch.Tensor:
        """``τ·((1 − λ)·weights + λ·rcs)`` in place, or ``weights`` without RCS."""
        if rcs is None:
            return weights
        tau, lam = self.rcs_weights
        return weights.mul_(1 - lam).add_(rcs * lam).mul_(tau)

    def features(self, run: Callable[[Optional[Callable]], torch.Tensor], images: torch.Tensor,
                 context: Optional[WindowContext], grid: tuple[int, int]) -> torch.Tensor:
        """``run(mix)`` → unit patch features (B, N, E) of the last block with ``mix`` applied to its
        attention logits (None: unmixed). Without SFR one pass; with it a first pass, the feedback of
        its labels, and the second pass's features."""
        if self.semantic is None:
            return run(None)
        if context is None:
            raise ItaclipError("ResCLIP's semantic feedback needs the query features (a WindowContext)")
        first = run(None)
        matrix = self.semantic.matrix(first, context.text, grid, images, self.trunk.patch_size)
        feedback = self.semantic.feedback(matrix)
        return run(lambda logits: self.semantic.mix(logits, feedback))


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


class DenseEncoder(nn.Module):
    """Patch features of crops: (B, 3, H, W) normalised images → (B, gh·gw, E) unit vectors."""

    def __init__(self, visual: nn.Module, attention: Sequence[str] = ("q-q", "k-k"),
                 intermediate_layers: Sequence[int] = (7, 8, 10), remove_ffn: bool = True,
                 int8: bool = False, autocast_dtype: Optional[torch.dtype] = None, *,
                 residual: bool = True, gaussian_std: Optional[float] = None,
                 rcs_weights: Optional[Sequence[float]] = None, feedback: Optional[dict] = None):
        """``attention``: the last block's terms (or ``(IDENTITY,)``); ``intermediate_layers``:
        blocks whose maps are fused into it (ITACLIP); ``remove_ffn``/``residual``: drop the last
        block's MLP / its residual connection; ``gaussian_std``: add NACLIP's neighbourhood bias Ω
        with this σ (patches) to the last block's attention logits; ``rcs_weights`` / ``feedback``:
        ResCLIP's RCS / SFR (:class:`Feedback`; the fused map is what RCS mixes)."""
        super().__init__()
        self.trunk = VisionTrunk(visual, int8=int8, autocast_dtype=autocast_dtype)
        depth = self.trunk.depth
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
        self.patch_size = self.trunk.patch_size
        if (rcs_weights is not None or feedback is not None) and self.attention == (IDENTITY,):
            raise ItaclipError("RCS and SFR mix attention logits: this last block has none")
        self.feedback = Feedback(self.trunk, rcs_weights, feedback)

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
        trunk = self.trunk
        blocks, width, patch = trunk.depth, trunk.width, trunk.patch_size
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
        flops += 2 * n * width * trunk.out_dim
        flops += len(self.feedback.blocks) * 2 * tokens * tokens * width  # RCS: recorded q-k maps
        if self.feedback.semantic is not None:  # SFR: the last block again after its qkv, and the head
            flops += 2 * tokens * (width * width + (0 if self.remove_ffn else 8 * width * width))
            flops += (terms + 1) * 2 * tokens * tokens * width + 2 * n * width * trunk.out_dim
        return flops

    def attention_bias(self, grid_h: int, grid_w: int, device: torch.device) -> Optional[torch.Tensor]:
        """The last block's Ω for this grid (computed once per grid size), or None."""
        if self.gaussian_std is None:
            return None
        key = (grid_h, grid_w)
        if key not in self._bias_cache:
            self._bias_cache[key] = neighbourhood_bias(grid_h, grid_w, self.gaussian_std).to(device)
        return self._bias_cache[key]

    def forward(self, images: torch.Tensor, context: Optional[WindowContext] = None
                ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Returns (features (B, gh·gw, E), (gh, gw)); features are L2-normalised per token. Only the
        semantic feedback reads ``context`` (the query features of its first pass's labels)."""
        trunk = self.trunk
        x, (grid_h, grid_w) = trunk.embed(images)
        recorded: list[torch.Tensor] = []
        feedback = self.feedback

        def record(index: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
            feedback.record(index, q, k, v)
            if index in self.recorded:
                attn = self_self_attention(self.attention, q, k, v, trunk.scale)
                if recorded:
                    recorded[0].add_(attn)
                else:
                    recorded.append(attn)

        last = trunk.depth - 1
        x = trunk.run(x, range(last), on_qkv=record if self.recorded or feedback.blocks else None)
        q, k, v = trunk.qkv(last, x)
        intermediate = recorded[0].div_(len(self.recorded)) if recorded else None
        rcs = feedback.residual_map()
        bias = self.attention_bias(grid_h, grid_w, x.device)
        second_pass = feedback.semantic is not None

        def last_block(mix: Optional[Callable]) -> torch.Tensor:
            if self.attention == (IDENTITY,):
                mixed = v
            else:
                fused = self_self_attention(self.attention, q, k, v, trunk.scale, bias, mix)
                if intermediate is not None:
                    fused = fused.mul_(0.5).add_(intermediate, alpha=0.5)
                mixed = torch.matmul(feedback.mix_residual(fused, rcs), v)
            attended = trunk.out(last, mixed)
            # In place on x, unless a second pass still needs it (SFR's first pass).
            z = (x + attended if second_pass and mix is None else x.add_(attended)) if self.residual else attended
            if not self.remove_ffn:
                z.add_(trunk.mlp(last, z))
            return trunk.head(z[:, 1:])

        return feedback.features(last_block, images, context, (grid_h, grid_w)), (grid_h, grid_w)
