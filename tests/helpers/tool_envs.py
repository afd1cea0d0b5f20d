"""The annotation tools' own virtual environments (Label Studio, datumaro): each pins libraries that
must not enter itaclip's environment, so a shell script beside the tests makes it once, outside the
clone, and the tests run the tool's code there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def tool_venv(env_var: str, folder_name: str, script: str, minutes: int, *needed: str) -> Path:
    """The environment ``tests/<script>`` made: ``$env_var``, else the shared cache folder. Missing (or
    without ``needed`` entries), the test is skipped — except on CI (``CI`` set), where it fails."""
    folder = Path(os.environ.get(env_var) or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "itaclip-tests" / folder_name)
    if not (folder / "itaclip-complete").is_file() or not all((folder / entry).exists() for entry in needed):
        message = f"no environment at {folder}: run tests/{script} once (about {minutes} min, needs PyPI)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder
