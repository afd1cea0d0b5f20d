"""One factory for CLIP: every ViT CLIP a user is likely to have, by the name they already use.

Accepted ``weights`` (details and examples in the README's "Weights" section):

* an OpenAI model name (``ViT-B/16``; downloaded once into ``~/.cache/clip``, checked against
  OpenAI's published SHA-256);
* an open_clip ``NAME:TAG`` (``ViT-B-16:laion2b_s34b_b88k``) or ``hf-hub:ORG/REPO``, downloaded by
  open_clip itself (its cache, its checksums), with the tag's activation and normalisation;
* ``NAME:PATH``: a local open_clip checkpoint with its architecture named (``ViT-B-16:ckpt.pt`` is
  GELU, ``ViT-B-16-quickgelu:ckpt.pt`` QuickGELU), as ``open_clip.create_model(NAME, pretrained=PATH)``;
* a local OpenAI checkpoint (TorchScript archive or state dict as OpenAI ships it);
* a Hugging Face ``transformers`` ``CLIPModel`` folder or hub id (:mod:`itaclip.engine.hf_clip`).

Whatever the form, the result is an open_clip ``CLIP`` in OpenAI's module layout (what the dense
encoder and the text encoder read), plus the model's own tokenizer and normalisation constants.
Anything the engine cannot run (ResNet, timm and ConvNeXt towers, SigLIP's pooling head, custom
attention blocks) is refused from its name or config, before any weights are downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from .config import DEFAULT_WEIGHTS
from .errors import ItaclipError

log = logging.getLogger(__name__)

#: OpenAI model names (as the authors' ``clip.load`` spells them) → open_clip names.
OPENAI_MODELS = {
    "ViT-B/16": "ViT-B-16",
    "ViT-B/32": "ViT-B-32",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"  # open_clip's name for a folder with open_clip_config.json

#: CLIP's normalisation on the 0–255 scale, RGB order, as the authors' pipeline writes it (the
#: rounded form of open_clip's OPENAI_DATASET_MEAN/STD × 255; kept so OpenAI-normalised models give
#: exactly the authors' numbers).
CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)

#: Checkpoint files that ``--weights PATH`` treats as files (anything else is tried as a name).
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar")
#: A Hugging Face Hub repository id: ``org/name``.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class Backbone:
    """A loaded CLIP with what using it correctly needs besides its weights."""

    model: torch.nn.Module
    """open_clip ``CLIP`` (fp32, eval mode) in OpenAI's module layout."""
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    """The model's own tokenizer (context length = the model's)."""
    mean: tuple[float, float, float]
    """Normalisation mean on the 0–255 scale, RGB."""
    std: tuple[float, float, float]
    description: str
    """What was loaded, for messages: ``open_clip ViT-B-16:laion2b_s34b_b88k (GELU)``."""

    @property
    def tokenizer_id(self) -> str:
        """Identifies the tokenizer in cache keys (the same weights with another tokenizer give
        other text features)."""
        name = getattr(self.tokenizer, "tokenizer_name", None) or getattr(self.tokenizer, "name", None)
        return type(self.tokenizer).__name__ + (f":{name}" if isinstance(name, str) else "")


def list_models() -> list[str]:
    """OpenAI model names that ``load_clip`` can download (open_clip ``NAME:TAG`` pairs are listed
    by ``open_clip.list_pretrained()``)."""
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
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ItaclipError(f"device {device} is not available: this PyTorch finds no Apple GPU (use --device cpu)")
    elif dev.type != "cpu":
        raise ItaclipError(f"unsupported device {device!r}: use cpu, cuda or cuda:N")
    return dev


# ----------------------------------------------------------------------------------- factory


def load_clip(
    weights: str | os.PathLike = DEFAULT_WEIGHTS,
    device: Optional[str | torch.device] = None,
    cache_dir: Optional[str] = None,
) -> torch.nn.Module:
    """An fp32 open_clip ``CLIP`` in eval mode from any accepted ``weights`` form."""
    return load_backbone(weights, device, cache_dir).model


def load_backbone(
    weights: str | os.PathLike = DEFAULT_WEIGHTS,
    device: Optional[str | torch.device] = None,
    cache_dir: Optional[str] = None,
) -> Backbone:
    """The model, its tokenizer and its normalisation from any accepted ``weights`` form.

    ``cache_dir`` is where open_clip keeps downloads (``~/.cache/clip`` for URL downloads, the
    Hugging Face cache for hub downloads when ``None``).
    """
    dev = resolve_device(device)
    backbone = _load(os.fspath(weights), cache_dir)
    backbone.model.to(dev).eval()
    return backbone


