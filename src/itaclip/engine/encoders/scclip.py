"""SC-CLIP's and SFP's window encoder: anomaly tokens repaired, tokens aggregated along mid-level
similarities, the last block run on the repaired tokens and on a multi-level sum.

Both follow their authors' code (SC-CLIP: github.com/SuleBai/SC-CLIP @ 0417ba9; SFP:
github.com/Kimsure/SFP @ 2804f5b, SFP_ICCV), blocks numbered 1 … L:

1. CLIP's blocks 1 … L-1 unchanged; the outputs of the blocks read below are kept.
2. Anomaly tokens among block L-1's patch tokens — SC-CLIP: its local outlier factor (squared
   distances, the point's own 30th-neighbour distance, scores above their 95 % quantile); SFP: patches
   the class token attends to (× 1.5) more than they attend to themselves in block L-1, the 10
   strongest. Their grid positions follow the authors' formula (token // rows, token % rows), right
   for square windows only.
3. Each anomaly token of block L-1 and of block 9 takes the mean of its non-anomalous 8-neighbours.
4. Similarities: cosines of the repaired block-9 tokens and of block 4's, entries below 0.4 zeroed;
   tokens are aggregated as (S / (rowsum S + 1e-6)) · tokens.
5. The last block's attention (no residual, no MLP) — SC-CLIP: (softmax(M) + softmax(s·k kᵀ)) / 2;
   SFP: (softmax(s·k kᵀ) + softmax(s·q qᵀ) + softmax(M)) / 3, M = 3·(S − mean S) with negatives
   masked — on the aggregated repaired tokens, plus ``res_cls`` × the class token, aggregated again;
   plus the same on the sum of blocks 4 … 10 (SFP: softmax(M) alone there).

Where an outlier has no non-anomalous neighbour, SFP's code writes 0, which normalises to NaN and
spreads over the window; here it keeps its own value (SC-CLIP's rule): windows where the authors'
result is finite are unchanged (docs/METHOD.md).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn

from ..errors import ItaclipError
from . import WindowContext
from .vit import VisionTrunk

#: SC-CLIP's LOF: neighbours and the share of tokens flagged; SFP's outlier count and its class-token factor.
LOF_NEIGHBOURS, LOF_CONTAMINATION = 30, 0.05
SOM_OUTLIERS, SOM_SCALE = 10, 5.0
#: Similarities below this are zeroed (both methods).
SIMILARITY_FLOOR = 0.4
#: Rows of the LOF distance matrix computed at a time (each row: N × D differences).
DISTANCE_CHUNK_ELEMENTS = 1 << 22


def block_numbers(variant: str, depth: int) -> dict:
    """1-based blocks each variant reads, and SC-CLIP's class-token weight, for a ``depth``-block model.

    SC-CLIP: 12 blocks → outliers 11, pre 9, post 4, multi 4 … 10, res_cls 0.3 (its base config); 24
    blocks → 23 / 17 / 7 / 9 … 19, res_cls 0.1 (its authors' answer for ViT-L/14,
    github.com/SuleBai/SC-CLIP/issues/5). SFP hard-codes 9 / 4 / 4 … 10 and runs them unchanged on
    ViT-L/14. No rule exists for other depths."""
    if depth not in (12, 24):
        raise ItaclipError(f"{variant} defines its block indices for 12- and 24-block models (ViT-B, ViT-L) only; "
                           f"this model has {depth} blocks")
    if variant == "scclip" and depth == 24:
        return dict(outliers=23, pre=17, post=7, multi=tuple(range(9, 20)), res_cls=0.1)
    return dict(outliers=depth - 1, pre=9, post=4, multi=tuple(range(4, 11)), res_cls=0.3)


def lof_outliers(tokens: torch.Tensor) -> list[int]:
    """SC-CLIP's local outlier factor on one window's (N, D) tokens → outlier indices, ascending.

    Squared Euclidean distances; each token's 30 nearest others (stable order); LRD_i = 30 / mean of
    max(d_ij, kd_i) with kd_i the token's own 30th distance; LOF_i = mean_j LRD_j / LRD_i; outliers
    score strictly above the 95 % quantile (linear interpolation)."""
    n = tokens.shape[0]
    rows = max(1, DISTANCE_CHUNK_ELEMENTS // max(1, n * tokens.shape[1]))
    distances = torch.cat([(tokens[None, :, :] - tokens[start:start + rows, None, :]).norm(dim=-1) ** 2
                           for start in range(0, n, rows)])
    order = torch.sort(distances, dim=1, stable=True).indices[:, :LOF_NEIGHBOURS + 1]
    neighbours = order[:, 1:]  # the first is the token itself
    k_distance = distances.gather(1, order[:, -1:])
    reach = torch.maximum(distances.gather(1, neighbours), k_distance)
    lrd = LOF_NEIGHBOURS / reach.mean(dim=1)
    scores = (lrd[neighbours] / lrd[:, None]).mean(dim=1)
    ordered = torch.sort(scores).values
    position = (1 - LOF_CONTAMINATION) * (n - 1)
    low = int(position)
    high = min(low + 1, n - 1)
    threshold = ordered[low] + (position - low) * (ordered[high] - ordered[low])
    return torch.nonzero(scores > threshold).flatten().tolist()


def som_outliers(attention: torch.Tensor, res_cls: float) -> list[int]:
    """SFP's outliers from one window's block L-1 attention (heads, 1+N, 1+N): row 0 of every head
    scaled by ``res_cls``·5, heads averaged; patches the class token attends to more than they attend
    to themselves, the 10 strongest (largest first, ties in token order)."""
    scaled = attention.clone()
    scaled[:, 0, 1:] *= res_cls * SOM_SCALE
    mean = scaled.mean(dim=0)
    to_patch = mean[0, 1:]
    candidates = torch.nonzero(to_patch > torch.diagonal(mean)[1:]).flatten()
    strongest = torch.sort(to_patch[candidates], descending=True, stable=True).indices[:SOM_OUTLIERS]
    return candidates[strongest].tolist()


def grid_positions(outliers: list[int], grid: tuple[int, int]) -> list[tuple[int, int]]:
    """The authors' grid position of each outlier token: (t // rows, t % rows) — the token index is
    divided by the number of rows, which is the row-major position only on square grids."""
    grid_h, grid_w = grid
    positions = []
    for token in outliers:
        row, col = divmod(token, grid_h)
        if row >= grid_h or col >= grid_w:
            raise ItaclipError(
                f"SC-CLIP/SFP place anomaly tokens as if windows were square: token {token} of a {grid_h}×{grid_w}-"
                f"patch window falls outside it (their code fails here too); use square windows (--crop N with "
                f"a stride, not --crop 0 on a non-square image)")
        positions.append((row, col))
    return positions


def neighbour_fill(tokens: torch.Tensor, outliers: torch.Tensor) -> torch.Tensor:
    """Each outlier of (B, gh, gw, D) ``tokens`` (mask ``outliers`` (B, gh, gw)) replaced by the mean of
    its non-outlier 8-neighbours inside the grid, read from the original values; an outlier with none
    keeps its value. Neighbours are summed in the 3×3 stencil's row order."""
    batch, grid_h, grid_w, _ = tokens.shape
    if not bool(outliers.any()):
        return tokens
    padded = nn.functional.pad(tokens, (0, 0, 1, 1, 1, 1))
    usable = nn.functional.pad((~outliers).to(tokens.dtype), (1, 1, 1, 1))
    total = torch.zeros_like(tokens)
    count = torch.zeros(batch, grid_h, grid_w, 1, dtype=tokens.dtype, device=tokens.device)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) == (1, 1):
                continue
            weight = usable[:, dy:dy + grid_h, dx:dx + grid_w, None]
            total += padded[:, dy:dy + grid_h, dx:dx + grid_w] * weight
            count += weight
    replace = outliers[..., None] & (count > 0)
    return torch.where(replace, total / count.clamp(min=1), tokens)


