"""Progress of long work, in a terminal and in a log file alike.

In a terminal a tqdm bar; otherwise (output redirected to a file, ``| tee log``, a batch system)
one plain line every ``interval`` seconds and at the end: ``images 12/300 (4%) 0.8/s ETA 6m00s``.
tqdm alone writes nothing when stderr is not a terminal (``disable=None``) or carriage-return
updates that make a log unreadable, hence the small line logger here.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class LineProgress:
    """tqdm's small interface (``update``, ``set_postfix_str``, ``write``, ``close``) as log lines."""

    def __init__(self, total: Optional[int], desc: str, unit: str, prefix: str = "itaclip",
                 interval: float = 10.0, stream: Optional[TextIO] = None, initial: int = 0):
        self.total, self.desc, self.unit, self.prefix = total, desc, unit, prefix
        self.interval = interval
        self.stream = stream or sys.stderr
        self.n = self.initial = initial
        """``initial`` units were done before (a resumed run): they count as done, not in the rate."""
        self.postfix = ""
        self.shown: Optional[tuple[int, str]] = None
        """The count and postfix of the last line written: ``close`` does not write it again."""
        self.start = self.last = time.perf_counter()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = (self.n - self.initial) / elapsed
        text = f"{self.prefix}: {self.desc} {self.n}"
        if self.total:
            text += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
        text += " " + rate_text(rate, self.unit)
        if self.total and rate > 0 and self.n < self.total:
            text += f" ETA {_duration((self.total - self.n) / rate)}"
        elif self.n:
            text += f" in {_duration(elapsed)}"
        return text + (f" {self.postfix}" if self.postfix else "")

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            self._emit()

    def _emit(self) -> None:
        self.write(self.line())
        self.shown = (self.n, self.postfix)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def write(self, message: str, file: Optional[TextIO] = None) -> None:
        print(message, file=file or self.stream, flush=True)

    def close(self) -> None:
        if self.n > self.initial and self.shown != (self.n, self.postfix):
            self._emit()


def rate_text(per_second: float, unit: str, units: str = "") -> str:
    """``2.31 img/s`` (``units``, default ``unit``, per second), or the seconds per ``unit`` below one
    per second (``43.2 s/img``), so that a slow run never reads ``0.00 img/s``."""
    if 0 < per_second < 1:
        return f"{_figure(1 / per_second)} s/{unit}"
    return f"{_figure(per_second)} {units or unit}/s"


def _figure(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def plural(count: int, noun: str) -> str:
    """``1 image``, ``3 images``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def progress(total: Optional[int], desc: str, unit: str, prefix: str = "itaclip", interval: float = 10.0,
             initial: int = 0, lines: bool = False):
    """A tqdm bar when stderr is a terminal, else (or with ``lines``: processes that share a terminal)
    a :class:`LineProgress`."""
    if sys.stderr.isatty() and not lines:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, initial=initial)
    return LineProgress(total, desc, unit, prefix, interval, initial=initial)
