"""One factory for CLIP: an OpenAI model name (downloaded once into the user's cache) or a local
OpenAI-layout checkpoint (plain state dict or TorchScript archive); the architecture is inferred
from the tensor shapes by open_clip.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Optional

import torch

from .config import DEFAULT_WEIGHTS
from .errors import ItaclipError

#: OpenAI model names (as the authors' ``clip.load`` spells them) → open_clip names.
OPENAI_MODELS = {
    "ViT-B/16": "ViT-B-16",
    "ViT-B/32": "ViT-B-32",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}


def list_models() -> list[str]:
    """Model names that ``load_clip`` can download."""
    return list(OPENAI_MODELS)


def resolve_device(device: Optional[str | torch.device] = None) -> torch.device:
    """``None`` → cuda if available else cpu; an unavailable device is an :class:`ItaclipError`."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ItaclipError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ItaclipError(f"device {device} is not available: no CUDA GPU found (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ItaclipError(
                f"device {device} is not available: only {torch.cuda.device_count()} CUDA GPU(s) found"
            )
    elif dev.type not in ("cpu", "mps"):
        raise ItaclipError(f"unsupported device {device!r}: use cpu, cuda or cuda:N")
    return dev


def _checkpoint_path(weights: str, cache_dir: Optional[str]) -> str:
    import open_clip
    from open_clip.pretrained import download_pretrained_from_url, get_pretrained_url

    if os.path.isfile(weights):
        return weights
    name = OPENAI_MODELS.get(weights, weights)
    url = get_pretrained_url(name, "openai") if name in open_clip.list_models() else ""
    if not url:
        if os.path.sep in weights or weights.endswith((".pt", ".pth", ".bin", ".ckpt")):
            raise ItaclipError(f"weights file {weights} does not exist")
        raise ItaclipError(
            f"unknown weights {weights!r}: give a checkpoint file or one of {', '.join(OPENAI_MODELS)}"
        )
    try:
        return download_pretrained_from_url(url, cache_dir=cache_dir)
    except Exception as exc:  # urllib, socket and checksum errors all mean the same to a user
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        raise ItaclipError(
            f"could not download {weights} weights ({type(exc).__name__}: {exc}); connect to the internet "
            f"once (they are cached in {target}) or pass --weights PATH to an OpenAI checkpoint such as "
            f"{os.path.basename(url)}"
        ) from None


def load_clip(
    weights: str | os.PathLike = DEFAULT_WEIGHTS,
    device: Optional[str | torch.device] = None,
    cache_dir: Optional[str] = None,
) -> torch.nn.Module:
    """An fp32 open_clip ``CLIP`` in eval mode from a model name or a local checkpoint file."""
    from open_clip import load_openai_model

    dev = resolve_device(device)
    path = _checkpoint_path(os.fspath(weights), cache_dir)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice is not the user's concern
            model = load_openai_model(path, precision="fp32", device="cpu")
    except Exception as exc:  # unpickling, zip, shape and key errors: all "not a CLIP checkpoint"
        raise ItaclipError(
            f"cannot load weights {path}: not an OpenAI-layout CLIP checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'})"
        ) from None
    if not hasattr(model, "visual") or not hasattr(model.visual, "conv1"):
        raise ItaclipError(f"weights {path} are not a CLIP ViT checkpoint (ResNet CLIPs are not supported)")
    return model.to(dev).eval()


def text_tower_fingerprint(model: torch.nn.Module) -> str:
    """A digest of the text tower's weights: the cache key part that says 'same text encoder'."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        if name.startswith("visual.") or name == "logit_scale":
            continue
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
