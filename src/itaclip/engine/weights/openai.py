"""OpenAI's CLIP releases: names downloaded (checksum-verified) through open_clip, and local files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from ..errors import ItaclipError, one_line
from .backbone import Backbone, check_model, make_backbone
from .reading import count_blocks, is_torchscript, read_state_dict

#: OpenAI model names (as the authors' ``clip.load`` spells them) → open_clip names.
OPENAI_MODELS = {
    "ViT-B/16": "ViT-B-16",
    "ViT-B/32": "ViT-B-32",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}


def load_openai_download(weights: str, name: str, cache_dir: Optional[str]) -> Backbone:
    from open_clip.pretrained import download_pretrained_from_url, get_pretrained_url

    url = get_pretrained_url(name, "openai")
    try:
        path = download_pretrained_from_url(url, cache_dir=cache_dir)
    except Exception as exc:  # urllib, socket and checksum errors all mean the same to a user
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        raise ItaclipError(
            f"could not download {weights} weights ({one_line(exc, limit=300)}); connect to the internet "
            f"once (they are cached in {target}) or pass --weights PATH to an OpenAI checkpoint such as "
            f"{os.path.basename(url)}"
        ) from None
    # open_clip verified the file against the SHA-256 in OpenAI's URL: it is OpenAI's archive.
    return _openai_backbone(read_state_dict(Path(path), trusted=True), Path(path), f"OpenAI {weights}")


def load_openai_file(path: Path) -> Backbone:
    state = read_state_dict(path)
    if any(key.startswith("visual.layer1.") for key in state):
        raise ItaclipError(f"weights {path} are a ResNet CLIP; ITACLIP needs a ViT's patch tokens")
    if _is_hf_layout(state):
        raise ItaclipError(f"{path} is a transformers CLIPModel state dict: pass the folder holding it and "
                           "its config.json")
    if not _stored_as_openai(state, path):
        raise ItaclipError(_name_the_architecture(state, path))
    return _openai_backbone(state, path, f"OpenAI-layout {path} (QuickGELU)")


def _openai_backbone(state: dict, path: Path, description: str) -> Backbone:
    import open_clip
    from open_clip.model import build_model_from_openai_state_dict

    try:
        # OpenAI's own loader (as open_clip.load_openai_model does it): QuickGELU, the fp16-stored
        # tensors kept at their fp16 values, everything fp32 afterwards.
        model = build_model_from_openai_state_dict(dict(state), quick_gelu=True, cast_dtype=None).float()
    except Exception as exc:  # shape and key errors: "not a CLIP checkpoint"
        raise ItaclipError(
            f"cannot load weights {path}: not an OpenAI-layout CLIP checkpoint ({one_line(exc)})"
        ) from None
    check_model(model, str(path))
    tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    return make_backbone(model, tokenizer, None, None, description)


def _stored_as_openai(state: dict, path: Path) -> bool:
    """Whether a state dict is OpenAI's release (QuickGELU): a TorchScript archive, or the mixed
    dtypes of OpenAI's ``convert_weights`` (matrices fp16, LayerNorms fp32). open_clip training
    checkpoints share the key names but not this storage, and their activation varies by model."""
    if is_torchscript(path):
        return True
    conv, norm = state.get("visual.conv1.weight"), state.get("visual.ln_pre.weight")
    return conv is not None and norm is not None and conv.dtype == torch.float16 and norm.dtype == torch.float32


def _name_the_architecture(state: dict, path: Path) -> str:
    """The refusal for a state dict whose activation cannot be known, naming the forms to use."""
    import open_clip

    matches = []
    conv = state.get("visual.conv1.weight")
    if conv is not None:
        width, layers = conv.shape[0], count_blocks(state, "visual.transformer.resblocks.")
        for name in open_clip.list_models():
            vision = open_clip.get_model_config(name).get("vision_cfg", {})
            shape = (vision.get("width"), vision.get("layers"), vision.get("patch_size"))
            if shape == (width, layers, conv.shape[-1]) \
                    and not name.endswith("-quickgelu") and f"{name}-quickgelu" in open_clip.list_models():
                matches.append(name)
    example = matches[0] if matches else "ViT-B-16"
    return (
        f"cannot tell which activation {path} was trained with (OpenAI, DFN and MetaCLIP weights use "
        f"QuickGELU; LAION and DataComp weights GELU): name its open_clip architecture, "
        f"--weights {example}-quickgelu:{path} or --weights {example}:{path}"
    )


def _is_hf_layout(state: dict) -> bool:
    return any(key.startswith(("vision_model.", "text_model.")) for key in state)