def _load(weights: str, cache_dir: Optional[str]) -> Backbone:
    import open_clip

    path = Path(os.path.expanduser(weights))
    if path.is_dir():
        from .hf_clip import load_folder

        return load_folder(path)
    if path.is_file():
        return _load_openai_file(path)
    if weights.startswith(HF_HUB_PREFIX):
        return load_open_clip(weights, None, cache_dir)
    name = OPENAI_MODELS.get(weights, weights)
    if name in open_clip.list_models():
        _check_supported(name, open_clip.get_model_config(name))
        if not _pretrained_cfg(name, "openai"):
            tags = open_clip.list_pretrained_tags_by_model(name)
            hint = f"name a tag, e.g. {name}:{tags[0]} (tags: {', '.join(tags)})" if tags else \
                f"give a checkpoint as {name}:PATH"
            raise ItaclipError(f"{weights} names an architecture, not weights: {hint}")
        return _load_openai_download(weights, name, cache_dir)
    if ":" in weights:
        name, _, tag = weights.partition(":")
        if name in open_clip.list_models():
            return load_open_clip(name, tag, cache_dir)
    if _HUB_ID.fullmatch(weights) and not weights.lower().endswith(_CHECKPOINT_SUFFIXES):
        from .hf_clip import load_hub

        return load_hub(weights, cache_dir)
    if os.path.sep in weights or weights.lower().endswith(_CHECKPOINT_SUFFIXES):
        raise ItaclipError(f"weights file {weights} does not exist")
    raise ItaclipError(
        f"unknown weights {weights!r}: give an OpenAI name ({', '.join(OPENAI_MODELS)}), an open_clip "
        "NAME:TAG (open_clip.list_pretrained()), hf-hub:ORG/REPO, a Hugging Face CLIP id ORG/REPO, "
        "a checkpoint file or a folder"
    )


def _pretrained_cfg(name: str, tag: str) -> dict:
    from open_clip.pretrained import get_pretrained_cfg

    return get_pretrained_cfg(name, tag)


# ---------------------------------------------------------------------------- support checks


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


def _check_supported(name: str, model_cfg: Optional[dict]) -> None:
    if model_cfg is None:
        raise ItaclipError(f"open_clip has no architecture {name!r}")
    reason = unsupported_reason(model_cfg)
    if reason:
        raise ItaclipError(f"{name} is not supported: {reason}")


# ------------------------------------------------------------------------- open_clip routes


def load_open_clip(name: str, tag: Optional[str], cache_dir: Optional[str]) -> Backbone:
    """``NAME:TAG``, ``NAME:PATH``, ``hf-hub:ORG/REPO`` and open_clip folders (``local-dir:DIR``)
    through open_clip's factory."""
    import open_clip

    if name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
        try:
            model_cfg = open_clip.get_model_config(name)  # only open_clip_config.json is fetched
        except Exception as exc:
            hint = f" (a transformers CLIPModel repository is --weights {name[len(HF_HUB_PREFIX):]})" \
                if name.startswith(HF_HUB_PREFIX) else ""
            raise ItaclipError(_download_failure(name, exc, "open_clip_config.json") + hint) from None
        _check_supported(name, model_cfg)
        label, activation = name, "QuickGELU" if model_cfg.get("quick_gelu") else "GELU"
        kwargs: dict = {}
    else:
        model_cfg = open_clip.get_model_config(name)
        _check_supported(name, model_cfg)
        pretrained = _pretrained_cfg(name, tag)
        if not pretrained:
            candidate = Path(os.path.expanduser(tag))
            if candidate.is_file():
                return _load_named_file(name, model_cfg, candidate)
            if candidate.is_dir():
                raise ItaclipError(f"{tag} is a folder, which carries its own config: pass --weights {tag}")
            if os.path.sep in tag or tag.lower().endswith(_CHECKPOINT_SUFFIXES):
                raise ItaclipError(f"weights file {tag} does not exist")
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ItaclipError(
                f"open_clip has no weights {name}:{tag}; its tags are {', '.join(tags) or 'none'} "
                f"(or give a checkpoint as {name}:PATH)"
            )
        quick_gelu = bool(pretrained.get("quick_gelu") or model_cfg.get("quick_gelu"))
        label, activation = f"{name}:{tag}", "QuickGELU" if quick_gelu else "GELU"
        # The tag says how its weights were trained; the bare architecture name may not (open_clip
        # itself only warns when they disagree, and would then run the wrong activation).
        kwargs = dict(pretrained=tag, force_quick_gelu=quick_gelu)
    try:
        model = open_clip.create_model(name, precision="fp32", device="cpu", cache_dir=cache_dir,
                                       require_pretrained=True, weights_only=True, **kwargs)
    except Exception as exc:
        raise ItaclipError(_download_failure(label, exc)) from None
    check_model(model, label)
    tokenizer = open_clip.get_tokenizer(name, context_length=model.context_length, cache_dir=cache_dir)
    mean, std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
    return make_backbone(model, tokenizer, mean, std, f"open_clip {label} ({activation})")


