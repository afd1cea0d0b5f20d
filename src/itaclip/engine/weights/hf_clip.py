"""Hugging Face ``transformers`` CLIP checkpoints → the engine's OpenAI/open_clip layout.

A ``CLIPModel`` folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, possibly
sharded) or a hub id such as ``openai/clip-vit-base-patch16`` (through ``huggingface_hub``, from its
cache when offline) is read as plain tensors, renamed once in memory and loaded into an open_clip
``CLIP``. Neither ``transformers`` nor a network connection is needed for a folder.

Written here because neither open_clip nor transformers converts between the two layouts. The
mapping is exact: q, k, v projections are concatenated into ``in_proj``; the projections are
``nn.Linear`` weights in transformers and right-multiplied matrices in OpenAI's layout (transposed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Optional

import torch

from ..errors import ItaclipError, one_line
from .backbone import Backbone, check_model, make_backbone
from .network import cannot_download, hub_endpoint, hub_offline
from .openclip import HF_HUB_PREFIX, LOCAL_DIR_PREFIX, load_open_clip
from .reading import count_blocks, read_state_dict

#: transformers' defaults for fields a saved config may leave out (CLIPTextConfig, CLIPVisionConfig).
TEXT_DEFAULTS = dict(hidden_act="quick_gelu", layer_norm_eps=1e-5, num_attention_heads=8, eos_token_id=49407)
VISION_DEFAULTS = dict(hidden_act="quick_gelu", layer_norm_eps=1e-5, num_attention_heads=12)
#: transformers activations and the open_clip activation that computes the same function.
ACTIVATIONS = {"quick_gelu": True, "gelu": False}  # name → quick_gelu flag
#: Weight files of a CLIPModel folder, preferred first (an index lists the shards of a sharded one).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
CLIP_VOCAB_SIZE = 49408  # OpenAI's BPE vocabulary, which open_clip's SimpleTokenizer implements


# ------------------------------------------------------------------------------ configs
#
# Every value the engine reads from a folder's JSON files is checked here, against the small schema
# below (types, ranges, finiteness), so a hostile or broken config is one line naming the field.

#: Largest JSON file read (configs are a few kB, a shard index of a 70B model about 100 kB).
MAX_JSON_BYTES = 16 * 2**20


def _is_int(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_eps(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0 < value < 1


#: Each tower's fields the engine reads: name → (valid, what a valid value is).
TOWER_SCHEMA = {
    "hidden_act": (lambda v: isinstance(v, str) and v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
    "num_attention_heads": (lambda v: _is_int(v, 1), "a positive integer"),
    "layer_norm_eps": (_is_eps, "a finite number between 0 and 1"),
}
TEXT_SCHEMA = {
    **TOWER_SCHEMA,
    "eos_token_id": (lambda v: _is_int(v, 0), "a token id (an integer >= 0)"),
    "vocab_size": (lambda v: _is_int(v, 1), "a positive integer"),
}


def _shown(value) -> str:
    """A config value for a message, short whatever its size."""
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_json(path: Path, source: str) -> dict:
    """A JSON object from a model folder (``source``/name for messages), bounded in size and depth."""
    where = f"{source}/{path.name}"
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise ItaclipError(f"cannot read {where}: larger than {MAX_JSON_BYTES // 2**20} MiB, "
                               "not a model config")
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ItaclipError(f"cannot read {where}: nested too deeply to be a model config") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ItaclipError(f"cannot read {where}: {one_line(exc)}") from None
    if not isinstance(value, dict):
        raise ItaclipError(f"{where} is not a JSON object, got {_shown(value)}")
    return value


def _tower(config: dict, tower: str, defaults: dict, schema: dict, source: str) -> tuple[dict, bool]:
    """A tower's settings (transformers' defaults, then ``{tower}_config_dict``, then
    ``{tower}_config``), checked against ``schema``; and whether the config had a section for it."""
    merged, found = dict(defaults), False
    for key in (f"{tower}_config_dict", f"{tower}_config"):
        section = config.get(key)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ItaclipError(f"{source}/config.json: {key} must be an object, got {_shown(section)}")
        merged.update(section)
        found = True
    for field, (valid, expected) in schema.items():
        if field in merged and not valid(merged[field]):
            raise ItaclipError(f"{source}/config.json: {tower}_config.{field} must be {expected}, "
                               f"got {_shown(merged[field])}")
    return merged, found


def clip_settings(config: dict, source: str) -> dict:
    """What the tensors cannot tell: activation, heads, LayerNorm eps, end-of-text pooling.

    Raises :class:`ItaclipError` for anything but a CLIPModel the engine can run (checked from the
    config alone, before weights are read or downloaded).
    """
    model_type = config.get("model_type")
    if model_type in ("siglip", "siglip2"):
        raise ItaclipError(f"{source} is a SigLIP model: its image tower pools with an attention head and has "
                           "no class token, and ITACLIP needs CLIP's class-token ViT")
    if model_type != "clip":
        raise ItaclipError(f"{source} is not a transformers CLIPModel (model_type {_shown(model_type)})")
    text, text_found = _tower(config, "text", TEXT_DEFAULTS, TEXT_SCHEMA, source)
    vision, vision_found = _tower(config, "vision", VISION_DEFAULTS, TOWER_SCHEMA, source)
    if text["hidden_act"] != vision["hidden_act"]:
        raise ItaclipError(f"{source} uses activations {text['hidden_act']} (text) and "
                           f"{vision['hidden_act']} (image); supported: one of {', '.join(ACTIVATIONS)} in "
                           "both towers")
    eos = text["eos_token_id"]
    vocab = text.get("vocab_size", CLIP_VOCAB_SIZE)
    # transformers pools at the arg-max token for the legacy eos id 2, else at the first eos token;
    # both are the engine's arg-max pooling when eos is the vocabulary's last id (CLIP's tokenizer).
    if eos != 2 and eos != vocab - 1:
        raise ItaclipError(f"{source} ends texts with token {eos}, not the vocabulary's last id: its "
                           "tokenizer is not CLIP's")
    if vocab != CLIP_VOCAB_SIZE:
        raise ItaclipError(f"{source} has a {vocab}-token vocabulary; only CLIP's {CLIP_VOCAB_SIZE}-token BPE "
                           "tokenizer is supported")
    return dict(
        quick_gelu=ACTIVATIONS[text["hidden_act"]],
        text_heads=text["num_attention_heads"],
        vision_heads=vision["num_attention_heads"],
        text_eps=float(text["layer_norm_eps"]),
        vision_eps=float(vision["layer_norm_eps"]),
        defaulted=tuple(name for name, found in (("text", text_found), ("vision", vision_found))
                        if not found),
    )


def _check_heads(state: dict[str, torch.Tensor], settings: dict, source: str) -> None:
    """The configured head counts divide the widths of the tensors (else attention cannot split them)."""
    widths = dict(vision=state["visual.conv1.weight"].shape[0], text=state["ln_final.weight"].shape[0])
    for tower, width in widths.items():
        heads = settings[f"{tower}_heads"]
        if width % heads:
            note = f" (transformers' default: config.json has no {tower}_config)" \
                if tower in settings["defaulted"] else ""
            raise ItaclipError(f"{source}: {tower}_config.num_attention_heads {heads}{note} does not divide "
                               f"the weights' {tower} width {width}: fix config.json")


def _tokenizer_is_clip(folder: Path, source: str) -> None:
    path = folder / "tokenizer_config.json"
    if path.is_file():
        name = read_json(path, source).get("tokenizer_class") or ""
        if not isinstance(name, str):
            raise ItaclipError(f"{source}/tokenizer_config.json: tokenizer_class must be a name, "
                               f"got {_shown(name)}")
        if name and not name.startswith("CLIPTokenizer"):
            raise ItaclipError(f"{source} uses tokenizer {name}; only CLIP's BPE tokenizer is supported")


def _normalisation(folder: Path, source: str) -> tuple[Optional[list], Optional[list]]:
    """``image_mean`` and ``image_std`` of preprocessor_config.json (``None``: OpenAI's): three
    finite numbers each, the deviations positive."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None, None
    config = read_json(path, source)
    values = []
    for field, least in (("image_mean", -math.inf), ("image_std", 0.0)):
        value = config.get(field)
        if value is not None and not (isinstance(value, list) and len(value) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > least
                for v in value)):
            kind = "positive " if least == 0.0 else ""
            raise ItaclipError(f"{source}/preprocessor_config.json: {field} must be 3 finite {kind}numbers, "
                               f"got {_shown(value)}")
        values.append(value)
    return values[0], values[1]


