"""The method zoo: ITACLIP and the training-free CLIP segmenters it is compared with, as data.

Every method runs on the same engine (sliding windows, batched encoder, PAMR, text-feature cache);
a :class:`Method` record says only what it changes there:

* its **last transformer block** (:class:`LastBlock`): the attention weights, and whether the
  block's residual connection and MLP are kept — blocks 1 … L-1 are CLIP's own for every method;
* whether windows whose side is not a multiple of the patch size are **padded** (centred, with the
  mean colour) instead of losing their leftover pixels;
* its authors' **default settings** and **per-dataset presets**, taken from their published
  configurations, and the class lists those use.

Nothing else differs: what the engine does for one method it does for all (views and λ,
auxiliary texts and α, strides, precisions and batching are opt-in for every method).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .config import IDENTITY, METHOD_NAMES, PRESETS, Preset, SegmenterConfig
from .errors import ItaclipError


@dataclass(frozen=True)
class LastBlock:
    """What the last transformer block computes: ``z = [x +] O(A v)`` then ``[z + mlp(ln_2 z)]``."""

    attention: tuple[str, ...]
    """Terms whose softmax maps are summed into A ('q-k', 'q-q', 'k-k'), or ('identity',): A = I."""
    residual: bool
    """Keep the block's residual connection (x + …)."""
    ffn: bool
    """Keep the block's MLP."""
    neighbourhood: bool = False
    """Add NACLIP's Gaussian neighbourhood bias Ω (σ = config.gaussian_std) to the scaled logits."""


@dataclass(frozen=True)
class Method:
    """One segmenter of the zoo."""

    name: str
    title: str
    paper: str
    code: str
    """The authors' code base our defaults and presets come from."""
    changes: str
    """What it changes in CLIP, in one sentence."""
    block: Optional[LastBlock]
    """None: ITACLIP's last block, configured by the config's attention/remove_ffn/intermediate_layers."""
    pad_windows: bool = False
    """Pad windows to a multiple of the patch size (centred, normalised zeros) instead of dropping
    the leftover pixels."""
    defaults: dict = field(default_factory=dict)
    """Config values of the authors' defaults (applied before a preset and explicit options)."""
    presets: dict = field(default_factory=dict)
    """Preset name → :class:`Preset` (the authors' per-dataset configurations)."""


def _preset(name: str, source: str, classes: Optional[str], has_background: bool = False, **overrides) -> Preset:
    settings = ", ".join(f"{k} {v}" for k, v in overrides.items())
    return Preset(name, f"{source}{': ' + settings if settings else ''}", overrides, classes, has_background)


def _presets(*presets: Preset) -> dict[str, Preset]:
    return {p.name: p for p in presets}


#: Datasets whose class list starts with a background class (set).
_BACKGROUND = {"voc21", "context60", "coco_object"}


def _dataset(name: str, source: str, classes: str, **overrides) -> Preset:
    return _preset(name, source, classes, name in _BACKGROUND, **overrides)


# Pipeline defaults shared by the baselines: one view, no closing, no auxiliary texts, no area threshold.
_BASELINE = dict(image_engineering=False, closing=False, alpha=0.0, area_thd=None, prob_thd=0.0,
                 pamr_dilations=(8, 16), short_side=336, long_side_cap=2048)

#: SCLIP's CLIPForSegmentation defaults.
_SCLIP_DEFAULTS = dict(_BASELINE, crop=224, stride=112, logit_scale=40.0, pamr_steps=0)
#: NACLIP v2's defaults (PAMR 10 steps: the README's main results turn it on).
_NACLIP_DEFAULTS = dict(_BASELINE, crop=224, stride=112, logit_scale=40.0, pamr_steps=10, gaussian_std=5.0)
#: ClearCLIP's ClearCLIPSegmentation defaults with its configs' short side 448.
_CLEARCLIP_DEFAULTS = dict(_BASELINE, crop=448, stride=224, logit_scale=50.0, pamr_steps=0, short_side=448)


def _sclip_presets(source: str = "SCLIP config") -> dict[str, Preset]:
    return _presets(
        _preset("default", f"{source} defaults", None),
        _dataset("voc21", source, "sclip_voc21", logit_scale=65.0, prob_thd=0.1, area_thd=0.1),
        _dataset("context60", source, "sclip_context60", logit_scale=50.0, prob_thd=0.1),
        _dataset("coco_object", source, "sclip_coco_object", logit_scale=50.0, prob_thd=0.1),
        _dataset("voc20", source, "sclip_voc20"),
        _dataset("context59", source, "sclip_context59"),
        _dataset("ade20k", source, "sclip_ade20k"),
        _dataset("coco_stuff", source, "sclip_coco_stuff", short_side=448),
        _dataset("cityscapes", source, "sclip_cityscapes", short_side=560),
    )


def _naclip_presets(source: str, **extra) -> dict[str, Preset]:
    return _presets(
        _preset("default", f"{source} defaults", None, **extra),
        _dataset("voc21", source, "sclip_voc21", crop=0, prob_thd=0.1, **extra),
        _dataset("voc20", source, "sclip_voc20", crop=0, **extra),
        _dataset("context60", source, "sclip_context60", prob_thd=0.1, **extra),
        _dataset("coco_object", source, "sclip_coco_object", prob_thd=0.1, **extra),
        _dataset("context59", source, "sclip_context59", **extra),
        _dataset("ade20k", source, "sclip_ade20k", **extra),
        _dataset("coco_stuff", source, "sclip_coco_stuff", **extra),
        _dataset("cityscapes", source, "sclip_cityscapes", short_side=560, **extra),
    )