def _download_failure(label: str, exc: BaseException, what: str = "weights") -> str:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if label.startswith(LOCAL_DIR_PREFIX):
        return f"could not load {what} of the open_clip folder {label[len(LOCAL_DIR_PREFIX):]} ({detail[:300]})"
    return (f"could not get {what} of {label} ({detail[:300]}); connect to the internet once (open_clip "
            "caches them) or pass a local checkpoint")


def _load_named_file(name: str, model_cfg: dict, path: Path) -> Backbone:
    """``NAME:PATH``: open_clip architecture ``NAME`` with the checkpoint's own tensors.

    Built here rather than with ``create_model(NAME, pretrained=PATH)`` because that would resample
    the checkpoint's position table to the config's image size (the engine resamples it per crop
    from the stored table) and cannot read TorchScript archives.
    """
    from open_clip.model import CLIP

    state = read_state_dict(path)
    grid = _grid_size(state, path)
    cfg = dict(model_cfg)
    cfg["vision_cfg"] = dict(cfg["vision_cfg"], image_size=grid * cfg["vision_cfg"].get("patch_size", 16))
    model = CLIP(**cfg)
    state.pop("logit_bias", None)
    if "logit_scale" in state:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise ItaclipError(f"weights {path} do not fit open_clip's {name}: {first_line(exc)}") from None
    check_model(model, f"{name}:{path}")
    import open_clip

    activation = "QuickGELU" if cfg.get("quick_gelu") else "GELU"
    tokenizer = open_clip.get_tokenizer(name, context_length=model.context_length)
    return make_backbone(model, tokenizer, None, None, f"{path} as open_clip {name} ({activation})")


def _grid_size(state: dict, path: Path) -> int:
    table = state.get("visual.positional_embedding")
    if table is None:
        raise ItaclipError(f"weights {path} are not a CLIP ViT checkpoint (no visual.positional_embedding)")
    return round((table.shape[0] - 1) ** 0.5)


# ---------------------------------------------------------------------------- OpenAI routes


def _load_openai_download(weights: str, name: str, cache_dir: Optional[str]) -> Backbone:
    from open_clip.pretrained import download_pretrained_from_url, get_pretrained_url

    url = get_pretrained_url(name, "openai")
    try:
        path = download_pretrained_from_url(url, cache_dir=cache_dir)
    except Exception as exc:  # urllib, socket and checksum errors all mean the same to a user
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        raise ItaclipError(
            f"could not download {weights} weights ({type(exc).__name__}: {exc}); connect to the internet "
            f"once (they are cached in {target}) or pass --weights PATH to an OpenAI checkpoint such as "
            f"{os.path.basename(url)}"
        ) from None
    # open_clip verified the file against the SHA-256 in OpenAI's URL: it is OpenAI's archive.
    return _openai_backbone(read_state_dict(Path(path), trusted=True), Path(path), f"OpenAI {weights}")


def _load_openai_file(path: Path) -> Backbone:
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
            f"cannot load weights {path}: not an OpenAI-layout CLIP checkpoint ({first_line(exc)})"
        ) from None
    check_model(model, str(path))
    tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    return make_backbone(model, tokenizer, None, None, description)


def _stored_as_openai(state: dict, path: Path) -> bool:
    """Whether a state dict is OpenAI's release (QuickGELU): a TorchScript archive, or the mixed
    dtypes of OpenAI's ``convert_weights`` (matrices fp16, LayerNorms fp32). open_clip training
    checkpoints share the key names but not this storage, and their activation varies by model."""
    if _is_torchscript(path):
        return True
    conv, norm = state.get("visual.conv1.weight"), state.get("visual.ln_pre.weight")
    return conv is not None and norm is not None and conv.dtype == torch.float16 and norm.dtype == torch.float32


