"""Typed configuration of the pipeline: every option of every method, with its command-line flag.

The bottom of the engine: it imports nothing above it. Methods, their defaults and presets are in
:mod:`itaclip.engine.methods`, whose ``build_config`` is the factory of configs; the CLI builds its
flags from the fields here, so the CLI and the Python API cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal, Optional

from .errors import ItaclipError

#: The self-self attention terms a combination may sum (SPEC §1, paper Table 2).
ATTENTION_TERMS = ("q-k", "q-q", "k-k", "v-v")
#: Last-block attention in which each token takes only its own value (MaskCLIP; not an ITACLIP term).
IDENTITY = "identity"
VIEWS = ("grey", "blur", "vflip", "hflip")
SPATIAL_VIEWS = ("grey", "blur")  # first category: layout kept, features averaged
FLIP_VIEWS = ("vflip", "hflip")  # second category: logits flipped back, averaged

Precision = Literal["fp32", "fp16", "bf16", "int8"]

#: Weights used when none are named: OpenAI's CLIP ViT-B/16, as in the paper.
DEFAULT_WEIGHTS = "ViT-B/16"
#: The guide model of the methods steered by one (ProxyCLIP, CorrCLIP): DINO's ViT-B/8 release.
DEFAULT_GUIDE = "dino_vitb8"


def option(default, help: str, *, flag: Optional[str] = None, kind: Optional[str] = None,
           metavar: Optional[str] = None, choices: Optional[tuple] = None):
    """A config field with its command-line flag described as data: the CLI builds its flags from
    these (``itaclip.cli.options``), so a field added here is a flag everywhere.

    ``flag`` defaults to ``--field-name``; ``kind`` says how the text is parsed: ``float``, ``int``,
    ``str``, ``float_or_none`` (a number or ``none``: :data:`NONE`), ``int_list`` (``8,16`` / ``none``),
    ``name_list`` (``grey,blur``), ``float_pair`` (``2.0,0.3`` / ``none``), ``off`` (a bool field whose
    flag turns it off, e.g. ``--no-closing``), ``switch`` (a bool field with a flag each way: ``--tlp`` /
    ``--no-tlp``) or ``method`` (a name of the method registry: the CLI lists them).
    """
    cli = {"help": help, "flag": flag, "kind": kind, "metavar": metavar, "choices": choices}
    return field(default=default, metadata={"cli": cli})


@dataclass(frozen=True)
class SegmenterConfig:
    """All options of the method. Defaults are the paper's shared settings (SPEC §5, "All").

    ``method`` picks the segmenter (a name of :func:`itaclip.list_methods`); build another method's
    config with ``build_config(preset, method=...)`` so its own defaults apply.
    """

    method: str = option("itaclip", "the segmenter: {methods}, with their authors' settings (docs/METHOD.md)",
                         kind="method")
    """The segmenter whose stages run (see itaclip.engine.methods)."""
    # --- encoder (SPEC §1) ---
    attention: str = option("q-q+k-k", f"'+'-joined self-self attention terms from {', '.join(ATTENTION_TERMS)} "
                            "(paper: q-q+k-k)", metavar="TERMS")
    """Attention of the last block and of the recorded maps: '+'-joined terms of q-k, q-q, k-k, v-v."""
    remove_ffn: bool = option(True, "keep the last block's feed-forward network (paper Table 3 ablation)",
                              flag="--keep-ffn", kind="off")
    """Drop the MLP of the last block (paper Table 3)."""
    intermediate_layers: tuple[int, ...] = option(
        (7, 8, 10), "1-indexed layers whose attention maps are fused into the last block (7,8,10; 'none')",
        kind="int_list", metavar="L1,L2")
    """1-indexed blocks whose self-self maps are averaged into the last block's map; () for none."""
    gaussian_std: float = option(5.0, "NACLIP's neighbourhood σ in patches (naclip, resclip; also the blur of "
                                 "ResCLIP's semantic feedback; 5)", metavar="S")
    """NACLIP's neighbourhood σ in patches (naclip, resclip) and the σ of the semantic feedback's blur."""
    res_cls: Optional[float] = option(None, "class-token weight added after the last block (scclip, sfp; default "
                                      "0.3, SC-CLIP on 24-block models 0.1); sfp's outlier factor is 5·W",
                                      kind="float", metavar="W")
    """SC-CLIP's / SFP's class-token residual weight; None: the authors' value for the model's depth."""
    kk_weight: float = option(0.08, "PEARL's weight of the centred k-k term in its last block (pearl; 0.08)",
                              metavar="A")
    """PEARL's ``alpha_kk``."""
    # --- feedback in the last block (ResCLIP's RCS and SFR; any method whose last block has attention logits) ---
    rcs_weights: Optional[tuple[float, float]] = option(
        None, "ResCLIP's residual attention: mix the mean attention of blocks 6-9 into the last block's as "
        "τ·((1-λ)·A + λ·A_rcs) ('none': off; on for resclip)", kind="float_pair", metavar="TAU,LAMBDA")
    """(τ, λ) of RCS; None: off."""
    sfr_thd: Optional[float] = option(
        None, "ResCLIP's semantic feedback: a first pass labels each window, pixels whose top query probability is "
        "below T become query 0, and a second pass attends along those labels ('none': off; on for resclip)",
        kind="float_or_none", metavar="T")
    """ResCLIP's ``temp_thd``; a value switches the semantic feedback refinement (SFR) on, None: off."""
    sfr_weights: tuple[float, float] = option((1.8, 0.7), "SFR's mix of the feedback into the last block's "
                                              "attention logits, τ·((1-λ)·logits + λ·feedback) (1.8,0.7)",
                                              kind="float_pair", metavar="TAU,LAMBDA")
    """(τ, λ) of SFR."""
    entity_decay: bool = option(True, "SFR: keep same-label tokens at full weight even when the straight path "
                                "between them leaves their label (ResCLIP's delete_same_entity off)",
                                flag="--no-entity-decay", kind="off")
    """SFR's decay of same-label pairs separated by another label (ResCLIP's ``delete_same_entity``)."""
    # --- text (SPEC §2) ---
    alpha: float = option(0.0, "auxiliary-text weight α in [0, 1]")
    """Auxiliary-text blend: t = (1-α)·t_name + α·t_aux (only when auxiliary texts are given)."""
    # --- image engineering (SPEC §3) ---
    image_engineering: bool = option(True, "encode only the crop itself (no greyscale, blur or flip views)",
                                     flag="--no-image-engineering", kind="off")
    views: tuple[str, ...] = option(VIEWS, f"augmented views to use, from {','.join(VIEWS)}",
                                    kind="name_list", metavar="V1,V2")
    """Augmented views used when image_engineering is on (the original crop is always used)."""
    lam: float = option(0.75, "image-engineering weight λ in [0, 1]", flag="--lambda", metavar="L")
    """λ: L = λ·L1 + (1-λ)·L2."""
    # --- sliding windows (SPEC §4) ---
    short_side: int = option(336, "resize the short side to N pixels before windowing", metavar="N")
    long_side_cap: int = 2048
    crop: int = option(224, "sliding-window size in pixels (224; 0: the whole image in one pass)", metavar="N")
    """Window side in pixels; 0: the whole resized image in one window."""
    stride: int = option(28, "sliding-window stride in pixels (paper: 28)", metavar="N")
    # --- refinement and post-processing ---
    pamr_steps: int = option(10, "PAMR iterations (0 disables refinement)", metavar="K")
    pamr_dilations: tuple[int, ...] = option((8, 16), "PAMR dilations (8,16)", kind="int_list", metavar="D1,D2")
    tlp: bool = option(False, "PEARL's text-aware Laplacian propagation of the similarity maps, after PAMR "
                       "(--tlp: on, --no-tlp: off; on for pearl)", kind="switch")
    """TLP (PEARL's refinement) at the image's size; any method may switch it on."""
    tlp_grid: int = option(80, "TLP's working grid: about N cells along each side (80)", metavar="N")
    logit_scale: float = option(40.0, "softmax temperature multiplier", metavar="S")
    prob_thd: float = option(0.0, "pixels whose top probability is below P become class 0", metavar="P")
    area_thd: Optional[float] = option(None, "zero foreground classes covering ≤ T of the foreground ('none': "
                                       "no area threshold)", kind="float_or_none", metavar="T")
    closing: bool = option(True, "skip the authors' 3x3 morphological closing of the label map",
                           flag="--no-closing", kind="off")
    """3×3 grey-level morphological closing of the label map (authors' code, not in the paper)."""
    # --- the guide model (ProxyCLIP, CorrCLIP) ---
    guide_weights: str = option(DEFAULT_GUIDE, "the DINO guide model of proxyclip and corrclip: dino_vitb8 (default), "
                                "dino_vits8, dino_vitb16, dino_vits16 (DINO's releases, downloaded once), timm:NAME, "
                                "hf-hub:timm/NAME or a DINO checkpoint file", metavar="NAME_OR_PATH")
    """DINO ViT steering ProxyCLIP's and CorrCLIP's attention (``itaclip.engine.weights.dino.load_guide``)."""
    proxy_beta: float = option(1.2, "ProxyCLIP's shift β: DINO similarities below β × their mean are masked "
                               "(proxyclip; 1.2)", metavar="B")
    proxy_gamma: float = option(3.0, "ProxyCLIP's scale γ of the shifted DINO similarities (proxyclip; 3.0)",
                                metavar="G")
    # --- execution (never changes fp32 results) ---
    batch_size: Optional[int] = option(None, "crops x views per encoder pass (default: 10 on CPU, 64 on GPU)",
                                       kind="int", metavar="N")
    """Crops × views encoded per forward pass; None: 10 on the CPU (fastest there, see
    docs/BENCHMARKS.md), 64 on a GPU."""
    precision: Precision = option("fp32", "fp32 (exact, default); fp16/bf16 autocast on GPU; int8 dynamic "
                                  "quantisation on CPU", choices=("fp32", "fp16", "bf16", "int8"))

    def __post_init__(self) -> None:
        self.validate()

    @property
    def attention_terms(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.attention.split("+"))

    def validate(self) -> None:
        """Raise :class:`ItaclipError` with a one-line message for any out-of-range option."""
        for f in dataclasses.fields(self):  # NaN passes every range check below, inf some: refuse both first
            value = getattr(self, f.name)
            _check(not isinstance(value, float) or math.isfinite(value),
                   f"{f.name} must be a finite number, got {value}")
        terms = self.attention_terms
        bad = [t for t in terms if t not in ATTENTION_TERMS]
        if bad or len(set(terms)) != len(terms):
            raise ItaclipError(
                f"attention {self.attention!r} is not a '+'-joined set of {', '.join(ATTENTION_TERMS)}"
            )
        _check(0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1], got {self.alpha}")
        _check(0.0 <= self.lam <= 1.0, f"lambda must be in [0, 1], got {self.lam}")
        bad_views = [v for v in self.views if v not in VIEWS]
        _check(not bad_views, f"unknown view(s) {bad_views}; choose from {', '.join(VIEWS)}")
        _check(self.gaussian_std > 0, f"gaussian std must be > 0, got {self.gaussian_std}")
        _check(self.crop >= 0, f"crop must be >= 0 (0: whole image), got {self.crop}")
        _check(self.stride > 0, f"stride must be > 0, got {self.stride}")
        _check(self.short_side > 0, f"short side must be > 0, got {self.short_side}")
        _check(self.long_side_cap > 0, f"long side cap must be > 0, got {self.long_side_cap}")
        _check(self.pamr_steps >= 0, f"PAMR steps must be >= 0, got {self.pamr_steps}")
        _check(
            len(self.pamr_dilations) > 0 and all(d > 0 for d in self.pamr_dilations),
            f"PAMR dilations must be positive integers, got {self.pamr_dilations}",
        )
        _check(self.logit_scale > 0, f"logit scale must be > 0, got {self.logit_scale}")
        _check(0.0 <= self.prob_thd <= 1.0, f"prob_thd must be in [0, 1], got {self.prob_thd}")
        _check(
            self.area_thd is None or 0.0 <= self.area_thd <= 1.0,
            f"area_thd must be in [0, 1], got {self.area_thd}",
        )
        _check(self.batch_size is None or self.batch_size > 0, f"batch size must be > 0, got {self.batch_size}")
        _check(
            self.precision in ("fp32", "fp16", "bf16", "int8"),
            f"precision must be fp32, fp16, bf16 or int8, got {self.precision!r}",
        )
        _check(self.proxy_beta >= 0, f"proxy beta must be >= 0, got {self.proxy_beta}")
        _check(self.proxy_gamma > 0, f"proxy gamma must be > 0, got {self.proxy_gamma}")
        _check(bool(str(self.guide_weights).strip()), "guide weights must name a DINO model or file")
        _check(
            all(layer >= 1 for layer in self.intermediate_layers),
            f"intermediate layers are 1-indexed, got {self.intermediate_layers}",
        )
        _check(self.res_cls is None or self.res_cls >= 0, f"res_cls must be >= 0, got {self.res_cls}")
        _check(self.tlp_grid >= 1, f"TLP grid must be >= 1, got {self.tlp_grid}")
        _check(self.sfr_thd is None or 0.0 <= self.sfr_thd <= 1.0, f"sfr_thd must be in [0, 1], got {self.sfr_thd}")
        for name in ("rcs_weights", "sfr_weights"):
            weights = getattr(self, name)
            if weights is None and name == "rcs_weights":
                continue
            _check(weights is not None and len(weights) == 2 and all(map(math.isfinite, weights))
                   and weights[0] > 0 and 0.0 <= weights[1] <= 1.0,
                   f"{name} must be TAU,LAMBDA with TAU > 0 and LAMBDA in [0, 1], got {weights}")

    def switched_on(self) -> set[str]:
        """Fields read by the refinements this config switches on (:data:`SWITCHED_FIELDS`)."""
        return {name for switch, names in SWITCHED_FIELDS.items()
                if getattr(self, switch) is not None and getattr(self, switch) is not False for name in names}

    def replace(self, **overrides) -> "SegmenterConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **overrides)


#: Refinements any method may switch on: the field that switches one on (True, or any value but
#: None) → the fields it then reads. While one is off its fields change nothing.
SWITCHED_FIELDS = {
    "tlp": ("tlp", "tlp_grid"),
    "rcs_weights": ("rcs_weights",),
    "sfr_thd": ("sfr_thd", "sfr_weights", "entity_decay", "gaussian_std"),
}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ItaclipError(message)


class _ExplicitNone:
    """See :data:`NONE`."""

    def __repr__(self) -> str:
        return "NONE"


#: An explicit "no value" for an optional option (``area_thd=NONE``: no area threshold, even where
#: the preset has one); ``None`` in :func:`build_config` means "not given".
NONE = _ExplicitNone()