def _clearclip_presets(source: str) -> dict[str, Preset]:
    return _presets(
        _preset("default", f"{source} defaults", None),
        _dataset("voc21", source, "clearclip_voc21", prob_thd=0.5),
        _dataset("context60", source, "sclip_context60", prob_thd=0.15),
        _dataset("coco_object", source, "clearclip_coco_object", prob_thd=0.4),
        _dataset("voc20", source, "clearclip_voc20"),
        _dataset("context59", source, "sclip_context59"),
        _dataset("ade20k", source, "sclip_ade20k"),
        _dataset("coco_stuff", source, "sclip_coco_stuff"),
        _dataset("cityscapes", source, "sclip_cityscapes", crop=224, stride=224),
    )


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "itaclip", "ITACLIP",
            "Aydın et al., ITACLIP: Boosting Training-Free Semantic Segmentation with Image, Text, and "
            "Architectural Enhancements (CVPRW 2025)",
            "github.com/m-arda-aydn/ITACLIP",
            "last block: q-q + k-k attention fused with intermediate layers' maps, residual kept, MLP "
            "removed; image views, auxiliary texts, PAMR and a label closing",
            None, presets=PRESETS,
        ),
        Method(
            "clip", "CLIP",
            "Radford et al., Learning Transferable Visual Models From Natural Language Supervision (ICML 2021)",
            "NACLIP's code with arch 'vanilla', attention 'vanilla'",
            "nothing: every patch token of the unmodified network, through ln_post and the projection",
            LastBlock(("q-k",), residual=True, ffn=True),
            # Published vanilla baselines use no PAMR (NACLIP's code would refine unless --pamr off).
            defaults=dict(_NACLIP_DEFAULTS, pamr_steps=0),
            presets=_naclip_presets("NACLIP config (vanilla CLIP, no PAMR)"),
        ),
        Method(
            "maskclip", "MaskCLIP",
            "Zhou et al., Extract Free Dense Labels from CLIP (ECCV 2022)",
            "ClearCLIP's code with model type 'MaskCLIP', residual kept",
            "last block: each token takes only its own value (no query-key mixing); residual and MLP kept",
            LastBlock((IDENTITY,), residual=True, ffn=True), pad_windows=True,
            defaults=_CLEARCLIP_DEFAULTS, presets=_clearclip_presets("ClearCLIP config (MaskCLIP)"),
        ),
        Method(
            "sclip", "SCLIP",
            "Wang et al., SCLIP: Rethinking Self-Attention for Dense Vision-Language Inference (ECCV 2024)",
            "github.com/wangf3014/SCLIP",
            "last block: correlative self-attention softmax(q qᵀ) + softmax(k kᵀ) (not halved); residual "
            "and MLP kept",
            LastBlock(("q-q", "k-k"), residual=True, ffn=True),
            defaults=_SCLIP_DEFAULTS, presets=_sclip_presets(),
        ),
        Method(
            "clearclip", "ClearCLIP",
            "Lan et al., ClearCLIP: Decomposing CLIP Representations for Dense Vision-Language Inference "
            "(ECCV 2024)",
            "github.com/mc-lan/ClearCLIP (model type 'ClearCLIP')",
            "last block: q-q attention, residual connection and MLP removed",
            LastBlock(("q-q",), residual=False, ffn=False), pad_windows=True,
            defaults=_CLEARCLIP_DEFAULTS, presets=_clearclip_presets("ClearCLIP config"),
        ),
        Method(
            "naclip", "NACLIP",
            "Hajimiri et al., Pay Attention to Your Neighbours: Training-Free Open-Vocabulary Semantic "
            "Segmentation (WACV 2025)",
            "github.com/sinahmr/NACLIP (v2)",
            "last block: k-k attention plus a Gaussian neighbourhood bias, residual connection and MLP "
            "removed; PAMR",
            LastBlock(("k-k",), residual=False, ffn=False, neighbourhood=True),
            defaults=_NACLIP_DEFAULTS, presets=_naclip_presets("NACLIP config"),
        ),
    ]
}
assert tuple(METHODS) == METHOD_NAMES


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ItaclipError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def encoder_options(config: SegmenterConfig) -> dict:
    """Keyword arguments of :class:`itaclip.engine.encoder.DenseEncoder` for the config's last block."""
    block = get_method(config.method).block
    if block is None:
        return dict(attention=config.attention_terms, intermediate_layers=config.intermediate_layers,
                    remove_ffn=config.remove_ffn)
    return dict(attention=block.attention, intermediate_layers=(), remove_ffn=not block.ffn,
                residual=block.residual, gaussian_std=config.gaussian_std if block.neighbourhood else None)


def unused_fields(config: SegmenterConfig) -> set[str]:
    """Config fields the config's method does not read (ITACLIP's block options for the others,
    σ for all but NACLIP)."""
    block = get_method(config.method).block
    unused = {"attention", "remove_ffn", "intermediate_layers"} if block is not None else set()
    return unused if block is not None and block.neighbourhood else unused | {"gaussian_std"}
