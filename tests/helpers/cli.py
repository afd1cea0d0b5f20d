"""Running ``itaclip segment`` in-process where it must refuse."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

import pytest

from itaclip.cli import main


def assert_segment_refuses(capsys, out: Path, image: Path, weights: Path, extra: Sequence[str], message: str, *,
                           by_argparse: bool) -> None:
    """``itaclip segment IMAGE`` with ``extra`` options stops with ``message`` in its last line and no
    traceback: exit code 2, or argparse's own exit (``by_argparse``: it exits by itself)."""
    with pytest.raises(SystemExit) if by_argparse else contextlib.nullcontext():
        code = main(["segment", str(image), "--classes", "cat, dog", "--out", str(out), "--weights", str(weights),
                     "--device", "cpu", *extra])
        assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)
