"""Randomly initialised models in their releases' checkpoint layouts, for tests (plain functions).

Every tensor gets a random value (no constant zeros or ones), so a key read from the wrong place, a
missing bias or a transposed weight changes the result instead of hiding behind an identity.
"""

from __future__ import annotations

import math

import torch

#: Shapes of the test checkpoints (kwargs of ``itaclip.engine.weights.random.random_openai_state_dict``).
#: Shapes of the test checkpoints (kwargs of ``itaclip.engine.weights.random.random_openai_state_dict``).
TINY_SHAPE = dict(vision_width=64, vision_layers=12, patch_size=16, grid=14, text_width=64,
                  text_layers=2, embed_dim=32, seed=0)
TWO_HEAD_SHAPE = dict(vision_width=128, vision_layers=12, patch_size=16, grid=14, text_width=128,
                      text_layers=2, embed_dim=32, seed=1)
SIX_LAYER_SHAPE = dict(vision_width=64, vision_layers=6, patch_size=16, grid=14, text_width=64,
                       text_layers=2, embed_dim=32, seed=2)
#: Shape of the test guide model (kwargs of ``random_dino_state_dict``): DINO's layout
#: with patch 8 and a 28×28 table, width 64 (1 head), 3 blocks.
DINO_SHAPE = dict(embed_dim=64, depth=3, patch_size=8, grid=28, seed=5)


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


def random_sam_model(kind: str, *, image_size: int = 256, seed: int = 0) -> torch.nn.Module:
    """A small transformers ``Sam2Model`` (``kind="sam2"``: Hiera backbone, FPN neck, high-resolution
    features in the decoder) or ``SamModel`` (``"sam"``: ViT with windowed and global attention) in
    eval mode: the real architectures at width 16–32, input ``image_size`` (1024 in the releases).

    transformers' initialisation plus N(0, 0.02²) on every tensor (no constants), then the mask
    hypernetworks' output layers scaled up so that mask logits are O(1) like a trained model's (at
    transformers' init they are ~1e-4, all stability scores 0, and no mask survives any filter).
    """
    from transformers import Sam2Config, Sam2Model, SamConfig, SamModel
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )
    from transformers.models.sam2.configuration_sam2 import (
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    size = image_size
    small_decoder = dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    if kind == "sam2":
        backbone = Sam2HieraDetConfig(
            hidden_size=16, num_attention_heads=1, blocks_per_stage=[1, 1, 2, 1],
            embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
            global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4],
            window_size_per_stage=[8, 4, 4, 4], image_size=[size, size])
        vision = Sam2VisionConfig(
            backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16], fpn_hidden_size=32,
            backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2])
        decoder = Sam2MaskDecoderConfig(**small_decoder)
        config = Sam2Config(vision_config=vision, mask_decoder_config=decoder,
                            prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=size))
        model_class = Sam2Model
    elif kind == "sam":
        vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 global_attn_indexes=[1], mlp_dim=64, output_channels=32, image_size=size,
                                 window_size=4, num_pos_feats=16)
        prompts = SamPromptEncoderConfig(hidden_size=32, image_size=size, image_embedding_size=size // 16)
        decoder = SamMaskDecoderConfig(**small_decoder)
        config = SamConfig(vision_config=vision, prompt_encoder_config=prompts, mask_decoder_config=decoder)
        model_class = SamModel
    else:
        raise ValueError(f"kind must be sam or sam2, got {kind!r}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_class(config).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02)
            for mlp in model.mask_decoder.output_hypernetworks_mlps:
                mlp.proj_out.weight.mul_(1e5)
    return model
