"""open_clip's routes: ``NAME:TAG``, ``NAME:PATH``, ``hf-hub:ORG/REPO`` and open_clip folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..errors import ItaclipError, one_line
from .backbone import Backbone, check_model, make_backbone
from .network import cannot_download, hub_endpoint, hub_offline, reachable
from .reading import absent_file_error, read_state_dict
from .support import check_supported

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"  # open_clip's name for a folder with open_clip_config.json
#: Checkpoint files that ``--weights PATH`` treats as files (anything else is tried as a name).
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar")


def pretrained_cfg(name: str, tag: str) -> dict:
    """open_clip's record of the weights ``NAME:TAG`` ({} when it has none)."""
    from open_clip.pretrained import get_pretrained_cfg

    return get_pretrained_cfg(name, tag)


def load_open_clip(name: str, tag: Optional[str], cache_dir: Optional[str]) -> Backbone:
    """``NAME:TAG``, ``NAME:PATH``, ``hf-hub:ORG/REPO`` and open_clip folders (``local-dir:DIR``)
    through open_clip's factory. Without a network, Hub repositories and tags are taken from the
    cache through open_clip's local routes (``local-dir:``, a file path), never retried online."""
    import open_clip

    label = name
    from_snapshot = name.startswith(HF_HUB_PREFIX) and hub_offline()
    if from_snapshot:
        name = _cached_hub_repo(name, cache_dir)
    if name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
        try:
            model_cfg = open_clip.get_model_config(name)  # only open_clip_config.json is fetched
        except Exception as exc:
            hint = f" (a transformers CLIPModel repository is --weights {name[len(HF_HUB_PREFIX):]})" \
                if name.startswith(HF_HUB_PREFIX) else ""
            raise ItaclipError(_download_failure(label, exc, "open_clip_config.json") + hint) from None
        check_supported(label, model_cfg)
        if from_snapshot and not _has_open_clip_weights(Path(name[len(LOCAL_DIR_PREFIX):])):
            raise _repo_not_cached(label, cache_dir)  # a cached snapshot with the config only
        activation = "QuickGELU" if model_cfg.get("quick_gelu") else "GELU"
        kwargs: dict = {}
        pretrained: dict = {}
    else:
        model_cfg = open_clip.get_model_config(name)
        check_supported(name, model_cfg)
        pretrained = pretrained_cfg(name, tag)
        if not pretrained:
            candidate = Path(os.path.expanduser(tag))
            if candidate.is_file():
                return _load_named_file(name, model_cfg, candidate)
            if candidate.is_dir():
                raise ItaclipError(f"{tag} is a folder, which carries its own config: pass --weights {tag}")
            if os.path.sep in tag or tag.lower().endswith(CHECKPOINT_SUFFIXES) or candidate.exists():
                raise absent_file_error(str(candidate))
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ItaclipError(
                f"open_clip has no weights {name}:{tag}; its tags are {', '.join(tags) or 'none'} "
                f"(or give a checkpoint as {name}:PATH)"
            )
        quick_gelu = bool(pretrained.get("quick_gelu") or model_cfg.get("quick_gelu"))
        label, activation = f"{name}:{tag}", "QuickGELU" if quick_gelu else "GELU"
        # The tag says how its weights were trained; the bare architecture name may not (open_clip
        # itself only warns when they disagree, and would then run the wrong activation).
        kwargs = dict(pretrained=_offline_tag_file(name, label, pretrained, cache_dir) or tag,
                      force_quick_gelu=quick_gelu)
    try:
        model = open_clip.create_model(name, precision="fp32", device="cpu", cache_dir=cache_dir,
                                       require_pretrained=True, weights_only=True, **kwargs)
    except Exception as exc:
        raise ItaclipError(_download_failure(label, exc)) from None
    check_model(model, label)
    tokenizer = open_clip.get_tokenizer(name, context_length=model.context_length, cache_dir=cache_dir)
    # A tag's normalisation is its record's (what create_model applies for a tag; from a cached
    # file path it would not know the tag).
    mean = pretrained.get("mean") or model.visual.preprocess_cfg["mean"]
    std = pretrained.get("std") or model.visual.preprocess_cfg["std"]
    return make_backbone(model, tokenizer, mean, std, f"open_clip {label} ({activation})")


def _hub_cache(cache_dir: Optional[str]) -> str:
    from huggingface_hub import constants

    return str(cache_dir or constants.HF_HUB_CACHE)


def _cached_hub_repo(name: str, cache_dir: Optional[str]) -> str:
    """``hf-hub:ORG/REPO`` without a network: its cached snapshot as ``local-dir:`` (the config is
    needed for the refusals; the weights are checked after them), or a refusal."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_CONFIG_NAME

    config = try_to_load_from_cache(name[len(HF_HUB_PREFIX):], HF_CONFIG_NAME, cache_dir=cache_dir)
    if not isinstance(config, str):
        raise _repo_not_cached(name, cache_dir)
    return f"{LOCAL_DIR_PREFIX}{Path(config).parent}"


def _repo_not_cached(name: str, cache_dir: Optional[str]) -> ItaclipError:
    from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME

    return cannot_download(f"the weights of {name}", hub_endpoint(), _hub_cache(cache_dir),
                           f"/path/to/folder (with {HF_CONFIG_NAME} and {HF_SAFE_WEIGHTS_NAME})", hub=True)


def _has_open_clip_weights(folder: Path) -> bool:
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    return any((folder / name).is_file() for name in (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME))


def _offline_tag_file(name: str, label: str, pretrained: dict, cache_dir: Optional[str]) -> Optional[str]:
    """The cached checkpoint of a tag whose download source cannot be reached (``None`` when it
    can: open_clip then downloads, or checks its cached copy, itself); a refusal if not cached.

    open_clip downloads from the Hub when the tag names a repository (its file, or its default
    ``open_clip_pytorch_model.bin``, a ``.safetensors`` twin first), else from the tag's URL into
    ``~/.cache/clip``; this follows the same order to find the file without the network."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
    from open_clip.pretrained import has_hf_hub

    hub_id, url = pretrained.get("hf_hub"), pretrained.get("url")
    if hub_id and has_hf_hub():
        if not hub_offline():
            return None
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub_id)
        filename = filename or HF_WEIGHTS_NAME
        twin = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else \
            filename[:-4] + ".safetensors" if filename.endswith((".bin", ".pth")) else None
        for candidate in filter(None, (twin, filename)):
            path = try_to_load_from_cache(repo, candidate, cache_dir=cache_dir)
            if isinstance(path, str):
                return path
        raise cannot_download(f"the weights of {label}", hub_endpoint(), _hub_cache(cache_dir),
                              f"{name}:/path/to/{twin or filename}", hub=True)
    if url:
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file() or reachable(url):  # a cached file's checksum is checked by open_clip
            return None
        raise cannot_download(f"the weights of {label}", url, str(target.parent),
                              f"{name}:/path/to/{os.path.basename(url)}")
    return None


def _download_failure(label: str, exc: BaseException, what: str = "weights") -> str:
    detail = one_line(exc, limit=300)
    if label.startswith(LOCAL_DIR_PREFIX):
        return f"could not load {what} of the open_clip folder {label[len(LOCAL_DIR_PREFIX):]} ({detail})"
    return (f"could not get {what} of {label} ({detail}); connect to the internet once (open_clip "
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
        raise ItaclipError(f"weights {path} do not fit open_clip's {name}: {one_line(exc)}") from None
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


