"""Which device a model runs on."""

from __future__ import annotations

from typing import Optional

import torch

from .errors import ItaclipError


def resolve_device(device: Optional[str | torch.device] = None) -> torch.device:
    """``None`` → cuda if available else cpu; an unavailable device is an :class:`ItaclipError`."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ItaclipError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ItaclipError(f"device {device} is not available: no CUDA GPU found (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ItaclipError(
                f"device {device} is not available: only {torch.cuda.device_count()} CUDA GPU(s) found"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ItaclipError(f"device {device} is not available: this PyTorch finds no Apple GPU (use --device cpu)")
    elif dev.type != "cpu":
        raise ItaclipError(f"unsupported device {device!r}: use cpu, cuda or cuda:N")
    return dev
