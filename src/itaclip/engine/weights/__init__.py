"""Weights: every form of CLIP checkpoint a user has, loaded safely into the engine's layout.

* :mod:`.backbone` — what a loader returns (:class:`Backbone`: model, tokenizer, normalisation);
* :mod:`.reading` — reading checkpoint files as tensors only;
* :mod:`.support` — which architectures the engine runs, decided from configs before a download;
* :mod:`.openai`, :mod:`.openclip`, :mod:`.hf_clip` — one route per source;
* :mod:`.factory` — the dispatcher (``load_backbone``) that picks the route from the form;
* :mod:`.random` — random models in OpenAI's layout for tests and benchmarks (not a loader).

A second kind of backbone (a guide model such as DINO) or a region generator is another route
module plus its own entry point beside ``load_backbone``.
"""

from __future__ import annotations

from .backbone import CLIP_MEAN, CLIP_STD, DEFAULT_WEIGHTS, Backbone, text_tower_fingerprint
from .factory import list_models, load_backbone, load_clip

__all__ = ["CLIP_MEAN", "CLIP_STD", "DEFAULT_WEIGHTS", "Backbone", "list_models", "load_backbone", "load_clip",
           "text_tower_fingerprint"]
