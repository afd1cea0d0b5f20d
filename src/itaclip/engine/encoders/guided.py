"""Window encoders steered by a guide model (DINO): ProxyCLIP and CorrCLIP.

Both run CLIP's blocks 1…L-1 unchanged on the window, read only the value path of CLIP's last
block, resample those values to DINO's finer grid and mix them with an attention map built from
DINO's features instead of CLIP's own q/k — so their output grid is DINO's (fh, fw), not CLIP's.

* :class:`ProxyEncoder` (ProxyCLIP): the map is a softmax over DINO's final-feature cosines,
  shifted by β × their mean, scaled by γ, negative entries masked.
* :class:`CorrEncoder` (CorrCLIP): the window's region map (cut from a per-image map of
  segments) is merged on DINO's grid by the regions' mean DINO q + k features, the attention is
  restricted to the merged regions (the unsegmented part attends above-mean similarities only),
  and three branches are summed: the main values, the mean of mid-level blocks' values, and
  "region tokens" (copies of CLIP's class token that attend to one region each).

Windows of a batch are independent: the DINO and CLIP passes run batched; the steps on F × F
similarity maps (F = 1764 DINO cells in a 336-pixel window: 12 MB per map) and those that depend on
a window's region layout run window by window, so memory does not grow with the batch size.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ItaclipError
from . import WindowContext
from .dino import DinoTrunk
from .vit import VisionTrunk

#: CorrCLIP: value of padding pixels in a window's region map, and the offset of merged region ids
#: (region ids themselves stay below it: :data:`itaclip.engine.refine.region_vote.REGION_ID_LIMIT`).
REGION_PAD_VALUE = 10000
MERGE_OFFSET = 10000
#: CorrCLIP's constants (fixed in its code): region-merging radius (its DBSCAN's eps), the
#: temperature of the scope attention, the weights of the spatial and semantic branches.
MERGE_RADIUS = 0.2
SCOPE_TEMPERATURE = 4.0
SPATIAL_WEIGHT = 1.0
SEMANTIC_WEIGHT = 0.5


def masked_softmax(logits: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """Row softmax of ``logits`` (…, F, F) with ``blocked`` entries excluded. A row whose entries
    are all blocked attends to itself only (the authors' code returns NaN there; docs/METHOD.md)."""
    lonely = blocked.all(dim=-1)
    if bool(lonely.any()):
        blocked = blocked.clone()
        blocked.diagonal(dim1=-2, dim2=-1)[lonely] = False
    return logits.masked_fill_(blocked, float("-inf")).softmax(dim=-1)


def proxy_attention(guide: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """ProxyCLIP's attention (B, F, F) from DINO's final patch features (B, F, D′): cosines S,
    S′ = (S − β·mean(S))·γ with the mean over each window's F² entries, S′ < 0 masked, row softmax."""
    unit = F.normalize(guide, dim=-1)
    similarity = torch.matmul(unit, unit.transpose(1, 2))
    mean = similarity.mean(dim=(1, 2), keepdim=True)
    shifted = similarity.sub_(mean * beta).mul_(gamma)
    return masked_softmax(shifted, shifted < 0)


def values_on_grid(trunk: VisionTrunk, x: torch.Tensor, clip_grid: tuple[int, int],
                   dino_grid: tuple[int, int]) -> torch.Tensor:
    """The last block's value path on tokens x (B, 1 + gh·gw, D): ``ln_1``, v, class token dropped,
    (D, gh, gw) bilinear to the DINO grid → (B, fh·fw, D)."""
    batch, tokens, width = x.shape
    _, _, v = trunk.qkv(trunk.depth - 1, x)
    v = v.transpose(1, 2).reshape(batch, tokens, width)[:, 1:]
    v = v.transpose(1, 2).reshape(batch, width, *clip_grid)
    v = F.interpolate(v, size=dino_grid, mode="bilinear", align_corners=False)
    return v.flatten(2).transpose(1, 2)


def _block_flops(tokens: int, width: int, hidden: int) -> int:
    """A pre-norm block on ``tokens`` tokens: projections (qkv, out, MLP) and the attention matmuls."""
    return 2 * tokens * (4 * width * width + 2 * width * hidden) + 4 * tokens * tokens * width


def guided_flops(trunk: VisionTrunk, dino: DinoTrunk, height: int, width: int, *, dino_blocks: int,
                 value_paths: int) -> int:
    """FLOPs of one (height, width) window (multiply-add = 2): CLIP's patch embedding and blocks
    1 … L-1, the last block's qkv on ``value_paths`` token sets and their F×F mixing, out projection
    and head; DINO's patch embedding, ``dino_blocks`` full blocks (a partial last one counted as its
    qkv) and the F×F similarity. LayerNorms, softmaxes, resampling and region tokens are not counted."""
    grid_h, grid_w = height // trunk.patch_size, width // trunk.patch_size
    tokens, cells = 1 + grid_h * grid_w, (height // dino.patch_size) * (width // dino.patch_size)
    clip_width, dino_width = trunk.width, dino.width
    flops = 2 * (tokens - 1) * 3 * trunk.patch_size ** 2 * clip_width
    flops += (trunk.depth - 1) * _block_flops(tokens, clip_width, 4 * clip_width)
    flops += value_paths * (2 * tokens * 3 * clip_width ** 2 + 2 * cells * cells * clip_width
                            + 2 * cells * clip_width ** 2)
    flops += 2 * cells * clip_width * trunk.out_dim
    hidden = dino.blocks[0].mlp.fc1.out_features
    flops += 2 * cells * 3 * dino.patch_size ** 2 * dino_width
    flops += dino_blocks * _block_flops(1 + cells, dino_width, hidden)
    if dino_blocks < dino.depth:
        flops += 2 * cells * 3 * dino_width ** 2  # the last block's qkv only
    return flops + 2 * cells * cells * dino_width


def attend_values(trunk: VisionTrunk, attention: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``out_proj(A v)`` of the last block: one (F, F) map shared by every head; no residual, no MLP."""
    return trunk.linears[trunk.depth - 1]["out"](torch.matmul(attention.to(values.dtype), values))


def per_window(attention, *values: torch.Tensor, trunk: VisionTrunk) -> list[torch.Tensor]:
    """``attend_values`` for each window b with ``attention(b)`` (F, F), built and dropped window by
    window: [(B, F, D) outputs, one per ``values`` tensor]."""
    outputs: list[list[torch.Tensor]] = [[] for _ in values]
    for b in range(values[0].shape[0]):
        mixing = attention(b)
        for out, v in zip(outputs, values):
            out.append(attend_values(trunk, mixing, v[b]))
        del mixing
    return [torch.stack(out) for out in outputs]


class ProxyEncoder(nn.Module):
    """ProxyCLIP: (B, 3, h, w) windows → (B, fh·fw, E) unit features on DINO's grid."""

    def __init__(self, visual: nn.Module, guide: nn.Module, beta: float = 1.2, gamma: float = 3.0,
                 int8: bool = False, autocast_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.trunk = VisionTrunk(visual, int8=int8, autocast_dtype=autocast_dtype)
        self.dino = DinoTrunk(guide, int8=int8, autocast_dtype=autocast_dtype)
        self.beta, self.gamma = beta, gamma
        self.patch_size = self.trunk.patch_size

    def flops_at(self, height: int, width: int) -> int:
        """FLOPs of one padded window of height × width pixels (:func:`guided_flops`)."""
        return guided_flops(self.trunk, self.dino, height, width, dino_blocks=self.dino.depth, value_paths=1)

    def forward(self, images: torch.Tensor, context: Optional[WindowContext] = None
                ) -> tuple[torch.Tensor, tuple[int, int]]:
        dino_grid = self.dino.grid(images)
        guide = self.dino.final_features(images).float()
        trunk = self.trunk
        x, clip_grid = trunk.embed(images)
        x = trunk.run(x, range(trunk.depth - 1))
        values = values_on_grid(trunk, x, clip_grid, dino_grid)
        del x
        (z,) = per_window(lambda b: proxy_attention(guide[b:b + 1], self.beta, self.gamma)[0], values, trunk=trunk)
        return trunk.head(z), dino_grid


# ----------------------------------------------------------------------------------------- CorrCLIP


def spatial_blocks(depth: int) -> range:
    """0-based blocks whose outputs CorrCLIP's spatial branch averages: L−2−NS … L−3, NS = 5, 12, 28
    for 12, 24, 32 blocks and L − 4 otherwise."""
    count = {12: 5, 24: 12, 32: 28}.get(depth, depth - 4)
    blocks = range(max(depth - 2 - count, 0), depth - 2)
    if len(blocks) == 0:
        raise ItaclipError(f"corrclip needs a CLIP of at least 3 blocks (its spatial branch averages blocks "
                           f"before the last two); this one has {depth}")
    return blocks


def connected_components(adjacent: torch.Tensor) -> torch.Tensor:
    """Component ids (0, 1, … in the order of each component's lowest index) of an (r, r) boolean
    adjacency: what DBSCAN with ``min_samples=1`` returns (every point is a core point, so a
    cluster is everything reachable within the radius). Written as min-label propagation because
    the graphs are tiny (one node per region of a window) and scikit-learn would be a dependency
    for this alone."""
    count = adjacent.shape[0]
    index = torch.arange(count, device=adjacent.device)
    linked = adjacent | adjacent.T | torch.eye(count, dtype=torch.bool, device=adjacent.device)
    label = index
    while True:
        spread = torch.where(linked, label[None, :], count).amin(dim=1)
        if torch.equal(spread, label):
            break
        label = spread
    return torch.unique(label, return_inverse=True)[1]  # a component's label is its lowest index


def merge_regions(cells: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Merge a window's regions on the DINO grid. ``cells`` (F,) region ids (float32, exact
    integers; the smallest present is "unsegmented"), ``guide`` (F, D′) unit q + k features.

    With more than two distinct ids: each region but the smallest gets the normalised mean of its
    cells' features; regions whose cosine is within :data:`MERGE_RADIUS` of the window's largest
    cosine (distance max(T) − T) are linked, and every region of a connected group gets the id
    ``MERGE_OFFSET + group``; the smallest keeps its id.
    """
    values, inverse = torch.unique(cells, return_inverse=True)
    if len(values) <= 2:
        return cells
    sums = torch.zeros(len(values), guide.shape[1], dtype=guide.dtype, device=guide.device)
    sums.index_add_(0, inverse, guide)
    counts = torch.bincount(inverse, minlength=len(values)).to(guide.dtype)
    means = F.normalize((sums / counts[:, None])[1:], dim=-1)
    cosines = means @ means.T
    groups = connected_components((cosines.max() - cosines) <= MERGE_RADIUS)
    new_ids = torch.cat([values[:1], MERGE_OFFSET + groups.to(values.dtype)])
    return new_ids[inverse]


def scope_attention(guide: torch.Tensor, merged: torch.Tensor) -> torch.Tensor:
    """CorrCLIP's attention (F, F): S = g gᵀ; a pair is allowed inside one region other than the
    unsegmented (smallest id) one, or, when either cell is unsegmented, where S > mean(S); row
    softmax of 4·S over the allowed pairs."""
    similarity = guide @ guide.T
    unsegmented = merged == merged.min()
    same = (merged[:, None] == merged[None, :]) & ~unsegmented[:, None]
    touches = unsegmented[:, None] | unsegmented[None, :]
    allowed = same | (touches & (similarity > similarity.mean()))
    return masked_softmax(similarity.mul_(SCOPE_TEMPERATURE), ~allowed)


def pad_regions(regions: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) region crops → (B, H, W) padded as the windows are (centred, the extra pixel
    after), with :data:`REGION_PAD_VALUE`."""
    extra_h, extra_w = size[0] - regions.shape[-2], size[1] - regions.shape[-1]
    if not extra_h and not extra_w:
        return regions
    padding = (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2)
    return F.pad(regions, padding, value=float(REGION_PAD_VALUE))


class CorrEncoder(nn.Module):
    """CorrCLIP: (B, 3, h, w) windows and their region maps (``context.regions``) → (B, fh·fw, E)
    unit features on DINO's grid."""

    def __init__(self, visual: nn.Module, guide: nn.Module, int8: bool = False,
                 autocast_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.trunk = VisionTrunk(visual, int8=int8, autocast_dtype=autocast_dtype)
        self.dino = DinoTrunk(guide, int8=int8, autocast_dtype=autocast_dtype)
        self.spatial = spatial_blocks(self.trunk.depth)
        self.patch_size = self.trunk.patch_size

    def flops_at(self, height: int, width: int) -> int:
        """FLOPs of one padded window (:func:`guided_flops`; the region tokens, a few dozen queries per
        block, are not counted)."""
        return guided_flops(self.trunk, self.dino, height, width, dino_blocks=self.dino.depth - 1, value_paths=2)

    def region_tokens(self, index: int, tokens: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      allowed: torch.Tensor) -> torch.Tensor:
        """Block ``index`` for the region tokens (B, n, D): attention over the class and patch
        tokens' keys/values k, v (B, heads, T, hd) where ``allowed`` (B, n, T), residual, MLP.
        Nothing attends to region tokens, so the other tokens run as in CLIP itself."""
        trunk = self.trunk
        batch, count, width = tokens.shape
        q = trunk.linears[index]["qkv"](trunk.blocks[index].ln_1(tokens))[..., :width]
        q = q.reshape(batch, count, trunk.heads, width // trunk.heads).transpose(1, 2)
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        tokens = tokens + trunk.out(index, mixed)
        return tokens + trunk.mlp(index, tokens)

    def forward(self, images: torch.Tensor, context: Optional[WindowContext] = None
                ) -> tuple[torch.Tensor, tuple[int, int]]:
        if context is None or context.regions is None:
            raise ItaclipError("corrclip needs a region map per window (WindowContext.regions)")
        trunk, batch = self.trunk, images.shape[0]
        dino_grid = self.dino.grid(images)
        guide = F.normalize(self.dino.last_query_key(images).float(), dim=-1)  # (B, F, D')
        regions = pad_regions(context.regions.float(), images.shape[-2:])
        cells = F.interpolate(regions[:, None], size=dino_grid, mode="nearest").flatten(1)  # (B, F)
        merged = torch.stack([merge_regions(cells[b], guide[b]) for b in range(batch)])

        x, clip_grid = trunk.embed(images)
        # Region j of a window: its j-th smallest merged id on the CLIP grid (every id, the
        # unsegmented one included); windows with fewer regions pad with tokens seeing only the class.
        on_clip = F.interpolate(merged.view(batch, 1, *dino_grid), size=clip_grid, mode="nearest").flatten(1)
        region_of_patch = torch.stack([torch.unique(row, return_inverse=True)[1] for row in on_clip])
        count = int(region_of_patch.max()) + 1
        allowed = region_of_patch[:, None, :] == torch.arange(count, device=x.device)[None, :, None]
        allowed = torch.cat([torch.ones_like(allowed[..., :1]), allowed], dim=-1)  # the class token
        tokens = x[:, :1].expand(-1, count, -1).clone()

        def step(index: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
            nonlocal tokens
            tokens = self.region_tokens(index, tokens, k, v, allowed)

        spatial: Optional[torch.Tensor] = None
        for index in range(trunk.depth - 1):
            x = trunk.run(x, [index], on_qkv=step)
            if index in self.spatial:
                spatial = x.clone() if spatial is None else spatial.add_(x)
        assert spatial is not None
        spatial = spatial.div_(len(self.spatial))

        last = trunk.depth - 1
        _, k, v = trunk.qkv(last, x)
        semantic = self.region_tokens(last, tokens, k, v, allowed)  # the full last block
        z_main, z_spatial = per_window(lambda b: scope_attention(guide[b], merged[b]),
                                       values_on_grid(trunk, x, clip_grid, dino_grid),
                                       values_on_grid(trunk, spatial, clip_grid, dino_grid), trunk=trunk)
        cell_region = F.interpolate(region_of_patch.view(batch, 1, *clip_grid).float(), size=dino_grid,
                                    mode="nearest").flatten(1).long()
        z_semantic = torch.gather(semantic, 1, cell_region[..., None].expand(-1, -1, semantic.shape[-1]))
        ln_post = trunk.visual.ln_post
        z = ln_post(z_main) + ln_post(z_spatial) * SPATIAL_WEIGHT + ln_post(z_semantic) * SEMANTIC_WEIGHT
        return F.normalize(z @ trunk.visual.proj, dim=-1), dino_grid
