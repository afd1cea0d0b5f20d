"""The user-facing predictor: build once, set a vocabulary, segment many images.

    seg = itaclip.Segmenter(weights="ViT-B/16", preset="voc21", device="cuda")
    seg.set_vocabulary()                      # the preset's classes (or any list / file)
    result = seg.segment("photo.jpg")         # labels (H, W), probs (C, H, W), class_names

Data flow per image: resize → sliding windows → views → window encoder → similarity maps →
view fusion → canvas → resize to the image → refinements (PAMR, TLP) → class probabilities → labels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .config import SegmenterConfig
from .devices import resolve_device
from .encoders import WindowContext
from .errors import ItaclipError
from .images import ImageInput, to_rgb_array
from .methods import build_config, check_config, get_method, get_preset
from .postprocess import apply_area_threshold, class_probabilities, label_map
from .preprocess import image_windows, normalize, resize_image, window_padding
from .refine import refinements
from .text import TEMPLATES, TEXT_FEATURE_VERSION, blend_aux, template_features
from .text_store import TextFeatureStore
from .views import add_upsampled, fuse_patch_logits, make_views, view_names
from .vocabulary import Vocabulary, resolve_vocabulary
from .weights import DEFAULT_WEIGHTS, load_backbone, text_tower_fingerprint

#: Crops × views per encoder pass when the config leaves it open (docs/BENCHMARKS.md: 10 is the
#: fastest on the CPU, where larger batches fall out of the caches; GPUs want large batches).
CPU_BATCH_SIZE, GPU_BATCH_SIZE = 10, 64

Progress = Callable[[int, int], None]
"""Called with (done, total) windows while an image is processed."""


@dataclass
class SegmentationResult:
    """Output of :meth:`Segmenter.segment` for one image of size (H, W)."""

    labels: np.ndarray
    """(H, W) uint8 (uint16 above 256 classes): the class index of each pixel."""
    probs: np.ndarray
    """(C, H, W) float32 in [0, 1]: per-class probabilities after the area threshold."""
    class_names: list[str]
    """C display names; index = label value."""


class LoadedModel:
    """What every configuration of one loaded model shares: weights, tokenizer, text features."""

    def __init__(self, weights: Union[str, os.PathLike], device: torch.device, cache_dir: Optional[str],
                 text_cache: Union[bool, str, os.PathLike]):
        self.weights = os.fspath(weights)
        self.device = device
        self.backbone = load_backbone(weights, device="cpu", cache_dir=cache_dir)
        self.model = self.backbone.model.to(device)
        self.tokenizer = self.backbone.tokenizer
        self.texts = TextFeatureStore(self._encode_texts, self._text_identity, text_cache)

    def _encode_texts(self, texts: list[str], progress: Optional[Progress]) -> torch.Tensor:
        return template_features(self.model, self.tokenizer, texts, progress=progress)

    def _text_identity(self) -> dict:
        """What, besides the text, determines a text's feature (the disk cache's key)."""
        return dict(model=text_tower_fingerprint(self.model), tokenizer=self.backbone.tokenizer_id,
                    templates=[t("{}") for t in TEMPLATES], context_length=self.model.context_length,
                    version=TEXT_FEATURE_VERSION)

    @property
    def text_source(self) -> str:
        """Where the last text features came from (memory, the disk cache, or encoded): for logs."""
        return self.texts.last_source

    def name_features(self, texts: Sequence[str], progress: Optional[Progress] = None) -> torch.Tensor:
        """Template-ensembled features (N, E) of ``texts`` on the model's device; each text is
        encoded once per model (:class:`TextFeatureStore`: memory, then the disk cache)."""
        return self.texts.features(texts, progress).to(self.device)


class Segmenter:
    """ITACLIP segmenter: the model and text features are built once, images segmented many times.

    Args:
        weights: an OpenAI model name (``"ViT-B/16"``, downloaded once into ~/.cache/clip), an
            open_clip ``NAME:TAG`` / ``NAME:PATH`` / ``hf-hub:ORG/REPO``, a transformers CLIPModel
            folder or hub id, or an OpenAI checkpoint file (README "Weights").
        preset: a name from :func:`itaclip.list_presets` (``"voc21"``, ``"coco_stuff"``, …);
            its values come first, explicit ``overrides`` win. With ``method=`` (an override) the
            preset is that method's (its authors' setting for the dataset).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; ``None`` picks CUDA when available.
        config: a full :class:`SegmenterConfig` instead of preset + overrides.
        text_cache: ``True`` (default directory), a directory, or ``False`` to never touch disk.
        **overrides: any :class:`SegmenterConfig` field, e.g. ``stride=56, pamr_steps=0``, or
            ``method="naclip"`` for one of the baselines of :mod:`itaclip.engine.methods`.
    """

    def __init__(self, weights: Union[str, os.PathLike] = DEFAULT_WEIGHTS, preset: Optional[str] = None,
                 device: Optional[Union[str, torch.device]] = None, config: Optional[SegmenterConfig] = None,
                 cache_dir: Optional[str] = None, text_cache: Union[bool, str, os.PathLike] = True,
                 **overrides):
        self.config = config.replace(**overrides) if config else build_config(preset, **overrides)
        self.preset = get_preset(preset, self.config.method) if preset else None
        self._loaded = LoadedModel(weights, resolve_device(device), cache_dir, text_cache)
        self._setup()

    def _setup(self) -> None:
        cfg = self.config
        device_type = self.device.type
        if cfg.precision == "int8" and device_type != "cpu":
            raise ItaclipError("int8 (dynamic quantisation) runs on the CPU: use --device cpu, or fp16/bf16 on a GPU")
        if cfg.precision == "fp16" and device_type == "cpu":
            raise ItaclipError("fp16 needs a GPU: use --device cuda, or bf16/int8 on the CPU")
        visual = self._loaded.model.visual
        self._autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.precision)
        check_config(cfg)
        self.method = get_method(cfg.method)
        self.encoder = self.method.encoder.build(visual, cfg, int8=cfg.precision == "int8",
                                                 autocast_dtype=self._autocast)
        self.encoder.eval()
        self.refinements = refinements(cfg)
        self.views = view_names(cfg.image_engineering, cfg.views)
        self.vocabulary: Optional[Vocabulary] = None
        self.text_features: Optional[torch.Tensor] = None

    @property
    def batch_size(self) -> int:
        """Crops × views per encoder pass: the config's, else the device's default."""
        return self.config.batch_size or (CPU_BATCH_SIZE if self.device.type == "cpu" else GPU_BATCH_SIZE)

    @property
    def device(self) -> torch.device:
        return self._loaded.device

    @property
    def model(self) -> torch.nn.Module:
        return self._loaded.model

    @property
    def text_source(self) -> str:
        """Where the current vocabulary's text features came from (for logs)."""
        return self._loaded.text_source

    def with_config(self, **overrides) -> "Segmenter":
        """A segmenter with some options changed that shares this one's model and text features."""
        other = object.__new__(Segmenter)
        other.preset = self.preset
        other.config = self.config.replace(**overrides)
        other._loaded = self._loaded
        other._setup()
        if self.vocabulary is not None:
            other.set_vocabulary(self.vocabulary)
        return other

    def for_method(self, method: str, preset: Optional[str] = None, **overrides) -> "Segmenter":
        """A segmenter running ``method`` (its authors' defaults, then that method's ``preset``, then
        ``overrides``) that shares this one's loaded model and text features; no vocabulary is set
        (each method's presets bring their own class lists)."""
        other = object.__new__(Segmenter)
        other.config = build_config(preset, method=method, **overrides)
        other.preset = get_preset(preset, method) if preset else None
        other._loaded = self._loaded
        other._setup()
        return other

    # ------------------------------------------------------------------ vocabulary
    def set_vocabulary(self, classes: Union[None, Vocabulary, str, os.PathLike, Sequence[str]] = None, *,
                       background: Union[None, str, Sequence[str]] = None,
                       aux_texts: Union[None, str, os.PathLike, Sequence[str]] = None,
                       has_background: Optional[bool] = None,
                       progress: Optional[Progress] = None) -> Vocabulary:
        """Encode the text side once: class names (with template ensembling), background set and
        auxiliary texts.

        Args:
            classes: a :class:`Vocabulary`, a class file (one class per line, names separated by
                ", "), a built-in list name (``"voc21"``), an inline ``"cat, dog"`` or a list of
                strings. ``None`` → the preset's own class list and auxiliary texts. Typed classes
                are all foreground; under a preset with a background set (voc21, context60,
                coco_object) that set is prepended as class 0 (rules: :func:`resolve_vocabulary`).
            background: words of class 0, the background set (``"sky, wall, floor"``): they
                replace the preset's set, or add one.
            aux_texts: a file in the authors' ``name >=text`` format or one string per
                non-background class; blended with weight ``config.alpha``.
            has_background: ``True`` reads the first class of ``classes`` as its background set
                (the field's class-file format); ``False`` never adds one.
        """
        vocab = resolve_vocabulary(classes, preset=self.preset, background=background, aux_texts=aux_texts,
                                   has_background=has_background)
        use_aux = vocab.aux_texts is not None and self.config.alpha > 0
        texts = list(vocab.queries) + (list(vocab.aux_texts) if use_aux else [])
        features = self._loaded.name_features(texts, progress)  # one batch for the texts not seen yet
        if use_aux:
            queries = len(vocab.queries)
            features = blend_aux(features[:queries], features[queries:], vocab, self.config.alpha)
        self.vocabulary, self.text_features = vocab, features
        return vocab

    # ------------------------------------------------------------------ images
    def segment(self, image: ImageInput, classes=None, *, progress: Optional[Progress] = None,
                on_similarity_maps: Optional[Callable[[torch.Tensor], None]] = None) -> SegmentationResult:
        """Segment one image.

        Args:
            image: a path, a PIL image or an (H, W, 3) uint8 RGB array (greyscale, RGBA and
                16-bit inputs are converted).
            classes: if given, :meth:`set_vocabulary` is called with it first.
            progress: called with (windows done, windows total).
            on_similarity_maps: called once with the image's (Q, H, W) query similarity maps (after
                PAMR, before the logit scale), for measurements such as ``itaclip bench``'s
                agreement between modes. It must only read the tensor: the result is computed from
                it afterwards.
        Returns:
            :class:`SegmentationResult` at the input's size (H, W).
        """
        if classes is not None:
            self.set_vocabulary(classes)
        if self.vocabulary is None or self.text_features is None:
            raise ItaclipError("no vocabulary: call set_vocabulary(classes) before segment(image)")
        vocab, text = self.vocabulary, self.text_features
        rgb = to_rgb_array(image)
        with torch.inference_mode():
            logits = self.similarity_maps(rgb, text, progress)
            if on_similarity_maps is not None:
                on_similarity_maps(logits)
            probs = class_probabilities(logits, vocab.query_class, self.config.logit_scale)
            del logits
            probs = apply_area_threshold(probs, self.config.area_thd, inplace=True)
            labels = label_map(probs, self.config.prob_thd, self.config.closing)
        return SegmentationResult(labels, probs.float().cpu().numpy(), vocab.names)

    def similarity_maps(self, rgb: np.ndarray, text: torch.Tensor,
                        progress: Optional[Progress] = None) -> torch.Tensor:
        """(Q, H, W) query similarities at the image's size, after the refinements (before the logit scale)."""
        cfg = self.config
        height, width = rgb.shape[:2]
        backbone = self._loaded.backbone
        resized = resize_image(rgb, cfg.short_side, cfg.long_side_cap)
        if min(resized.shape[:2]) < self.encoder.patch_size:  # a strip such as 4100×1: no window holds a patch
            raise ItaclipError(f"image {width}×{height} is too narrow: at the working size "
                               f"{resized.shape[1]}×{resized.shape[0]} a side is shorter than one "
                               f"{self.encoder.patch_size}-pixel patch")
        image = normalize(resized, self.device, backbone.mean, backbone.std)
        canvas = self._slide(image, text, progress)
        logits = F.interpolate(canvas[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        del canvas

        def guide() -> torch.Tensor:
            return F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)[0]

        for refine in self.refinements:
            logits = refine(logits, guide, text)
        return logits

    def _slide(self, image: torch.Tensor, text: torch.Tensor, progress: Optional[Progress]) -> torch.Tensor:
        """Average of the windows' fused logits over the resized image: (Q, h, w)."""
        cfg = self.config
        _, height, width = image.shape
        windows = image_windows(height, width, cfg.crop, cfg.stride)
        # Every window has the same size (a side shorter than the crop spans the image), so one
        # padding serves them all: views are then made of the padded window.
        multiple = self.method.pad_to if self.method.pad_to != "patch" else self.encoder.patch_size
        padding = (window_padding(windows[0].y2 - windows[0].y1, windows[0].x2 - windows[0].x1, multiple)
                   if multiple else None)
        if self.method.unit_text:  # the method's code normalises the query features once more (an ulp)
            text = F.normalize(text, dim=-1)
        context = WindowContext(text=text)
        canvas = torch.zeros(text.shape[0], height, width, device=self.device)
        count = torch.zeros(1, height, width, device=self.device)
        per_batch = max(1, self.batch_size // len(self.views))
        for start in range(0, len(windows), per_batch):
            chunk = windows[start:start + per_batch]
            crops = torch.stack([image[:, w.y1:w.y2, w.x1:w.x2] for w in chunk])
            if padding:
                crops = F.pad(crops, padding)
            with torch.autocast(self.device.type, dtype=self._autocast, enabled=self._autocast is not None):
                features, grid = self.encoder(make_views(crops, self.views), context)
            logits = fuse_patch_logits(features.float(), self.views, text, grid, cfg.lam)
            for w, window_logits in zip(chunk, logits):
                add_upsampled(canvas[:, w.y1:w.y2, w.x1:w.x2], window_logits, padding)
                count[:, w.y1:w.y2, w.x1:w.x2] += 1
            if progress is not None:
                progress(min(start + per_batch, len(windows)), len(windows))
        return canvas / count
