"""Randomly initialised models in their releases' checkpoint layouts, for tests (plain functions).

Every tensor gets a random value (no constant zeros or ones), so a key read from the wrong place, a
missing bias or a transposed weight changes the result instead of hiding behind an identity.
"""

from __future__ import annotations

import math

import torch


def random_dino_state_dict(*, embed_dim: int = 64, depth: int = 3, patch_size: int = 8, grid: int = 28,
                           mlp_ratio: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A DINO (v1) ViT state dict with exactly the keys and shapes of DINO's released files
    (``dino_vitbase8_pretrain.pth``: ``embed_dim=768, depth=12, patch_size=8, grid=28``), fp32.

    Heads are ``embed_dim // 64`` when loaded (not stored). Scales keep activations O(1) through the
    blocks: weights N(0, 1/fan_in), biases and LayerNorm offsets N(0, 0.05²), LayerNorm scales
    1 + N(0, 0.05²). The positional table is a smooth random field over the ``grid × grid`` patch
    positions (as learned tables are), so resampling rules give realistic differences.
    """
    g = torch.Generator().manual_seed(seed)
    hidden = mlp_ratio * embed_dim

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def linear(prefix: str, out_features: int, in_features: int) -> dict[str, torch.Tensor]:
        return {prefix + ".weight": normal(out_features, in_features, std=in_features ** -0.5),
                prefix + ".bias": normal(out_features, std=0.05)}

    def layer_norm(prefix: str) -> dict[str, torch.Tensor]:
        return {prefix + ".weight": 1 + normal(embed_dim, std=0.05),
                prefix + ".bias": normal(embed_dim, std=0.05)}

    # Smooth table: a sum of random plane waves per channel, plus a little noise.
    positions = torch.arange(grid, dtype=torch.float32)
    rows, cols = torch.meshgrid(positions, positions, indexing="ij")
    waves = 4
    freq = normal(waves, embed_dim, 2, std=2.5 / grid)
    phase = torch.rand(waves, embed_dim, generator=g) * 2 * math.pi
    angle = freq[..., 0, None, None] * rows + freq[..., 1, None, None] * cols + phase[..., None, None]
    table = (torch.sin(angle).sum(dim=0) / math.sqrt(waves)).reshape(embed_dim, grid * grid).t()
    table = 0.5 * table + normal(grid * grid, embed_dim, std=0.02)

    state = {
        "cls_token": normal(1, 1, embed_dim, std=0.5),
        "pos_embed": torch.cat([normal(1, embed_dim, std=0.5), table])[None],
        "patch_embed.proj.weight": normal(embed_dim, 3, patch_size, patch_size,
                                          std=(3 * patch_size ** 2) ** -0.5),
        "patch_embed.proj.bias": normal(embed_dim, std=0.05),
    }
    for i in range(depth):
        block = f"blocks.{i}"
        state.update(layer_norm(block + ".norm1"))
        state.update(linear(block + ".attn.qkv", 3 * embed_dim, embed_dim))
        state.update(linear(block + ".attn.proj", embed_dim, embed_dim))
        state.update(layer_norm(block + ".norm2"))
        state.update(linear(block + ".mlp.fc1", hidden, embed_dim))
        state.update(linear(block + ".mlp.fc2", embed_dim, hidden))
    state.update(layer_norm("norm"))
    return {key: value.contiguous() for key, value in state.items()}