def cosine(tokens: torch.Tensor, floor: Optional[float] = None) -> torch.Tensor:
    """(B, N, N) cosines of (B, N, D) tokens (x / ‖x‖, no eps); entries below ``floor`` zeroed."""
    unit = tokens / tokens.norm(dim=-1, keepdim=True)
    similarity = unit @ unit.transpose(-1, -2)
    if floor is not None:
        similarity = torch.where(similarity < floor, torch.zeros_like(similarity), similarity)
    return similarity


def aggregate(tokens: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """``(S / (rowsum S + 1e-6)) · tokens`` for (B, N, D) tokens and (B, N, N) S."""
    return (similarity / (similarity.sum(dim=-1, keepdim=True) + 1e-6)) @ tokens


def similarity_softmax(similarity: torch.Tensor) -> torch.Tensor:
    """(B, 1, N, N): softmax over keys of M = 3·(S − mean S) (each window's own mean) with M < 0
    masked (the diagonal stays)."""
    mean = torch.stack([window.mean() for window in similarity])[:, None, None]
    m = (similarity - mean) * 3.0
    m = torch.where(m < 0.0, torch.full_like(m, float("-inf")), m)
    return torch.softmax(m, dim=-1)[:, None]


class SelfCalibratedEncoder(nn.Module):
    """Patch features of crops: (B, 3, H, W) normalised images → (B, gh·gw, E) unit vectors."""

    def __init__(self, visual: nn.Module, variant: Literal["scclip", "sfp"] = "scclip",
                 res_cls: Optional[float] = None, int8: bool = False,
                 autocast_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.trunk = VisionTrunk(visual, int8=int8, autocast_dtype=autocast_dtype)
        self.variant = variant
        self.blocks = block_numbers(variant, self.trunk.depth)
        self.res_cls = self.blocks["res_cls"] if res_cls is None else res_cls
        self.patch_size = self.trunk.patch_size

    def flops(self, grid_h: int, grid_w: int) -> int:
        """FLOPs of one pass over one crop (multiply-add = 2): CLIP's blocks 1 … L-1, the last block's
        projections and attention twice (repaired tokens, multi-level sum), the similarities and four
        aggregations (N²·D each), the outlier search (SC-CLIP: N²·D distances; SFP: one attention map)
        and the projection head."""
        width = self.trunk.width
        n = grid_h * grid_w
        tokens = 1 + n
        flops = self.trunk.body_flops(grid_h, grid_w)
        flops += 2 * (2 * n * 4 * width * width + 4 * n * n * width)  # two last-block passes (qkv, out, maps, A·v)
        flops += 2 * 2 * n * n * width + 4 * 2 * n * n * width  # two similarities, four aggregations
        flops += 3 * n * n * width if self.variant == "scclip" else 2 * tokens * tokens * width
        return flops

    def _attention(self, y: torch.Tensor, similarity: torch.Tensor, similarity_only: bool = False) -> torch.Tensor:
        """The last block's attention output (B, N, D) for N patch tokens y (its ln_1 applied)."""
        trunk = self.trunk
        last = trunk.depth - 1
        q, k, v = trunk.qkv(last, y)
        similar = similarity_softmax(similarity)
        if similarity_only:
            weights = similar
        else:
            k_k = torch.matmul(k.contiguous(), k.transpose(-1, -2)).mul_(trunk.scale).softmax(dim=-1)
            if self.variant == "scclip":
                weights = (similar + k_k) / 2
            else:
                q_q = torch.matmul(q.contiguous(), q.transpose(-1, -2)).mul_(trunk.scale).softmax(dim=-1)
                weights = (k_k + q_q + similar) / 3
        return trunk.out(last, torch.matmul(weights.expand(-1, v.shape[1], -1, -1), v))

    def forward(self, images: torch.Tensor, context: Optional[WindowContext] = None
                ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Returns (features (B, gh·gw, E), (gh, gw)), L2-normalised per token."""
        trunk, blocks = self.trunk, self.blocks
        x, grid = trunk.embed(images)
        n = grid[0] * grid[1]
        if self.variant == "scclip" and n <= LOF_NEIGHBOURS:
            side = trunk.patch_size * 6
            raise ItaclipError(f"SC-CLIP's outlier search needs windows of more than {LOF_NEIGHBOURS} patches (at "
                               f"least {side}×{side} pixels for a square one); this window has {grid[0]}×{grid[1]}")
        kept: dict[int, torch.Tensor] = {}
        multi: list[torch.Tensor] = []
        attention: list[torch.Tensor] = []
        outlier_block = blocks["outliers"] - 1  # 0-based index of the block whose map SFP reads

        def keep(index: int, out: torch.Tensor) -> None:
            block = index + 1
            if block in (blocks["pre"], blocks["post"]):
                kept[block] = out.clone()
            if block in blocks["multi"]:
                multi.append(out.clone())

        def record(index: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
            if index == outlier_block:
                attention.append(trunk.attention_weights(q, k))

        last = trunk.depth - 1
        x = trunk.run(x, range(last), on_qkv=record if self.variant == "sfp" else None, on_output=keep)
        cls_token, patches = x[:, :1], x[:, 1:]

        if self.variant == "scclip":
            found = [lof_outliers(window) for window in patches]
        else:
            found = [som_outliers(window, self.res_cls) for window in attention[0]]
        mask = torch.zeros(x.shape[0], *grid, dtype=torch.bool, device=x.device)
        for index, outliers in enumerate(found):
            for row, col in grid_positions(outliers, grid):
                mask[index, row, col] = True

        def filled(tokens: torch.Tensor) -> torch.Tensor:
            return neighbour_fill(tokens.reshape(-1, *grid, tokens.shape[-1]), mask).flatten(1, 2)

        repaired = filled(patches)
        pre_similarity = cosine(filled(kept[blocks["pre"]][:, 1:]))
        thresholded = torch.where(pre_similarity < SIMILARITY_FLOOR, torch.zeros_like(pre_similarity),
                                  pre_similarity)
        post = cosine(kept[blocks["post"]][:, 1:], SIMILARITY_FLOOR)
        # SC-CLIP's attention reads the unthresholded similarity, SFP's the thresholded one.
        attention_similarity = pre_similarity if self.variant == "scclip" else thresholded

        z = aggregate(repaired, thresholded)
        z = self._attention(z, attention_similarity) + self.res_cls * cls_token
        z = aggregate(z, post)

        if self.variant == "scclip":  # from zeros, blocks in order
            summed = torch.zeros_like(x)
            for out in multi:
                summed = summed + out
        else:
            summed = torch.stack(multi).sum(dim=0)
        rz = self._attention(summed[:, 1:], attention_similarity, similarity_only=self.variant == "sfp")
        rz = aggregate(rz + self.res_cls * summed[:, :1], post)
        return trunk.head(z + rz), grid