# ----------------------------------------------------------------------------- tensors


def _rename_block(src: str, dst: str, hf: dict, out: dict) -> None:
    """One transformer block: layer_norm1/2, q/k/v/out projections, fc1/fc2."""
    take = hf.pop
    for w in ("weight", "bias"):
        out[f"{dst}.ln_1.{w}"] = take(f"{src}.layer_norm1.{w}")
        out[f"{dst}.ln_2.{w}"] = take(f"{src}.layer_norm2.{w}")
        out[f"{dst}.attn.in_proj_{w}"] = torch.cat([take(f"{src}.self_attn.{p}_proj.{w}") for p in "qkv"])
        out[f"{dst}.attn.out_proj.{w}"] = take(f"{src}.self_attn.out_proj.{w}")
        out[f"{dst}.mlp.c_fc.{w}"] = take(f"{src}.mlp.fc1.{w}")
        out[f"{dst}.mlp.c_proj.{w}"] = take(f"{src}.mlp.fc2.{w}")


def to_openai_layout(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIPModel state dict in OpenAI's layout (same tensors, renamed)."""
    hf = {key: value for key, value in hf_state.items() if not key.endswith("position_ids")}
    out: dict[str, torch.Tensor] = {}
    take = hf.pop
    vision_prefix, text_prefix = "vision_model.encoder.layers.", "text_model.encoder.layers."
    for i in range(count_blocks(hf, vision_prefix)):
        _rename_block(f"{vision_prefix}{i}", f"visual.transformer.resblocks.{i}", hf, out)
    for i in range(count_blocks(hf, text_prefix)):
        _rename_block(f"{text_prefix}{i}", f"transformer.resblocks.{i}", hf, out)
    out["visual.class_embedding"] = take("vision_model.embeddings.class_embedding")
    out["visual.conv1.weight"] = take("vision_model.embeddings.patch_embedding.weight")
    out["visual.positional_embedding"] = take("vision_model.embeddings.position_embedding.weight")
    out["visual.proj"] = take("visual_projection.weight").t().contiguous()
    out["token_embedding.weight"] = take("text_model.embeddings.token_embedding.weight")
    out["positional_embedding"] = take("text_model.embeddings.position_embedding.weight")
    out["text_projection"] = take("text_projection.weight").t().contiguous()
    out["logit_scale"] = take("logit_scale")
    for w in ("weight", "bias"):
        out[f"visual.ln_pre.{w}"] = take(f"vision_model.pre_layrnorm.{w}")
        out[f"visual.ln_post.{w}"] = take(f"vision_model.post_layernorm.{w}")
        out[f"ln_final.{w}"] = take(f"text_model.final_layer_norm.{w}")
    if hf:
        raise KeyError(f"unexpected tensors {sorted(hf)[:3]}")
    return out


def build_model(state: dict[str, torch.Tensor], settings: dict) -> torch.nn.Module:
    """An fp32 open_clip CLIP with the shapes of an OpenAI-layout ``state`` and the given settings."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    width, _, patch, _ = state["visual.conv1.weight"].shape
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state["ln_final.weight"].shape[0]
    vision_mlp = state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    text_mlp = state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    if vision_mlp % width or text_mlp % text_width:
        raise ValueError("the MLP width is not a multiple of the width")
    vision_cfg = CLIPVisionCfg(
        layers=count_blocks(state, "visual.transformer.resblocks."), width=width, patch_size=patch,
        image_size=grid * patch, head_width=width // settings["vision_heads"], mlp_ratio=vision_mlp // width,
        norm_kwargs={"eps": settings["vision_eps"]} if settings["vision_eps"] != 1e-5 else None,
    )
    text_cfg = CLIPTextCfg(
        context_length=state["positional_embedding"].shape[0], vocab_size=state["token_embedding.weight"].shape[0],
        width=text_width, heads=settings["text_heads"], layers=count_blocks(state, "transformer.resblocks."),
        mlp_ratio=text_mlp // text_width,
        norm_kwargs={"eps": settings["text_eps"]} if settings["text_eps"] != 1e-5 else None,
    )
    model = CLIP(state["text_projection"].shape[1], vision_cfg=vision_cfg, text_cfg=text_cfg,
                 quick_gelu=settings["quick_gelu"])
    state = dict(state, logit_scale=state["logit_scale"].reshape(model.logit_scale.shape))
    model.load_state_dict({key: value.float() for key, value in state.items()}, strict=True)
    return model


# ----------------------------------------------------------------------------- sources


def _weight_paths(folder: Path, source: str) -> list[Path]:
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            return _shards(path, source) if name.endswith(".index.json") else [path]
    raise ItaclipError(f"{source} has no weights: expected one of {', '.join(WEIGHT_FILES)}")


def _shards(index: Path, source: str) -> list[Path]:
    """The shard files an index names: file names in the index's own folder (never a path that
    leaves it: the index is data from the model's publisher)."""
    weight_map = read_json(index, source).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ItaclipError(f"{source}/{index.name}: weight_map must map tensor names to shard files")
    shards = set()
    for name in weight_map.values():
        parts = PurePosixPath(name).parts if isinstance(name, str) else ()
        if len(parts) != 1 or parts[0] in (".", "..") or "\\" in name or ":" in name:
            raise ItaclipError(f"{source}/{index.name}: shard {_shown(name)} is not a file name in the "
                               "model's folder")
        shards.add(name)
    return [index.parent / name for name in sorted(shards)]


def _from_files(config: dict, folder: Path, weight_paths: list[Path], source: str) -> Backbone:
    import open_clip

    settings = clip_settings(config, source)
    _tokenizer_is_clip(folder, source)
    mean, std = _normalisation(folder, source)
    hf_state: dict[str, torch.Tensor] = {}
    for path in weight_paths:
        if not path.is_file():
            raise ItaclipError(f"{source}: weight file {path.name} is missing")
        hf_state.update(read_state_dict(path))
    try:
        state = to_openai_layout(hf_state)
        _check_heads(state, settings, source)
        model = build_model(state, settings)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ItaclipError(f"cannot load {source}: not a complete transformers CLIPModel ({one_line(exc)})") from None
    check_model(model, source)
    tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    activation = "QuickGELU" if settings["quick_gelu"] else "GELU"
    return make_backbone(model, tokenizer, mean, std, f"transformers CLIPModel {source} ({activation})")


def load_folder(folder: Path) -> Backbone:
    """A local folder: a transformers CLIPModel, or an open_clip model (``open_clip_config.json``)."""
    if (folder / "config.json").is_file():
        config = read_json(folder / "config.json", str(folder))
        return _from_files(config, folder, _weight_paths(folder, str(folder)), str(folder))
    if (folder / "open_clip_config.json").is_file():
        return load_open_clip(f"{LOCAL_DIR_PREFIX}{folder}", None, None)
    raise ItaclipError(f"folder {folder} holds neither a transformers CLIPModel (config.json) nor an open_clip "
                       "model (open_clip_config.json)")


def load_hub(repo_id: str, cache_dir: Optional[str] = None) -> Backbone:
    """A Hugging Face Hub id: config first (refusals come before any weights are downloaded), then
    the weights, from the Hugging Face cache when they are there (offline too)."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise ItaclipError(f"{repo_id} is not a local file or folder; to fetch it from the Hugging Face Hub "
                           "install huggingface_hub (pip install 'itaclip[hf]')") from None
    config_path = _optional_hub_file(repo_id, "config.json", cache_dir)
    if config_path is None:  # not a transformers repository: an open_clip one (DFN, LAION) is fine too
        if _optional_hub_file(repo_id, "open_clip_config.json", cache_dir) is not None:
            return load_open_clip(f"{HF_HUB_PREFIX}{repo_id}", None, cache_dir)
        _hub_file(repo_id, "config.json", cache_dir)  # raises "not in the cache" when that is the reason
        raise ItaclipError(f"{repo_id} has neither config.json (transformers) nor open_clip_config.json "
                           "(open_clip): it is not a CLIP model repository")
    config = read_json(config_path, repo_id)
    clip_settings(config, repo_id)  # refuse before downloading weights
    paths, not_cached = None, False
    for name in WEIGHT_FILES:
        try:
            path = _hub_file(repo_id, name, cache_dir, optional=True)
        except _NotCached:
            not_cached = True
            continue
        if path is not None:
            paths = _weight_paths(path.parent, repo_id)
            paths = [_hub_file(repo_id, p.name, cache_dir) for p in paths] if name.endswith(".index.json") else paths
            break
    if paths is None:
        if not_cached:
            raise _not_cached(repo_id, "weights", cache_dir)
        raise ItaclipError(f"{repo_id} has no weights: expected one of {', '.join(WEIGHT_FILES)}")
    for optional in ("preprocessor_config.json", "tokenizer_config.json"):
        try:
            _hub_file(repo_id, optional, cache_dir, optional=True)
        except _NotCached:
            pass
    return _from_files(config, config_path.parent, paths, repo_id)


def _optional_hub_file(repo_id: str, filename: str, cache_dir: Optional[str]) -> Optional[Path]:
    """The file, or ``None`` when the repository lacks it or it cannot be had (offline, not cached)."""
    try:
        return _hub_file(repo_id, filename, cache_dir, optional=True)
    except _NotCached:
        return None


def _not_cached(repo_id: str, what: str, cache_dir: Optional[str]) -> ItaclipError:
    return cannot_download(f"{what} of {repo_id} (no local file or folder has that name)", hub_endpoint(),
                           _cache(cache_dir), "/path/to/folder (holding config.json and model.safetensors)",
                           hub=True)


class _NotCached(Exception):
    """An optional hub file that is not cached while the Hub cannot be reached."""


def _cache(cache_dir: Optional[str]) -> str:
    from huggingface_hub import constants

    return str(cache_dir or constants.HF_HUB_CACHE)


def _hub_file(repo_id: str, filename: str, cache_dir: Optional[str], optional: bool = False) -> Optional[Path]:
    """One file of a hub repository (downloaded once, then read from the cache). An ``optional``
    file the repository lacks is ``None``; one that cannot be fetched raises :class:`_NotCached`."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:  # without a network (probed once), straight from the cache: no retries, no waiting
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=hub_offline()))
    except LocalEntryNotFoundError:  # offline (or unreachable) and not in the cache
        if optional:
            raise _NotCached(filename) from None
        raise _not_cached(repo_id, filename, cache_dir) from None
    except RepositoryNotFoundError:
        raise ItaclipError(f"{repo_id} is no local file or folder and no Hugging Face repository (a private or "
                           "gated one needs `hf auth login`)") from None
    except EntryNotFoundError:
        if optional:
            return None
        raise ItaclipError(f"{repo_id} has no {filename}: it is not a transformers model repository") from None
    except Exception as exc:  # HTTP and file-system errors alike
        raise ItaclipError(f"could not get {filename} of {repo_id} from the Hugging Face Hub ({one_line(exc)})") \
            from None
