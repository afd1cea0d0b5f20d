"""Writing files so that readers never see half of one: the one atomic-write helper of itaclip.

Every output (label maps, overlays, probabilities, exports, manifests, caches, eval results) goes
through :func:`atomic_write_bytes`: a temporary file in the same folder, then :func:`os.replace`.
Files get the permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask), not
``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional, Union

import numpy as np

from .errors import ItaclipError

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    # The umask can only be read by setting it; set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a new file as ``open()`` would create it: 0o666 less the current umask."""
    return 0o666 & ~_umask()


@contextmanager
def atomic_open(path: PathLike, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary handle whose file appears at ``path`` only when the block ends without an error
    (files too large to hold in memory, such as a run's dataset-level exports, are streamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: PathLike, data: bytes, *, durable: bool = False) -> None:
    """Write a file so that readers see either the old file or the complete new one; ``durable``
    also flushes it to the disk before it replaces the old one (caches that must survive a crash)."""
    with atomic_open(path, durable=durable) as handle:
        handle.write(data)


#: Free space an output folder must have before a run starts (a few label maps and overlays).
MIN_FREE_BYTES = 32 * 1024 * 1024


def check_output_folder(folder: PathLike, min_free: int = MIN_FREE_BYTES) -> None:
    """Before any work: ``folder`` can be created, is a folder, can be written and has at least
    ``min_free`` bytes free; otherwise a one-line :class:`ItaclipError`."""
    from .errors import ItaclipError

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ItaclipError(f"output folder {folder} is a file: choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:  # a private name: runs sharing --out do not collide
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise ItaclipError(f"cannot write to output folder {folder}: {exc.strerror or exc}") from None
    if free < min_free:
        raise ItaclipError(f"output folder {folder} has only {free / 2**20:.1f} MiB free: free some space "
                           "or choose another folder")


@contextmanager
def writing(path: PathLike, *, resumable: bool = False) -> Iterator[None]:
    """Turn a failed write of ``path`` (full disk, no permission, read-only disk) into a one-line
    :class:`ItaclipError` that names the file and what to do; ``resumable``: the finished work is
    kept and the same command continues after it."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            advice = "free some space and run the same command again" + (
                ": finished work is kept and resumed" if resumable else "")
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            advice = "choose a folder you can write to"
        else:
            advice = "check the output folder"
        raise ItaclipError(f"cannot write {path}: {reason}; {advice}") from None


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(obj: Any, *, indent: int | None = None) -> bytes:
    """UTF-8 JSON with a final newline; NaN/inf are refused (they are not JSON)."""
    separators = None if indent else (",", ":")
    return (json.dumps(obj, ensure_ascii=False, indent=indent, separators=separators, allow_nan=False)
            + "\n").encode("utf-8")


def write_json(path: PathLike, obj: Any, *, indent: int | None = 2) -> None:
    atomic_write_bytes(path, json_bytes(obj, indent=indent))


def read_json(path: PathLike) -> Any:
    """A JSON file's value; ``None`` if it cannot be read or parsed (callers treat it as absent)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8/uint16 greyscale or an RGB array."""
    import cv2

    if array.ndim == 3:
        array = np.ascontiguousarray(array[:, :, ::-1])  # OpenCV writes BGR
    ok, buffer = cv2.imencode(".png", array)
    if not ok:  # pragma: no cover - OpenCV always encodes these dtypes
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def encode_indexed_png(labels: np.ndarray, colors: np.ndarray) -> bytes:
    """PNG bytes of a uint8 index map as a palette ("P") image: the stored values are the indices
    (a reader such as ``np.asarray(PIL.Image.open(path))`` gets them back), ``colors`` ((N, 3)
    uint8, N <= 256) is how viewers show them. Pillow writes it: OpenCV cannot write palette PNGs."""
    from PIL import Image

    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    image.putpalette(np.asarray(colors, dtype=np.uint8).ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: PathLike, array: np.ndarray, palette: Optional[np.ndarray] = None) -> None:
    """Atomically write a greyscale label map (uint8/uint16) or an RGB image as PNG; with
    ``palette``, a uint8 label map is written as a palette PNG (:func:`encode_indexed_png`)."""
    indexed = palette is not None and array.ndim == 2 and array.dtype == np.uint8
    atomic_write_bytes(path, encode_indexed_png(array, palette) if indexed else encode_png(array))


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_npz(path: PathLike, **arrays: np.ndarray) -> None:
    """Atomically write a compressed ``.npz``."""
    atomic_write_bytes(path, npz_bytes(**arrays))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
