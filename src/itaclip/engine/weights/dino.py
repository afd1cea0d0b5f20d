"""The guide model of ProxyCLIP and CorrCLIP: a DINO (v1) ViT, from any form a user has it in.

Accepted ``guide_weights`` (``load_guide``):

* the names of DINO's four ViT releases, ``dino_vitb8`` (the default), ``dino_vits8``,
  ``dino_vitb16``, ``dino_vits16``: downloaded once from DINO's release site into itaclip's cache
  (``$ITACLIP_CACHE/guide``, bounded, written atomically). DINO publishes no checksum of these
  files, so the first download is accepted after its structure is checked against the name's
  architecture, and its SHA-256 is recorded beside it: later loads verify the cached file
  against that record;
* a file holding a state dict in DINO's released layout (``dino_vitbase8_pretrain.pth``), a DINO
  training checkpoint (its ``teacher`` entry, ``module.``/``backbone.`` prefixes stripped, the
  projection head dropped) or a timm ``vit_*_patch*_224.dino`` file (``.safetensors``/``.pth``:
  the same keys);
* ``timm:vit_base_patch8_224.dino`` and ``hf-hub:timm/vit_base_patch8_224.dino``: timm's copies of
  the same four releases, fetched by huggingface_hub into its own cache.

The architecture (width, depth, patch size, positional table) is read from the state dict; the
head count is width / 64, as in every DINO release. Anything else (DINOv2, DeiT, CLIP, a timm
model that is not one of DINO's) is refused in one line, before any download for names. Files
are read as tensors only (``weights_only`` / safetensors). The model is timm's
``VisionTransformer`` as a parameter container; the forward with DINO's own positional rule is
:mod:`itaclip.engine.encoders.dino`.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..config import DEFAULT_GUIDE
from ..errors import ItaclipError, one_line
from .reading import unreadable_reason

#: DINO's release names (torch.hub's entry points in DINO's hubconf) → the file's stem on the release site.
DINO_RELEASES = {
    "dino_vitb8": "dino_vitbase8_pretrain",
    "dino_vits8": "dino_deitsmall8_pretrain",
    "dino_vitb16": "dino_vitbase16_pretrain",
    "dino_vits16": "dino_deitsmall16_pretrain",
}
#: (width, depth, patch size) of each release: a download is checked against it.
RELEASE_SHAPES = {"dino_vitb8": (768, 12, 8), "dino_vits8": (384, 12, 8), "dino_vitb16": (768, 12, 16),
                  "dino_vits16": (384, 12, 16)}
#: timm's names of the same four releases (pretrained tag ``dino``; weights on the Hugging Face hub).
TIMM_DINO = ("vit_base_patch8_224.dino", "vit_small_patch8_224.dino", "vit_base_patch16_224.dino",
             "vit_small_patch16_224.dino")
RELEASE_URL = "https://dl.fbaipublicfiles.com/dino"
#: Where the release files are fetched from (a mirror, or a local server in tests).
URL_ENV = "ITACLIP_DINO_URL"
#: Downloads larger than this are refused (ViT-B/8 is 343 MB).
MAX_DOWNLOAD_BYTES = 1 << 30
TIMEOUT_S = 60
TIMM_PREFIX = "timm:"
HF_HUB_PREFIX = "hf-hub:"
_DIGEST_SUFFIX = ".sha256"


@dataclass(frozen=True)
class Guide:
    """A loaded DINO ViT and what using it needs."""

    model: torch.nn.Module
    """timm ``VisionTransformer`` (fp32, eval mode, frozen) holding DINO's parameters."""
    description: str
    """What was loaded, for messages: ``DINO ViT-B/8 (dino_vitb8, DINO's release)``."""

    @property
    def patch_size(self) -> int:
        return self.model.patch_embed.proj.kernel_size[0]

    @property
    def width(self) -> int:
        return self.model.cls_token.shape[-1]

    @property
    def depth(self) -> int:
        return len(self.model.blocks)


