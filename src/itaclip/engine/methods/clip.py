"""Vanilla CLIP (Radford et al., ICML 2021): every patch token of the unmodified network."""

from __future__ import annotations

from .base import LastBlock, Method
from .codebases import NACLIP_DEFAULTS, naclip_presets

METHOD = Method(
    name="clip",
    title="CLIP",
    paper="Radford et al., Learning Transferable Visual Models From Natural Language Supervision (ICML 2021)",
    code="NACLIP's code with arch 'vanilla', attention 'vanilla'",
    changes="nothing: every patch token of the unmodified network, through ln_post and the projection",
    encoder=LastBlock(("q-k",), residual=True, ffn=True),
    # Published vanilla baselines use no PAMR (NACLIP's code would refine unless --pamr off).
    defaults=dict(NACLIP_DEFAULTS, pamr_steps=0),
    presets=naclip_presets("NACLIP config (vanilla CLIP, no PAMR)"),
    # None recorded: the literature's vanilla baselines use other protocols than these presets.
    published={},
)
