"""Checkpoints in other layouts than OpenAI's, made from an OpenAI-layout state dict."""

from __future__ import annotations

import torch


def openai_to_transformers(state: dict, quick_gelu: bool = True):
    """The same tensors as a transformers CLIPModel (written plainly, independently of itaclip)."""
    vision_layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
    text_layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    width, _, patch, _ = state["visual.conv1.weight"].shape
    text_width = state["ln_final.weight"].shape[0]
    import transformers  # only the tests that convert to transformers need it

    act = "quick_gelu" if quick_gelu else "gelu"
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=state["token_embedding.weight"].shape[0], hidden_size=text_width,
                         intermediate_size=4 * text_width, num_hidden_layers=text_layers,
                         num_attention_heads=max(1, text_width // 64),
                         max_position_embeddings=state["positional_embedding"].shape[0], hidden_act=act,
                         eos_token_id=49407),
        vision_config=dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=vision_layers,
                           num_attention_heads=max(1, width // 64), patch_size=patch,
                           image_size=patch * round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5),
                           hidden_act=act),
        projection_dim=state["text_projection"].shape[1],
    )
    hf = {}
    for tower, src, dst in (("vision", "visual.transformer.resblocks", "vision_model.encoder.layers"),
                            ("text", "transformer.resblocks", "text_model.encoder.layers")):
        for i in range(vision_layers if tower == "vision" else text_layers):
            s, d = f"{src}.{i}", f"{dst}.{i}"
            for w in ("weight", "bias"):
                q, k, v = state[f"{s}.attn.in_proj_{w}"].chunk(3)
                hf[f"{d}.self_attn.q_proj.{w}"], hf[f"{d}.self_attn.k_proj.{w}"] = q, k
                hf[f"{d}.self_attn.v_proj.{w}"] = v
                hf[f"{d}.self_attn.out_proj.{w}"] = state[f"{s}.attn.out_proj.{w}"]
                hf[f"{d}.layer_norm1.{w}"] = state[f"{s}.ln_1.{w}"]
                hf[f"{d}.layer_norm2.{w}"] = state[f"{s}.ln_2.{w}"]
                hf[f"{d}.mlp.fc1.{w}"] = state[f"{s}.mlp.c_fc.{w}"]
                hf[f"{d}.mlp.fc2.{w}"] = state[f"{s}.mlp.c_proj.{w}"]
    hf["vision_model.embeddings.class_embedding"] = state["visual.class_embedding"]
    hf["vision_model.embeddings.patch_embedding.weight"] = state["visual.conv1.weight"]
    hf["vision_model.embeddings.position_embedding.weight"] = state["visual.positional_embedding"]
    hf["visual_projection.weight"] = state["visual.proj"].t()
    hf["text_model.embeddings.token_embedding.weight"] = state["token_embedding.weight"]
    hf["text_model.embeddings.position_embedding.weight"] = state["positional_embedding"]
    hf["text_projection.weight"] = state["text_projection"].t()
    hf["logit_scale"] = state["logit_scale"]
    for w in ("weight", "bias"):
        hf[f"vision_model.pre_layrnorm.{w}"] = state[f"visual.ln_pre.{w}"]
        hf[f"vision_model.post_layernorm.{w}"] = state[f"visual.ln_post.{w}"]
        hf[f"text_model.final_layer_norm.{w}"] = state[f"ln_final.{w}"]
    model = transformers.CLIPModel(config).eval()
    model.load_state_dict({k: v.float().contiguous() for k, v in hf.items()}, strict=True)
    return model


class StateModule(torch.nn.Module):
    """Nested modules so that ``state_dict()`` of the scripted archive has OpenAI's dotted keys."""

    def __init__(self, state):
        super().__init__()
        tree: dict = {}
        for key, value in state.items():
            node = tree
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        _fill(self, tree)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

def _fill(module: torch.nn.Module, tree: dict) -> None:
    for name, value in tree.items():
        if isinstance(value, dict):
            child = torch.nn.Module()
            _fill(child, value)
            module.add_module(name, child)
        else:
            module.register_parameter(name, torch.nn.Parameter(value, requires_grad=False))
