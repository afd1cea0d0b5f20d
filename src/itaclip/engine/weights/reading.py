"""Reading checkpoint files safely: tensors only, wherever the format allows it."""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import ItaclipError, one_line

log = logging.getLogger(__name__)


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip holding compiled code (``*/code/``) besides the tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def absent_file_error(path: str) -> ItaclipError:
    """The refusal of a weights path that names no regular file: absent, or a device, pipe or socket
    (``/dev/zero`` exists but holds no checkpoint)."""
    if os.path.exists(path) and not os.path.isfile(path):
        return ItaclipError(f"weights {path} is not a regular file (a device, pipe or socket): pass a "
                            "checkpoint file or a model folder")
    return ItaclipError(f"weights file {path} does not exist")


def unreadable_reason(path: Path, exc: Exception, kind: str = "checkpoint") -> str:
    """Why a weights file could not be read, in words: an empty file, or a file in none of the formats
    weights come in (a zip for torch.save and TorchScript, a pickle for old torch.save files, the
    .safetensors suffix) — an image or a web page saved under the weights' name — rather than
    torch's unpickler message; otherwise that message."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        head = None
    if head == b"":
        return "the file is empty (an interrupted download?)"
    if head is not None and path.suffix != ".safetensors" and not head.startswith((b"PK", b"\x80")):
        return (f"not a {kind}: not a PyTorch, TorchScript or .safetensors file (it starts with {head!r}; "
                "a web page or an image saved under its name?)")
    return f"not a {kind} of tensors only ({one_line(exc, limit=300)})"


def read_state_dict(path: Path, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, without running code from it where the format allows.

    ``.safetensors`` and ``torch.save`` files are read as data only (``weights_only=True``; a
    pickle that asks for anything but tensors is refused). A TorchScript archive (what OpenAI
    ships) contains compiled code by nature: it is loaded with ``torch.jit.load``, with a
    warning unless ``trusted`` (a download whose checksum was verified). Training checkpoints
    (``{"state_dict": ...}``, ``module.`` prefixes) are unwrapped.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif is_torchscript(path):
            if not trusted:
                log.warning("itaclip: %s is a TorchScript archive: loading it runs the code it contains; "
                            "load only archives you trust (state dicts and .safetensors files hold no code)", path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice is not the user's concern
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and format errors: all "not a checkpoint we can read"
        raise ItaclipError(f"cannot load weights {path}: {unreadable_reason(path, exc, 'CLIP checkpoint')}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ItaclipError(f"cannot load weights {path}: it holds no state dict")
    state = {key.removeprefix("module."): value for key, value in state.items() if isinstance(value, torch.Tensor)}
    for key in ("input_resolution", "context_length", "vocab_size"):  # TorchScript attributes
        state.pop(key, None)
    return state


def count_blocks(state: dict, prefix: str) -> int:
    """Number of numbered blocks under ``prefix`` (``visual.transformer.resblocks.``)."""
    return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})
