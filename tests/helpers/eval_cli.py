"""Running ``itaclip eval`` in-process and reading what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from itaclip.cli import main

FAST = ["--short-side", "224", "--stride", "112", "--pamr-steps", "1", "--device", "cpu", "--no-progress"]

def run_eval(*args) -> int:
    return main(["eval", *map(str, args)])

def results_of(out: Path, dataset: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"{dataset}-*/results.json"))]

def only_result(out: Path, dataset: str) -> dict:
    found = results_of(out, dataset)
    assert len(found) == 1, [r["run_dir"] for r in found]
    return found[0]

def confusion_of(result: dict) -> np.ndarray:
    return np.load(Path(result["run_dir"]) / "confusion.npy")