def load_guide(weights: str | os.PathLike = DEFAULT_GUIDE, device: Optional[str | torch.device] = None,
               cache_dir: Optional[str | os.PathLike] = None) -> Guide:
    """The DINO ViT named or stored by ``weights`` (module docstring), in fp32 eval mode on ``device``.

    ``cache_dir``: where release downloads are kept (default ``$ITACLIP_CACHE/guide``) and the
    Hugging Face cache for ``hf-hub:``/``timm:`` (default: huggingface_hub's own).
    """
    from ..devices import resolve_device

    text = os.fspath(weights)
    path = Path(os.path.expanduser(text))
    if path.is_file():
        state, label = read_dino_file(path), f"DINO ViT from {path}"
    elif text in DINO_RELEASES:
        state, label = _release(text, cache_dir), f"{text}, DINO's release"
    elif text.startswith((TIMM_PREFIX, HF_HUB_PREFIX)):
        state, label = _timm_hub(text, cache_dir), text
    elif path.is_dir():
        raise ItaclipError(f"--guide-weights {text} is a folder: give a DINO checkpoint file, a release name "
                           f"({', '.join(DINO_RELEASES)}) or timm:NAME")
    elif os.path.sep in text or text.lower().endswith((".pth", ".pt", ".safetensors", ".ckpt", ".bin")):
        raise ItaclipError(f"guide weights file {text} does not exist")
    else:
        raise ItaclipError(f"unknown guide weights {text!r}: give a DINO release name ({', '.join(DINO_RELEASES)}), "
                           f"timm:NAME or hf-hub:timm/NAME ({', '.join(TIMM_DINO)}), or a DINO checkpoint file")
    model = build_dino(state, label)
    width, depth, patch = model.cls_token.shape[-1], len(model.blocks), model.patch_embed.proj.kernel_size[0]
    size = {384: "S", 768: "B"}.get(width, f"width {width}")
    description = f"DINO ViT-{size}/{patch} ({label})" + (f", {depth} blocks" if depth != 12 else "")
    return Guide(model.to(resolve_device(device)), description)


# ------------------------------------------------------------------------------------ structure


def dino_architecture(state: dict, label: str) -> tuple[int, int, int, int, int]:
    """(width, depth, patch size, table side, MLP width) of a DINO ViT state dict, or a one-line
    refusal naming what it is instead."""
    keys = set(state)
    if any(k.startswith(("visual.", "vision_model.", "text_model.")) for k in keys):
        raise ItaclipError(f"{label} is a CLIP checkpoint, not a DINO ViT (give it as --weights)")
    if "register_tokens" in keys or "mask_token" in keys or any(".ls1." in k for k in keys):
        raise ItaclipError(f"{label} is a DINOv2-style ViT (register tokens, mask token or layer scale), not DINO (v1)")
    if "dist_token" in keys:
        raise ItaclipError(f"{label} is a distilled DeiT, not a DINO ViT")
    required = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight")
    missing = [k for k in required if k not in keys]
    if missing:
        raise ItaclipError(f"{label} is not a DINO ViT state dict (no {', '.join(missing)})")
    conv = state["patch_embed.proj.weight"]
    if conv.dim() != 4 or conv.shape[1] != 3 or conv.shape[2] != conv.shape[3]:
        raise ItaclipError(f"{label} is not a DINO ViT: its patch embedding is {tuple(conv.shape)}")
    width, patch = conv.shape[0], conv.shape[2]
    depth = len({k.split(".")[1] for k in keys if k.startswith("blocks.")})
    tokens = state["pos_embed"].shape[1] - 1
    side = math.isqrt(tokens)
    if depth == 0 or side * side != tokens or width % 64:
        raise ItaclipError(f"{label} is not a DINO ViT: {depth} blocks, {tokens} position rows, width {width} "
                           "(DINO: square position table, width a multiple of 64)")
    hidden = state.get("blocks.0.mlp.fc1.weight", torch.empty(0, 0)).shape[0]
    return width, depth, patch, side, hidden


