"""What decides a prediction, as plain JSON data: the identity that `itaclip segment`'s manifest and
`itaclip eval`'s run directories compare, so that outputs of other settings are never mixed in."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Union

from .config import SegmenterConfig
from .methods import unused_fields
from .text import TEXT_FEATURE_VERSION
from .vocabulary import Vocabulary

#: SegmenterConfig fields that never change fp32 predictions (batching is exact within rounding:
#: tests/test_engine_exact.py compares batch 1 with batch 64).
EXECUTION_ONLY = ("batch_size",)


def file_digest(path: Union[str, os.PathLike], chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(weights: Union[str, os.PathLike]) -> str:
    """What decides the loaded weights, as a string: names as they are (``ViT-B/16``,
    ``ViT-B-16:laion2b_s34b_b88k``, hub ids), local files, ``NAME:PATH`` files and folders by the
    SHA-256 of their bytes (renames don't matter, edits do)."""
    text = os.fspath(weights)
    path = Path(os.path.expanduser(text))
    if path.is_file():
        return "sha256:" + file_digest(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            digest.update(f"{item.name}:{file_digest(item)}\n".encode())
        return "folder-sha256:" + digest.hexdigest()
    name, sep, rest = text.partition(":")
    if sep and rest and Path(os.path.expanduser(rest)).is_file():
        return f"{name}:sha256:{file_digest(Path(os.path.expanduser(rest)))}"
    return text


def prediction_settings(config: SegmenterConfig, vocabulary: Vocabulary, weights: Union[str, os.PathLike],
                        regions: Optional[dict] = None) -> dict:
    """Weights, every option that changes outputs, the vocabulary and the text-feature version;
    ``regions``: where the region maps come from (methods that read them), as JSON data."""
    options = dataclasses.asdict(config)
    for name in (*EXECUTION_ONLY, *unused_fields(config)):
        options.pop(name, None)
    if config.method == "itaclip":  # ITACLIP's identity stays what it was before there were other methods
        options.pop("method")
    if "guide_weights" in options:  # a guide model file counts by its bytes, as CLIP's weights do
        options["guide_weights"] = weights_identity(options["guide_weights"])
    settings = {
        "weights": weights_identity(weights),
        "config": options,
        "vocabulary": {
            "classes": [list(names) for names in vocabulary.classes],
            "has_background": vocabulary.has_background,
            "aux_texts": list(vocabulary.aux_texts) if vocabulary.aux_texts is not None else None,
        },
        "text_feature_version": TEXT_FEATURE_VERSION,
    }
    if regions is not None:
        settings["regions"] = regions
    return plain(settings)


def plain(data: dict) -> dict:
    """JSON-normalised copy (tuples → lists, keys sorted), so a value read back compares equal."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def settings_hash(settings: dict) -> str:
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
