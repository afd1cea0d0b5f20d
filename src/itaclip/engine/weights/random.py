"""Randomly initialised CLIPs in OpenAI's checkpoint layout, for tests and ``itaclip bench``.

Kept apart from the loaders: nothing here is used to load a user's weights.
"""

from __future__ import annotations

import torch


# Parameters OpenAI checkpoints store in fp16 (the rest stay fp32), as convert_weights does.
def _stored_in_fp16(key: str, tensor: torch.Tensor) -> bool:
    if key in ("text_projection", "visual.proj"):
        return True
    if key.endswith(("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias")):
        return True
    if ".mlp." in key or key == "visual.conv1.weight":
        return True
    return False


def random_openai_state_dict(
    *,
    vision_width: int = 64,
    vision_layers: int = 12,
    patch_size: int = 16,
    grid: int = 14,
    text_width: int = 64,
    text_layers: int = 2,
    embed_dim: int = 32,
    context_length: int = 77,
    vocab_size: int = 49408,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A randomly initialised CLIP ViT in OpenAI's checkpoint layout, for tests and benchmarks.

    Heads are ``width // 64`` as in OpenAI's loader; weights that OpenAI stores in fp16 are fp16
    here too, so every loader sees the same values. ``vision_width=768, vision_layers=12,
    text_width=512, text_layers=12, embed_dim=512`` gives ViT-B/16's shapes.
    """
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim,
        vision_cfg=CLIPVisionCfg(layers=vision_layers, width=vision_width, patch_size=patch_size,
                                 image_size=patch_size * grid),
        text_cfg=CLIPTextCfg(context_length=context_length, vocab_size=vocab_size, width=text_width,
                             heads=max(1, text_width // 64), layers=text_layers),
        quick_gelu=True,
    )
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().clone().float()
        # Constant initialisations (zero biases, unit LayerNorm scales) would hide parameter-handling
        # bugs, so every such tensor gets a small random perturbation.
        if key != "logit_scale" and tensor.dim() > 0 and bool((tensor == tensor.flatten()[0]).all()):
            tensor += torch.randn_like(tensor) * 0.05
        state[key] = tensor.half() if _stored_in_fp16(key, tensor) else tensor.float()
    return state
