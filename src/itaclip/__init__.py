"""itaclip: training-free open-vocabulary semantic segmentation with ITACLIP.

    import itaclip
    seg = itaclip.Segmenter(weights="ViT-B/16", preset="voc21")
    seg.set_vocabulary()
    result = seg.segment("photo.jpg")   # result.labels, result.probs, result.class_names

Names are imported on first use, so ``import itaclip`` (and ``itaclip --help``) does not load
PyTorch until a model is needed.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name → module that defines it
_EXPORTS = {
    "PRESETS": "methods.itaclip", "SegmenterConfig": "config", "build_config": "methods", "get_preset": "methods",
    "list_presets": "methods", "list_methods": "methods", "get_method": "methods", "ItaclipError": "errors",
    "list_models": "weights", "load_clip": "weights", "Backbone": "weights", "load_backbone": "weights",
    "SegmentationResult": "predictor", "Segmenter": "predictor", "Vocabulary": "vocabulary",
    "load_aux_texts": "vocabulary", "load_classes": "vocabulary", "resolve_vocabulary": "vocabulary",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".engine.{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'itaclip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
