"""The method registry: the one list of the segmenters the engine runs, and the factory of their configs.

Every method is one module here holding one :class:`~itaclip.engine.methods.base.Method` record (its
stages, defaults, presets and published figures); the list below is the registry. Everything that
names methods — the CLI's ``--method`` choices and help, ``itaclip presets``, the demo's list, the
bench modes, ``eval --compare`` and the tests — reads it, so a new method is a new module and a line
here. Types live in ``base`` (bottom), records above them, this factory on top: no cycles.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from ..config import DEFAULT_WEIGHTS, NONE, SWITCHED_FIELDS, SegmenterConfig
from ..errors import ItaclipError
from . import clearclip, clip, corrclip, itaclip, maskclip, naclip, pearl, proxyclip, resclip, scclip, sclip, sfp
from .base import Method, Preset

#: name → record, in the order users see them (ITACLIP first, then by publication).
METHODS: dict[str, Method] = {m.name: m for m in (
    itaclip.METHOD, clip.METHOD, maskclip.METHOD, sclip.METHOD, clearclip.METHOD, naclip.METHOD,
    scclip.METHOD, resclip.METHOD, sfp.METHOD, pearl.METHOD,
    proxyclip.METHOD, corrclip.METHOD,
)}
#: The method a config runs when none is named.
DEFAULT_METHOD = "itaclip"
#: Config fields some method reads for its own stages; the others ignore them.
METHOD_FIELDS = frozenset(name for m in METHODS.values() for name in m.reads)
#: Fields of the refinements any method may switch on (TLP, RCS, SFR); ignored while off.
REFINEMENT_FIELDS = frozenset(name for names in SWITCHED_FIELDS.values() for name in names)


def list_methods() -> list[str]:
    """Names of every method, in display order."""
    return list(METHODS)


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ItaclipError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def list_presets(method: str = DEFAULT_METHOD) -> list[str]:
    """Names of the built-in presets of ``method`` (ITACLIP's by default)."""
    return sorted(get_method(method).presets)


def get_preset(name: str, method: Optional[str] = None) -> Preset:
    """The preset ``name`` of ``method`` (ITACLIP's presets when ``method`` is None)."""
    presets = get_method(method or DEFAULT_METHOD).presets
    try:
        return presets[name]
    except KeyError:
        owner = "" if method in (None, DEFAULT_METHOD) else f" for method {method!r}"
        raise ItaclipError(f"unknown preset {name!r}{owner}; choose from {', '.join(sorted(presets))}") from None


def default_weights(method: str) -> str:
    """The CLIP weights a method runs when the user names none: its authors' (CorrCLIP: MetaCLIP
    ViT-B/16), else the library's default (OpenAI ViT-B/16)."""
    return get_method(method).default_weights or DEFAULT_WEIGHTS


def encoder_options(config: SegmenterConfig) -> dict:
    """Keyword arguments of the config's window encoder."""
    return get_method(config.method).encoder.options(config)


def unused_fields(config: SegmenterConfig) -> set[str]:
    """Config fields the config's method ignores — other methods' own, and those of refinements it
    leaves off — left out of run identities and ``itaclip presets``."""
    return set((METHOD_FIELDS | REFINEMENT_FIELDS) - set(get_method(config.method).reads) - config.switched_on())


def _refused(method: Method, names) -> Optional[str]:
    """One line for options that configure another method's stages, or None."""
    for owner in METHODS.values():
        wrong = [n for n in owner.exclusive if n in names and n not in method.reads]
        if wrong:
            flags = ", ".join(_flag(n) for n in wrong)
            owners = [m.name for m in METHODS.values() if set(wrong) <= set(m.reads)]
            return (f"options that configure {owner.exclusive_scope} ({flags}) apply to method"
                    f"{'s' if len(owners) > 1 else ''} {' and '.join(map(repr, owners))}, not {method.name!r}")
    return None


def _meaningless(method: Method, config: SegmenterConfig) -> Optional[str]:
    """One line for a combination the method cannot run, or None."""
    if config.crop == 0 and method.whole_image is None:
        return (f"crop 0 (--crop 0: the whole image in one pass) does not apply to method {method.name!r}: "
                "its authors' pipeline runs on sliding windows only; give a window size such as --crop 336")
    for name, reason in method.refused.items():
        if getattr(config, name) is not None:
            return f"{_flag(name)} does not apply to method {method.name!r}: {reason}"
    for name in method.requires:
        if getattr(config, name) is None:
            return f"method {method.name!r} needs {_flag(name)} (its authors' code has no 'off' for it)"
    if config.rcs_weights is not None or config.sfr_thd is not None:
        reason = method.encoder.no_feedback
        if reason:
            return (f"ResCLIP's residual attention and semantic feedback ({_flag('rcs_weights')}, "
                    f"{_flag('sfr_thd')}) mix the last block's attention; method {method.name!r} cannot take them: "
                    f"{reason}")
    return None


def _flag(name: str) -> str:
    """``--keep-ffn / remove_ffn``: how the CLI and the Python API spell a config field."""
    cli = SegmenterConfig.__dataclass_fields__[name].metadata.get("cli", {})
    flag = cli.get("flag") or "--" + name.replace("_", "-")
    return f"{flag} / {name}"


def check_config(config: SegmenterConfig) -> None:
    """Refuse a config whose method is unknown, that sets another method's exclusive options (away
    from their defaults) or a combination its method cannot run (one line each): a config built with
    ``replace`` is held to the factory's rules."""
    method = get_method(config.method)
    changed = [f.name for f in dataclasses.fields(config) if getattr(config, f.name) != f.default]
    message = _refused(method, changed) or _meaningless(method, config)
    if message:
        raise ItaclipError(message)


def build_config(preset: Optional[str] = None, **overrides) -> SegmenterConfig:
    """The method's own defaults first (``method=``, ITACLIP's when absent), then the method's
    preset, then explicit overrides (``None`` values are ignored; :data:`~itaclip.engine.config.NONE`
    sets ``None``)."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SegmenterConfig)}
    if unknown:
        raise ItaclipError(f"unknown option(s): {', '.join(sorted(unknown))}")
    method = get_method(overrides.get("method") or DEFAULT_METHOD)
    message = _refused(method, [name for name, value in overrides.items() if value is not None])
    if message:
        raise ItaclipError(message)
    values = dict(method.defaults)
    if preset:
        values.update(get_preset(preset, method.name).overrides)
    values.update({k: None if v is NONE else v for k, v in overrides.items() if v is not None})
    try:
        config = SegmenterConfig(**values)
    except TypeError as exc:  # wrong type passed from Python
        raise ItaclipError(str(exc)) from None
    check_config(config)
    return config
