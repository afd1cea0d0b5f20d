"""``itaclip eval --help`` and ``itaclip bench --help`` answer without loading PyTorch, open_clip or
OpenCV: their modules import the heavy libraries inside the functions that run."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "open_clip", "cv2")
LOADED = "import sys; print('loaded:', *sorted({m.split('.')[0] for m in sys.modules} & set(%r)))" % (HEAVY,)


def _heavy_after(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", f"{code}\n{LOADED}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.splitlines()[-1]
    assert last.startswith("loaded:"), proc.stdout
    return last[len("loaded:"):].strip()


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_help_imports_no_heavy_library(command):
    code = (
        "from itaclip.cli import main\n"
        "try:\n"
        f"    main([{command!r}, '--help'])\n"
        "except SystemExit:\n"
        "    pass"
    )
    assert _heavy_after(code) == ""