def _name_the_architecture(state: dict, path: Path) -> str:
    """The refusal for a state dict whose activation cannot be known, naming the forms to use."""
    import open_clip

    matches = []
    conv = state.get("visual.conv1.weight")
    if conv is not None:
        width, layers = conv.shape[0], _count_blocks(state, "visual.transformer.resblocks.")
        for name in open_clip.list_models():
            vision = open_clip.get_model_config(name).get("vision_cfg", {})
            if (vision.get("width"), vision.get("layers"), vision.get("patch_size")) == (width, layers, conv.shape[-1]) \
                    and not name.endswith("-quickgelu") and f"{name}-quickgelu" in open_clip.list_models():
                matches.append(name)
    example = matches[0] if matches else "ViT-B-16"
    return (
        f"cannot tell which activation {path} was trained with (OpenAI, DFN and MetaCLIP weights use "
        f"QuickGELU; LAION and DataComp weights GELU): name its open_clip architecture, "
        f"--weights {example}-quickgelu:{path} or --weights {example}:{path}"
    )


def _count_blocks(state: dict, prefix: str) -> int:
    return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})


def _is_hf_layout(state: dict) -> bool:
    return any(key.startswith(("vision_model.", "text_model.")) for key in state)


# ------------------------------------------------------------------------- reading files


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip holding compiled code (``*/code/``) besides the tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_state_dict(path: Path, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, without running code from it where the format allows.

    ``.safetensors`` and ``torch.save`` files are read as data only (``weights_only=True``; a
    pickle that asks for anything but tensors is refused). A TorchScript archive (what OpenAI
    ships) contains compiled code by nature: it is loaded with ``torch.jit.load``, with a
    warning unless ``trusted`` (a download whose checksum was verified). Training checkpoints
    (``{"state_dict": ...}``, ``module.`` prefixes) are unwrapped.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif _is_torchscript(path):
            if not trusted:
                log.warning("itaclip: %s is a TorchScript archive: loading it runs the code it contains; "
                            "load only archives you trust (state dicts and .safetensors files hold no code)", path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice is not the user's concern
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and format errors: all "not a checkpoint we can read"
        raise ItaclipError(f"cannot load weights {path}: not a CLIP checkpoint of tensors only "
                           f"({first_line(exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ItaclipError(f"cannot load weights {path}: it holds no state dict")
    state = {key.removeprefix("module."): value for key, value in state.items() if isinstance(value, torch.Tensor)}
    for key in ("input_resolution", "context_length", "vocab_size"):  # TorchScript attributes
        state.pop(key, None)
    return state


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


# ------------------------------------------------------------------------------ building


def check_model(model: torch.nn.Module, label: str) -> None:
    """The modules the engine reads exist (a safety net behind the config checks)."""
    visual = getattr(model, "visual", None)
    if visual is None or not hasattr(visual, "conv1") or not hasattr(visual, "transformer") \
            or getattr(visual, "proj", None) is None or not hasattr(model, "token_embedding"):
        raise ItaclipError(f"weights {label} are not a CLIP ViT with OpenAI's layout")


def engine_normalisation(mean: Optional[Sequence[float]], std: Optional[Sequence[float]]
                         ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A model's mean/std (0–1 scale, ``None`` = OpenAI's) on the engine's 0–255 scale; OpenAI's
    own constants map to the authors' rounded values so those models give the authors' numbers."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = tuple(float(m) for m in (mean if mean is not None else OPENAI_DATASET_MEAN))
    std = tuple(float(s) for s in (std if std is not None else OPENAI_DATASET_STD))
    if len(mean) != 3 or len(std) != 3:
        raise ItaclipError(f"normalisation needs 3 channels, got mean {mean} and std {std}")
    if max(abs(a - b) for a, b in zip(mean + std, OPENAI_DATASET_MEAN + OPENAI_DATASET_STD)) < 1e-6:
        return CLIP_MEAN, CLIP_STD
    return tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std)


def make_backbone(model: torch.nn.Module, tokenizer, mean, std, description: str) -> Backbone:
    """The :class:`Backbone` of a built model: frozen, fp32, eval mode, mean/std on the 0–255 scale."""
    model.requires_grad_(False)
    mean255, std255 = engine_normalisation(mean, std)
    return Backbone(model.float().eval(), tokenizer, mean255, std255, description)


# ---------------------------------------------------------------------------- identities


def text_tower_fingerprint(model: torch.nn.Module) -> str:
    """A digest of the text tower: its weights and its activation (the same weights under GELU and
    QuickGELU give other features); the cache key part that says 'same text encoder'."""
    digest = hashlib.blake2b(digest_size=16)
    activation = type(model.transformer.resblocks[0].mlp.gelu).__name__ if len(model.transformer.resblocks) else ""
    digest.update(f"activation:{activation}".encode())
    for name, tensor in model.state_dict().items():
        if name.startswith("visual.") or name == "logit_scale":
            continue
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------- test models


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
