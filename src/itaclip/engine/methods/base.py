"""What a method record holds: the stages it changes in the engine, its settings and its sources.

Every method runs through one pipeline (:class:`itaclip.Segmenter`)::

    image → resize → windows (+ padding) → [views] → window encoder → window logits → canvas
          → original size → refinements (PAMR, …) → probabilities → area threshold → labels → closing

A :class:`Method` says, as data, which stage it changes and how: the **window encoder** (for the
methods here, :class:`LastBlock`: CLIP's blocks 1 … L-1 unchanged and a different last block),
how **windows** are padded, the **refinements** that follow the similarity maps, the config fields
it reads, its authors' **defaults**, **presets** per dataset and **published** figures. The
engine's code for a stage lives beside the stage (``itaclip.engine.encoders``, ``…pamr``); records
only name it, so this module and the method modules import no PyTorch (``itaclip --help`` and
``itaclip presets`` stay fast). docs/ARCHITECTURE.md shows where each planned method's stages go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from ..config import IDENTITY, SegmenterConfig

AuxKind = Literal["definition", "synonym"]

#: Datasets whose class list starts with a background class (set): class 0 of their presets.
BACKGROUND_DATASETS = ("voc21", "context60", "coco_object")
#: The standard benchmarks every method has a preset for (with "default", its authors' defaults).
DATASETS = ("voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff", "cityscapes", "ade20k")


@dataclass(frozen=True)
class Preset:
    """A named setting: config overrides plus the vocabulary it is meant for."""

    name: str
    description: str
    overrides: dict = field(default_factory=dict)
    classes: Optional[str] = None
    """Built-in class list (itaclip/data/classes/NAME.txt), if any."""
    has_background: bool = False
    """Background policy: line 0 of ``classes`` is a background set, used as class 0 ("background")
    of this list and prepended as class 0 to classes a user types under this preset."""
    aux_texts: Optional[str] = None
    """Built-in auxiliary-text file (itaclip/data/texts/NAME.txt), if any."""
    aux_kind: Optional[AuxKind] = None
    """What ``aux_texts`` holds: one definition or one synonym per foreground class."""


@dataclass(frozen=True)
class Published:
    """A published mIoU (ViT-B/16 CLIP, the authors' own evaluation) and where it was published."""

    miou: float
    source: str


def feedback_options(config: SegmenterConfig) -> dict:
    """ResCLIP's residual attention (RCS) and semantic feedback (SFR) as the config sets them, as
    keyword arguments of the encoders that take them (``rcs_weights``: (τ, λ) or None; ``feedback``:
    the SFR settings or None)."""
    feedback = None
    if config.sfr_thd is not None:
        feedback = dict(threshold=config.sfr_thd, weights=tuple(config.sfr_weights), std=config.gaussian_std,
                        entity_decay=config.entity_decay, logit_scale=config.logit_scale)
    return dict(rcs_weights=None if config.rcs_weights is None else tuple(config.rcs_weights), feedback=feedback)


@dataclass(frozen=True)
class LastBlock:
    """Window encoder: CLIP's blocks 1 … L-1 unchanged, then ``z = [x +] O(A v)`` and ``[z + mlp(ln_2 z)]``.

    ``configurable``: the attention terms, the MLP and the fused intermediate layers are the config's
    ``attention``, ``remove_ffn`` and ``intermediate_layers`` (ITACLIP, whose paper ablates them);
    otherwise they are the record's own.
    """

    attention: tuple[str, ...] = ()
    """Terms whose softmax maps are summed into A ('q-k', 'q-q', 'k-k'), or ('identity',): A = I."""
    residual: bool = True
    """Keep the block's residual connection (x + …)."""
    ffn: bool = True
    """Keep the block's MLP."""
    neighbourhood: bool = False
    """Add NACLIP's Gaussian neighbourhood bias Ω (σ = config.gaussian_std) to the scaled logits."""
    configurable: bool = False

    @property
    def no_feedback(self) -> Optional[str]:
        """Why RCS and SFR cannot apply to this last block, or None when they can."""
        if self.attention == (IDENTITY,):
            return "its last block has no attention logits to mix them into (each token takes its own value)"
        return None

    def options(self, config: SegmenterConfig) -> dict:
        """Keyword arguments of :class:`itaclip.engine.encoders.last_block.DenseEncoder` for this block."""
        feedback = feedback_options(config) if self.no_feedback is None else {}
        if self.configurable:
            return dict(attention=config.attention_terms, intermediate_layers=config.intermediate_layers,
                        remove_ffn=config.remove_ffn, residual=self.residual,
                        gaussian_std=config.gaussian_std if self.neighbourhood else None, **feedback)
        return dict(attention=self.attention, intermediate_layers=(), remove_ffn=not self.ffn,
                    residual=self.residual, gaussian_std=config.gaussian_std if self.neighbourhood else None,
                    **feedback)

    def build(self, visual, config: SegmenterConfig, **execution):
        """The encoder module for ``config`` (``execution``: int8 / autocast_dtype)."""
        from ..encoders.last_block import (
            DenseEncoder,  # PyTorch is loaded when a model is built, not with the records
        )

        return DenseEncoder(visual, **self.options(config), **execution)


@dataclass(frozen=True)
class ProxyAttention:
    """Window encoder of ProxyCLIP: CLIP's blocks 1 … L-1 unchanged, then only the last block's
    values, resampled to the guide model's (DINO's) grid and mixed by an attention map made of
    DINO's final-feature cosines (shifted by ``proxy_beta`` × their mean, scaled by ``proxy_gamma``,
    negatives masked); no residual, no MLP. Output grid: DINO's."""

    no_feedback = "its attention comes from DINO's features, not from attention logits of CLIP's last block"

    def options(self, config: SegmenterConfig) -> dict:
        """Keyword arguments of :class:`itaclip.engine.encoders.guided.ProxyEncoder`."""
        return dict(beta=config.proxy_beta, gamma=config.proxy_gamma)

    def build(self, visual, config: SegmenterConfig, *, guide, **execution):
        """The encoder module for ``config``; ``guide``: the DINO model (``Method.guide``)."""
        from ..encoders.guided import ProxyEncoder

        return ProxyEncoder(visual, guide, **self.options(config), **execution)


@dataclass(frozen=True)
class RegionScoped:
    """Window encoder of CorrCLIP: the window's region map merged on DINO's grid by DINO's q + k,
    attention restricted to the merged regions (cosines of q + k, temperature 4), applied to the
    last block's values of the main tokens and of the mean of mid-level blocks, plus one region
    token per region (a class-token copy attending to its region through every block). Output
    grid: DINO's."""

    no_feedback = "its attention is scoped by region maps on DINO's grid, not CLIP's last-block logits"

    def options(self, config: SegmenterConfig) -> dict:
        """Keyword arguments of :class:`itaclip.engine.encoders.guided.CorrEncoder` (its constants are
        its authors' code's)."""
        return {}

    def build(self, visual, config: SegmenterConfig, *, guide, **execution):
        from ..encoders.guided import CorrEncoder

        return CorrEncoder(visual, guide, **self.options(config), **execution)




@dataclass(frozen=True)
class SelfCalibrated:
    """Window encoder of SC-CLIP and SFP: CLIP's blocks 1 … L-1 with the outputs of several kept;
    anomaly tokens found (``outliers``: SC-CLIP's LOF or SFP's class-token attention) and replaced by
    their neighbours' mean; tokens aggregated along mid-level similarities; the last block's attention
    (no residual, no MLP) run on the repaired tokens and on the sum of blocks 4 … 10; the class token
    added back with weight ``res_cls``."""

    variant: Literal["scclip", "sfp"]
    no_feedback = "its last block mixes fixed similarity maps over aggregated tokens (ResCLIP defines no mix for it)"

    def options(self, config: SegmenterConfig) -> dict:
        """Keyword arguments of :class:`itaclip.engine.encoders.scclip.SelfCalibratedEncoder`."""
        return dict(variant=self.variant, res_cls=config.res_cls)

    def build(self, visual, config: SegmenterConfig, **execution):
        from ..encoders.scclip import SelfCalibratedEncoder

        return SelfCalibratedEncoder(visual, **self.options(config), **execution)


@dataclass(frozen=True)
class Procrustes:
    """Window encoder of PEARL: CLIP's blocks 1 … L-1 unchanged, then a last block (no residual, no
    MLP) whose keys are rotated towards the queries by an approximate orthogonal Procrustes solution
    (5 Newton–Schulz steps), plus ``kk_weight`` × a centred k-k term."""

    no_feedback = None

    def options(self, config: SegmenterConfig) -> dict:
        """Keyword arguments of :class:`itaclip.engine.encoders.pearl.ProcrustesEncoder`."""
        return dict(kk_weight=config.kk_weight, **feedback_options(config))

    def build(self, visual, config: SegmenterConfig, **execution):
        from ..encoders.pearl import ProcrustesEncoder

        return ProcrustesEncoder(visual, **self.options(config), **execution)


#: Every kind of window encoder a record may name.
Encoder = Union[LastBlock, SelfCalibrated, Procrustes, ProxyAttention, RegionScoped]


@dataclass(frozen=True)
class Method:
    """One segmenter: the stages it changes and what its authors published."""

    name: str
    title: str
    paper: str
    code: str
    """The authors' code base our defaults and presets come from."""
    changes: str
    """What it changes in CLIP, in one sentence."""
    encoder: Encoder
    """How a batch of windows becomes L2-normalised patch features."""
    pad_to: Union[None, Literal["patch"], int] = None
    """Pad windows (centred, with normalised zeros) to a multiple of the patch size (``"patch"``) or
    of a number of pixels, instead of dropping the leftover pixels; None: no padding."""
    reads: tuple[str, ...] = ()
    """Config fields that configure this method's own stages (other methods ignore them)."""
    exclusive: tuple[str, ...] = ()
    """Fields of ``reads`` meaningless for any other method: setting them with another is an error."""
    exclusive_scope: str = ""
    """What the exclusive fields configure, for that error (``"ITACLIP's last block"``)."""
    guide: bool = False
    """Its encoder is steered by the guide model (``config.guide_weights``, a DINO ViT), loaded once per
    loaded model and passed to the encoder's ``build`` as ``guide``."""
    regions: bool = False
    """It reads a region map per image (an (H, W) integer array of segment ids, 0 … 9999, the smallest
    present = unsegmented): resized with the image, cut per window for its encoder."""
    region_vote: bool = False
    """After the labels, every region but the unsegmented one takes the most frequent label of its
    pixels (on the original-size region map)."""
    names_merged_for_class0_only: bool = False
    """Its authors' code merges a class's several names correctly only for class 0 (it takes the first
    Q − K + 1 names as class 0): a vocabulary with several names on another class is computed by our rule
    (max over each class's names) with a warning that their code would differ."""
    whole_image: Optional[Literal["resized", "original"]] = "resized"
    """What ``crop 0`` does: ``"resized"``: one window over the resized image, like any window (padded
    as ``pad_to`` says), then the canvas to the original size; ``"original"``: one unpadded pass whose
    logits are resized straight to the original size (ProxyCLIP's own); None: refused."""
    default_weights: Optional[str] = None
    """CLIP weights its authors use, when the user names none (None: the library's default)."""
    requires: tuple[str, ...] = ()
    """Optional fields that must have a value with this method (its authors' code has no "off")."""
    refused: dict[str, str] = field(default_factory=dict)
    """Fields this method refuses when set (not None), with the reason (one line each)."""
    unit_text: bool = False
    """Normalise the query features once more before the window logits (PEARL's code does; it can
    move them by an ulp)."""
    defaults: dict = field(default_factory=dict)
    """Config values of the authors' defaults (applied before a preset and explicit options)."""
    presets: dict[str, Preset] = field(default_factory=dict)
    """Preset name → :class:`Preset` (the authors' per-dataset configurations)."""
    published: dict[str, Published] = field(default_factory=dict)
    """Dataset (preset name) → the mIoU its authors (or a paper comparing it) published."""


def figures(source: str, **miou: float) -> dict[str, Published]:
    """``figures("X README", voc21=64.1, …)`` → dataset → :class:`Published`."""
    return {dataset: Published(value, source) for dataset, value in miou.items()}


def dataset_presets(source: str, classes: str = "{}", default: Optional[dict] = None,
                    **datasets: dict) -> dict[str, Preset]:
    """Presets of one code base as keyword data: ``default`` (its defaults, no class list) and one
    preset per dataset of :data:`DATASETS` whose keyword value holds that config's overrides
    (``voc21=dict(crop=0, prob_thd=0.1)``); a ``classes`` key in it names its class list, else
    ``classes.format(dataset)`` (e.g. ``"sclip_{}"``). Every dataset must be given (``{}``: defaults)."""
    missing = [d for d in DATASETS if d not in datasets]
    if missing or set(datasets) - set(DATASETS):
        raise ValueError(f"presets of {source}: give exactly {DATASETS} (missing {missing})")
    presets = {"default": _preset("default", f"{source} defaults", None, False, default or {})}
    for name in DATASETS:
        overrides = dict(datasets[name])
        class_list = overrides.pop("classes", classes.format(name))
        presets[name] = _preset(name, source, class_list, name in BACKGROUND_DATASETS, overrides)
    return presets


def _preset(name: str, source: str, classes: Optional[str], has_background: bool, overrides: dict) -> Preset:
    settings = ", ".join(f"{k} {v}" for k, v in overrides.items())
    return Preset(name, f"{source}{': ' + settings if settings else ''}", overrides, classes, has_background)