def build_dino(state: dict, label: str) -> torch.nn.Module:
    """timm's ``VisionTransformer`` holding ``state`` (``strict``: every key and shape must fit)."""
    from timm.models.vision_transformer import VisionTransformer

    width, depth, patch, side, hidden = dino_architecture(state, label)
    with torch.device("meta"):  # parameters come from the state dict: no initialisation
        model = VisionTransformer(img_size=side * patch, patch_size=patch, embed_dim=width, depth=depth,
                                  num_heads=width // 64, mlp_ratio=hidden / width, qkv_bias=True, num_classes=0)
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as exc:
        raise ItaclipError(f"{label} is not a DINO ViT state dict ({one_line(exc, limit=300)})") from None
    model.requires_grad_(False)
    return model.eval()


def dino_state_dict(state: object, label: str) -> dict[str, torch.Tensor]:
    """The backbone's tensors from what a DINO file holds: a plain state dict, or a training
    checkpoint (its ``teacher``; ``module.``/``backbone.`` prefixes stripped, the DINO head dropped)."""
    if isinstance(state, dict) and isinstance(state.get("teacher"), dict):
        state = state["teacher"]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ItaclipError(f"{label} holds no state dict")
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = key.removeprefix("module.")
        if key.startswith("head."):  # DINO's projection head (training checkpoints)
            continue
        tensors[key.removeprefix("backbone.")] = value
    return tensors


def read_dino_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a DINO file, read as data only: safetensors, or ``torch.load(weights_only=True)``
    (a training checkpoint's ``args`` namespace is allowed; nothing else but tensors and containers)."""
    label = str(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and format errors: "not a checkpoint we can read"
        raise ItaclipError(f"cannot load guide weights {path}: {unreadable_reason(path, exc)}") from None
    return dino_state_dict(state, label)


# ------------------------------------------------------------------------------ DINO's releases


def release_cache_dir(cache_dir: Optional[str | os.PathLike] = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from ..feature_cache import cache_root

    return cache_root() / "guide"


def release_url(name: str) -> str:
    base = os.environ.get(URL_ENV, "").strip().rstrip("/") or RELEASE_URL
    stem = DINO_RELEASES[name]
    return f"{base}/{stem}/{stem}.pth"


def _release(name: str, cache_dir: Optional[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """The release's tensors from the cache, downloading and recording the file once."""
    folder = release_cache_dir(cache_dir)
    path = folder / f"{DINO_RELEASES[name]}.pth"
    record = path.with_name(path.name + _DIGEST_SUFFIX)
    if path.is_file():
        digest = file_sha256(path)
        recorded = record.read_text().strip() if record.is_file() else None
        if recorded is not None and recorded != digest:
            raise ItaclipError(f"the cached {path} has SHA-256 {digest[:16]}…, not the {recorded[:16]}… recorded when "
                               "it was downloaded: delete it to download it again")
        state = _checked_release(read_dino_file(path), name, str(path))
        if recorded is None:
            _write_record(record, digest)
        return state
    url = release_url(name)
    digest = _download(url, path, name)
    try:
        state = _checked_release(read_dino_file(path), name, url)
    except ItaclipError:
        path.unlink(missing_ok=True)  # not the release: never leave it in the cache
        raise
    _write_record(record, digest)
    return state


def _checked_release(state: dict, name: str, label: str) -> dict:
    width, depth, patch, _, _ = dino_architecture(state, label)
    if (width, depth, patch) != RELEASE_SHAPES[name]:
        raise ItaclipError(f"{label} is a DINO ViT of width {width}, {depth} blocks, patch {patch}: not {name} "
                           f"{RELEASE_SHAPES[name]}")
    return state


def _write_record(record: Path, digest: str) -> None:
    from ..files import atomic_write_text

    try:
        atomic_write_text(record, digest + "\n")
    except OSError:
        pass  # a read-only cache still loads; the file is checked again next time


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, path: Path, name: str) -> str:
    """Stream ``url`` into ``path`` atomically (at most :data:`MAX_DOWNLOAD_BYTES`); its SHA-256."""
    from ..files import atomic_open

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > MAX_DOWNLOAD_BYTES:
                raise ItaclipError(f"{url} is {declared} bytes, more than the {MAX_DOWNLOAD_BYTES} a DINO release "
                                   "can be: refused")
            received = 0
            with atomic_open(path, durable=True) as handle:
                while block := response.read(1 << 20):
                    received += len(block)
                    if received > MAX_DOWNLOAD_BYTES:
                        raise ItaclipError(f"{url} sent more than {MAX_DOWNLOAD_BYTES} bytes: refused, nothing kept")
                    digest.update(block)
                    handle.write(block)
    except ItaclipError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or one_line(exc, limit=200)
        raise ItaclipError(f"could not download {name} from {url} ({reason}); connect to the internet once (it is "
                           f"cached in {path.parent}) or pass --guide-weights PATH to {path.name}") from None
    return digest.hexdigest()


# ----------------------------------------------------------------------------- timm's copies


def _timm_hub(text: str, cache_dir: Optional[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """``timm:NAME`` / ``hf-hub:timm/NAME``: one of timm's DINO ViTs, its safetensors file fetched
    by huggingface_hub (its cache, its resumable downloads)."""
    if text.startswith(TIMM_PREFIX):
        name = text[len(TIMM_PREFIX):]
    else:
        repo = text[len(HF_HUB_PREFIX):]
        org, _, name = repo.partition("/")
        if org != "timm":
            raise ItaclipError(f"{text}: only timm's DINO repositories are known to hold a DINO ViT "
                               f"(hf-hub:timm/NAME, NAME one of {', '.join(TIMM_DINO)}); download other files "
                               "and pass the file")
    if name not in TIMM_DINO:
        hint = " (a DINOv2 model: DINO v1 is what ProxyCLIP and CorrCLIP use)" if re.search("dinov[23]", name) else ""
        raise ItaclipError(f"{text} is not one of timm's DINO (v1) ViTs{hint}: use one of {', '.join(TIMM_DINO)}")
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(f"timm/{name}", "model.safetensors",
                               cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as exc:  # offline, missing repository, HTTP errors: one line
        raise ItaclipError(f"could not get timm/{name} from the Hugging Face hub ({one_line(exc, limit=300)}); "
                           "connect once (huggingface_hub caches it) or pass the file with --guide-weights") from None
    return read_dino_file(Path(path))
