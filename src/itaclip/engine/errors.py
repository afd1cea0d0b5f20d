"""The one exception type users see: a message that says what is wrong and how to fix it."""


class ItaclipError(Exception):
    """A user-facing error (bad input, missing weights, bad option). The CLI prints it on one line."""


def one_line(exc: BaseException) -> str:
    """An exception as one line for logs and per-item error reports: the message itself for an
    :class:`ItaclipError`, ``OSError``'s reason and file, the last non-blank line of multi-line
    messages (OpenCV's errors put the reason last), the type name otherwise."""
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
