"""What the weights loaders return: a CLIP with what using it correctly needs besides its tensors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..config import DEFAULT_WEIGHTS
from ..errors import ItaclipError

__all__ = ["DEFAULT_WEIGHTS", "CLIP_MEAN", "CLIP_STD", "Backbone", "check_model", "make_backbone",
           "text_tower_fingerprint"]

#: CLIP's normalisation on the 0–255 scale, RGB order, as the authors' pipeline writes it (the
#: rounded form of open_clip's OPENAI_DATASET_MEAN/STD × 255; kept so OpenAI-normalised models give
#: exactly the authors' numbers).
CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)


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
