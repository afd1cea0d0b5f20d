"""Start-up time: how long a fresh process takes to a loaded segmenter, against ``import torch``.

Each measurement is a new Python process (as a user's command starts): one that only imports torch,
and one that imports torch, then itaclip's engine, then loads the weights into a
:class:`~itaclip.engine.predictor.Segmenter`. Medians over a few runs, since the machine's load
varies between them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

#: Libraries whose import dominates start-up when something loads them (open_clip's package
#: import loads the other three: timm, torchvision, and transformers when it is installed).
HEAVY_LIBRARIES = ("open_clip", "timm", "torchvision", "transformers")

_CHILD = """
import json, sys, time
start = time.perf_counter()
import torch
after_torch = time.perf_counter()
from itaclip.engine.predictor import Segmenter
after_itaclip = time.perf_counter()
Segmenter(weights=sys.argv[1], device=sys.argv[2] or None, text_cache=False)
ready = time.perf_counter()
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[3].split(",")))
print(json.dumps(dict(torch_s=after_torch - start, itaclip_s=after_itaclip - after_torch,
                      weights_s=ready - after_itaclip, libraries=loaded)))
"""


def _environment() -> dict:
    """The children import this process's itaclip (a source tree on PYTHONPATH included)."""
    package_root = str(Path(__file__).resolve().parents[2])
    paths = [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _timed(args: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"start-up run failed: {last}")
    return seconds, done.stdout


def bench_startup(weights: str, device: Optional[str], runs: int = 3) -> dict:
    """Medians over ``runs`` rounds of three fresh processes: ``import torch`` alone; torch +
    itaclip + the weights loaded (wall clock of each process, interpreter start included; this one
    also split into its parts as measured inside it); and torch + the heavy libraries that the
    second one loaded, imported alone (what they cost, whoever imports them)."""
    env = _environment()
    torch_alone, ready, libraries, parts = [], [], [], []
    for _ in range(runs):
        torch_alone.append(_timed(["-c", "import torch"], env)[0])
        seconds, out = _timed(["-c", _CHILD, weights, device or "", ",".join(HEAVY_LIBRARIES)], env)
        ready.append(seconds)
        parts.append(json.loads(out.strip().splitlines()[-1]))
        libraries.append(_timed(["-c", "import " + ", ".join(["torch", *parts[-1]["libraries"]])], env)[0])
    median = statistics.median
    return dict(
        runs=runs,
        import_torch_s=median(torch_alone),
        import_libraries_s=median(libraries),
        ready_s=median(ready),
        torch_s=median(p["torch_s"] for p in parts),
        itaclip_s=median(p["itaclip_s"] for p in parts),
        weights_s=median(p["weights_s"] for p in parts),
        libraries=parts[-1]["libraries"],
    )


def startup_line(record: dict) -> str:
    """The report's line: the time to a loaded segmenter, against torch alone and torch with the
    libraries the weights needed."""
    libraries = ", ".join(record["libraries"])
    torch_s, ready_s = record["import_torch_s"], record["ready_s"]
    libraries_s = record["import_libraries_s"]
    with_libraries = f"; `import torch, {libraries}` {libraries_s:.2f} s" if libraries else ""
    return (f"Start-up (fresh processes, median of {record['runs']}): `import torch` {torch_s:.2f} s"
            f"{with_libraries}; to a loaded segmenter {ready_s:.2f} s "
            f"(+{ready_s - torch_s:.2f} s over torch: "
            f"itaclip's modules {record['itaclip_s']:.2f} s, the weights with their libraries "
            f"{record['weights_s']:.2f} s).")
