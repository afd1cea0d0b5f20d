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


# ------------------------------------------------------------------------------------- start-up

#: Libraries that cost seconds to import and that a plain run of an OpenAI-layout checkpoint does
#: not use itself (open_clip's package import loads them: see docs/BENCHMARKS.md, "Start-up").
NOT_OURS = ("timm", "torchvision", "transformers")


def test_engine_and_segment_command_import_no_model_library():
    """itaclip's modules load open_clip and its libraries only when weights are loaded: importing the
    engine, the predictor and the segment command (and parsing its arguments) loads none of them."""
    code = (
        "import itaclip, itaclip.engine.predictor, itaclip.cli.segment\n"
        "from itaclip.cli import parse_args\n"
        "parse_args(['segment', 'a.png', '--out', 'out'])\n"
        "import sys\n"
        "libraries = {'open_clip', 'torchvision', 'timm', 'transformers'}\n"
        "loaded = {m.split('.')[0] for m in sys.modules} & libraries\n"
        "print('model libraries:', *sorted(loaded))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "model libraries:"


_PLAIN_RUN = """
import json, sys

first_importers = {}


class Recorder:
    \"\"\"Notes the modules on the stack when a library of NOT_OURS is first imported.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name in NOT_OURS and name not in first_importers:
            frame, stack = sys._getframe(1), []
            while frame is not None:
                stack.append(frame.f_globals.get("__name__", ""))
                frame = frame.f_back
            first_importers[name] = stack
        return None


NOT_OURS = sys.argv[4].split(",")
sys.meta_path.insert(0, Recorder())
from itaclip.cli import main

code = main(["segment", sys.argv[1], "--weights", sys.argv[2], "--out", sys.argv[3], "--classes", "cat, dog",
             "--no-image-engineering", "--pamr-steps", "0", "--device", "cpu", "--short-side", "64"])
print(json.dumps(dict(code=code, loaded=sorted({m.split(".")[0] for m in sys.modules} & set(NOT_OURS)),
                      importers={name: [m for m in stack if m.startswith(("itaclip", "open_clip"))]
                                 for name, stack in first_importers.items()})))
"""


@pytest.fixture(scope="module")
def plain_run(tiny_ckpt, tmp_path_factory):
    """A plain `itaclip segment` of an OpenAI-layout checkpoint, views off, in a fresh process."""
    import json

    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("plain-run")
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(folder / "photo.png")
    proc = subprocess.run([sys.executable, "-c", _PLAIN_RUN, str(folder / "photo.png"), str(tiny_ckpt),
                           str(folder / "out"), ",".join(NOT_OURS)],
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0
    return result


def test_model_libraries_come_only_with_open_clip(plain_run):
    """Whatever of timm, torchvision and transformers a plain run loads, open_clip's own package
    import loaded it (it imports them eagerly), never itaclip's code: with views off nothing of
    itaclip imports torchvision, and nothing imports timm or transformers for OpenAI-layout weights."""
    for name, importers in plain_run["importers"].items():
        assert importers and importers[0].startswith("open_clip"), (name, importers)
        assert any(m == "open_clip" for m in importers), (name, importers)
