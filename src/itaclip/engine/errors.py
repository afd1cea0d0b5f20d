"""The one exception type users see: a message that says what is wrong and how to fix it."""

from __future__ import annotations

from typing import Optional


class ItaclipError(Exception):
    """A user-facing error (bad input, missing weights, bad option). The CLI prints it on one line."""


def one_line(exc: BaseException, limit: Optional[int] = None) -> str:
    """An exception as one line for logs and per-item error reports: the message itself for an
    :class:`ItaclipError`, ``OSError``'s reason and file, the last non-blank line of multi-line
    messages (OpenCV's errors put the reason last), the type name otherwise. ``limit``: shorten a
    longer line (a library's message quoted in ours) at a word boundary, marked with "…"."""
    text = _one_line(exc)
    if limit is None or len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + " …"


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory (try a smaller image, fewer classes or a larger --stride)"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename is not None else ""
        return f"{exc.strerror}{where}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    if isinstance(exc, ItaclipError):
        return text or "error"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
