"""Which open_clip architectures the engine can run, decided from their configs before any download."""

from __future__ import annotations

from typing import Optional

from ..errors import ItaclipError


def unsupported_reason(model_cfg: dict) -> Optional[str]:
    """Why the engine cannot run an open_clip model config, or ``None`` when it can.

    The engine re-runs the vision transformer's blocks itself and encodes texts with OpenAI's
    text tower, so only the plain OpenAI architecture (optionally GELU, any width, depth, patch
    size and head width) is accepted.
    """
    vision = model_cfg.get("vision_cfg", {})
    text = model_cfg.get("text_cfg", {})
    timm_name = vision.get("timm_model_name") or ""
    if "siglip" in timm_name:
        return ("it is a SigLIP model: its image tower pools with an attention head and has no class token, "
                "and ITACLIP needs CLIP's class-token ViT")
    if timm_name:
        return f"its image tower is a timm model ({timm_name}), not a CLIP ViT"
    if isinstance(vision.get("layers"), (list, tuple)):
        return "it is a ResNet CLIP; ITACLIP needs a ViT's patch tokens"
    if vision.get("attentional_pool") or vision.get("pool_type", "tok") != "tok":
        return "its image tower pools without a class token (attention-pool head)"
    if text.get("hf_model_name") or model_cfg.get("custom_text"):
        return "its text tower is not CLIP's text transformer"
    for tower_name, tower in (("image", vision), ("text", text)):
        features = [key for key in ("ls_init_value", "qk_norm", "scaled_cosine_attn", "scale_heads",
                                    "scale_attn_inner", "scale_attn", "scale_fc") if tower.get(key)]
        if tower.get("block_type") not in (None, "default"):
            features.append(f"block_type={tower['block_type']}")
        if features:
            return f"its {tower_name} tower uses {', '.join(features)}, which ITACLIP's encoder does not implement"
    if vision.get("no_ln_pre") or vision.get("pos_embed_type", "learnable") != "learnable" \
            or vision.get("final_ln_after_pool"):
        return "its image tower differs from CLIP's ViT (pre-norm, position table or final norm)"
    if text.get("pool_type", "argmax") != "argmax" or text.get("no_causal_mask") or text.get("embed_cls") \
            or text.get("proj_bias") or text.get("proj_type", "linear") != "linear" \
            or text.get("hf_tokenizer_name"):
        return "its text tower pools or tokenizes differently from CLIP's"
    return None


def check_supported(name: str, model_cfg: Optional[dict]) -> None:
    if model_cfg is None:
        raise ItaclipError(f"open_clip has no architecture {name!r}")
    reason = unsupported_reason(model_cfg)
    if reason:
        raise ItaclipError(f"{name} is not supported: {reason}")
