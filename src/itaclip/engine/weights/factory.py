"""The weights factory: one dispatcher for every ViT CLIP a user is likely to have, by the name they
already use; it picks the route (:mod:`.openai`, :mod:`.openclip`, :mod:`.hf_clip`) from the form.

Accepted ``weights`` (details and examples in the README's "Weights" section):

* an OpenAI model name (``ViT-B/16``; downloaded once into ``~/.cache/clip``, checked against
  OpenAI's published SHA-256);
* an open_clip ``NAME:TAG`` (``ViT-B-16:laion2b_s34b_b88k``) or ``hf-hub:ORG/REPO``, downloaded by
  open_clip itself (its cache, its checksums), with the tag's activation and normalisation;
* ``NAME:PATH``: a local open_clip checkpoint with its architecture named (``ViT-B-16:ckpt.pt`` is
  GELU, ``ViT-B-16-quickgelu:ckpt.pt`` QuickGELU), as ``open_clip.create_model(NAME, pretrained=PATH)``;
* a local OpenAI checkpoint (TorchScript archive or state dict as OpenAI ships it);
* a Hugging Face ``transformers`` ``CLIPModel`` folder or hub id (:mod:`.hf_clip`).

Whatever the form, the result is an open_clip ``CLIP`` in OpenAI's module layout (what the dense
encoder and the text encoder read), plus the model's own tokenizer and normalisation constants.
Anything the engine cannot run (ResNet, timm and ConvNeXt towers, SigLIP's pooling head, custom
attention blocks) is refused from its name or config, before any weights are downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import torch

from ..devices import resolve_device
from ..errors import ItaclipError
from .backbone import DEFAULT_WEIGHTS, Backbone
from .hf_clip import load_folder, load_hub
from .openai import OPENAI_MODELS, load_openai_download, load_openai_file
from .openclip import CHECKPOINT_SUFFIXES, HF_HUB_PREFIX, load_open_clip, pretrained_cfg
from .reading import absent_file_error
from .support import check_supported

#: A Hugging Face Hub repository id: ``org/name``.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def list_models() -> list[str]:
    """OpenAI model names that ``load_clip`` can download (open_clip ``NAME:TAG`` pairs are listed
    by ``open_clip.list_pretrained()``)."""
    return list(OPENAI_MODELS)


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
        return load_folder(path)
    if path.is_file():
        return load_openai_file(path)
    if weights.startswith(HF_HUB_PREFIX):
        return load_open_clip(weights, None, cache_dir)
    name = OPENAI_MODELS.get(weights, weights)
    if name in open_clip.list_models():
        check_supported(name, open_clip.get_model_config(name))
        if not pretrained_cfg(name, "openai"):
            tags = open_clip.list_pretrained_tags_by_model(name)
            hint = f"name a tag, e.g. {name}:{tags[0]} (tags: {', '.join(tags)})" if tags else \
                f"give a checkpoint as {name}:PATH"
            raise ItaclipError(f"{weights} names an architecture, not weights: {hint}")
        return load_openai_download(weights, name, cache_dir)
    if ":" in weights:
        name, _, tag = weights.partition(":")
        if name in open_clip.list_models():
            return load_open_clip(name, tag, cache_dir)
    if _HUB_ID.fullmatch(weights) and not weights.lower().endswith(CHECKPOINT_SUFFIXES):
        return load_hub(weights, cache_dir)
    if os.path.sep in weights or weights.lower().endswith(CHECKPOINT_SUFFIXES) or path.exists():
        raise absent_file_error(str(path))
    raise ItaclipError(
        f"unknown weights {weights!r}: give an OpenAI name ({', '.join(OPENAI_MODELS)}), an open_clip "
        "NAME:TAG (open_clip.list_pretrained()), hf-hub:ORG/REPO, a Hugging Face CLIP id ORG/REPO, "
        "a checkpoint file or a folder"
    )
