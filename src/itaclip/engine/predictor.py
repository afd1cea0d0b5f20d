"""The user-facing predictor: build once, set a vocabulary, segment many images.

    seg = itaclip.Segmenter(weights="ViT-B/16", preset="voc21", device="cuda")
    seg.set_vocabulary()                      # the preset's classes (or any list / file)
    result = seg.segment("photo.jpg")         # labels (H, W), probs (C, H, W), class_names

Data flow per image: resize → sliding windows → views → window encoder → similarity maps →
view fusion → canvas → resize to the image → refinements (PAMR, TLP) → class probabilities → labels.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
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
from .methods import build_config, check_config, default_weights, get_method, get_preset
from .postprocess import apply_area_threshold, class_probabilities, label_map
from .preprocess import image_windows, normalize, resize_image, window_padding
from .refine import refinements
from .refine.region_vote import check_region_map, region_vote
from .text import TEXT_FEATURE_VERSION, blend_aux, prompt_templates, template_features
from .text_store import TextFeatureStore
from .views import add_upsampled, fuse_patch_logits, make_region_views, make_views, view_names
from .vocabulary import Vocabulary, resolve_vocabulary
from .weights import load_backbone, text_tower_fingerprint

#: Crops × views per encoder pass when the config leaves it open (docs/BENCHMARKS.md: 10 is the
#: fastest on the CPU, where larger batches fall out of the caches; GPUs want large batches).
CPU_BATCH_SIZE, GPU_BATCH_SIZE = 10, 64

Progress = Callable[[int, int], None]
"""Called with (done, total) windows while an image is processed."""

RegionSource = Callable[[np.ndarray, Optional[str]], np.ndarray]
"""``source(rgb (H, W, 3) uint8, key)`` → the image's (H, W) region map, for methods that read one;
``key`` names the image (its path, or the path relative to a run's input folder) when known."""


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
        self._guides: dict = {}

    def guide(self, weights: str):
        """The guide model ``weights`` (:func:`itaclip.engine.weights.dino.load_guide`), loaded once on
        first use and shared by every segmenter of this model."""
        if weights not in self._guides:
            from .weights.dino import load_guide

            self._guides[weights] = load_guide(weights, device=self.device)
        return self._guides[weights]

    def _encode_texts(self, texts: list[str], progress: Optional[Progress]) -> torch.Tensor:
        return template_features(self.model, self.tokenizer, texts, progress=progress)

    def _text_identity(self) -> dict:
        """What, besides the text, determines a text's feature (the disk cache's key)."""
        return dict(model=text_tower_fingerprint(self.model), tokenizer=self.backbone.tokenizer_id,
                    templates=[t("{}") for t in prompt_templates()], context_length=self.model.context_length,
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
            folder or hub id, or an OpenAI checkpoint file (README "Weights"). ``None``: the
            method's authors' weights where they differ (CorrCLIP: MetaCLIP ViT-B/16), else
            OpenAI's ViT-B/16.
        preset: a name from :func:`itaclip.list_presets` (``"voc21"``, ``"coco_stuff"``, …);
            its values come first, explicit ``overrides`` win. With ``method=`` (an override) the
            preset is that method's (its authors' setting for the dataset).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; ``None`` picks CUDA when available.
        config: a full :class:`SegmenterConfig` instead of preset + overrides.
        text_cache: ``True`` (default directory), a directory, or ``False`` to never touch disk.
        region_source: where a method that reads region maps (CorrCLIP) gets an image's map when
            :meth:`segment` is not given one (a :data:`RegionSource`: a folder of files, a generator).
        **overrides: any :class:`SegmenterConfig` field, e.g. ``stride=56, pamr_steps=0``, or
            ``method="naclip"`` for one of the baselines of :mod:`itaclip.engine.methods`.
    """

    def __init__(self, weights: Union[None, str, os.PathLike] = None, preset: Optional[str] = None,
                 device: Optional[Union[str, torch.device]] = None, config: Optional[SegmenterConfig] = None,
                 cache_dir: Optional[str] = None, text_cache: Union[bool, str, os.PathLike] = True,
                 region_source: Optional[RegionSource] = None, **overrides):
        self.config = config.replace(**overrides) if config else build_config(preset, **overrides)
        self.preset = get_preset(preset, self.config.method) if preset else None
        check_config(self.config)  # before loading anything
        weights = default_weights(self.config.method) if weights is None else weights
        self._loaded = LoadedModel(weights, resolve_device(device), cache_dir, text_cache)
        self.region_source = region_source
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
        execution = dict(int8=cfg.precision == "int8", autocast_dtype=self._autocast)
        if self.method.guide:
            execution["guide"] = self._loaded.guide(cfg.guide_weights).model
        self.encoder = self.method.encoder.build(visual, cfg, **execution)
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

    def guide_loaded(self, weights: str) -> bool:
        """Whether the guide model ``weights`` is loaded (once per loaded model, shared by its segmenters)."""
        return weights in self._loaded._guides

    def load_guide(self, weights: str):
        """The guide model ``weights`` (:class:`itaclip.engine.weights.dino.Guide`), loaded now if it is not yet."""
        return self._loaded.guide(weights)

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
        other.region_source = self.region_source
        other._setup()
        if self.vocabulary is not None:
            other.set_vocabulary(self.vocabulary)
        return other

    def for_method(self, method: str, preset: Optional[str] = None, **overrides) -> "Segmenter":
        """A segmenter running ``method`` (its authors' defaults, then that method's ``preset``, then
        ``overrides``) that shares this one's loaded model, guide model choice (``guide_weights``)
        and text features; no vocabulary is set (each method's presets bring their own class lists)."""
        other = object.__new__(Segmenter)
        overrides.setdefault("guide_weights", self.config.guide_weights)
        other.config = build_config(preset, method=method, **overrides)
        other.preset = get_preset(preset, method) if preset else None
        other._loaded = self._loaded
        other.region_source = self.region_source
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
        self._warn_about_merged_names(vocab)
        use_aux = vocab.aux_texts is not None and self.config.alpha > 0
        texts = list(vocab.queries) + (list(vocab.aux_texts) if use_aux else [])
        features = self._loaded.name_features(texts, progress)  # one batch for the texts not seen yet
        if use_aux:
            queries = len(vocab.queries)
            features = blend_aux(features[:queries], features[queries:], vocab, self.config.alpha)
        self.vocabulary, self.text_features = vocab, features
        return vocab

    def _warn_about_merged_names(self, vocab: Vocabulary) -> None:
        several = [names for names in vocab.classes[1:] if len(names) > 1]
        if self.method.names_merged_for_class0_only and several:
            warnings.warn(f"itaclip: {len(several)} class(es) after class 0 have several names (first: "
                          f"{', '.join(several[0])}); {self.method.title}'s own code merges several names only "
                          "for class 0, so its results would differ from ours (the max over each class's names)",
                          stacklevel=3)

    # ------------------------------------------------------------------ images
    def segment(self, image: ImageInput, classes=None, *, regions: Optional[np.ndarray] = None,
                image_key: Optional[str] = None, progress: Optional[Progress] = None,
                on_similarity_maps: Optional[Callable[[torch.Tensor], None]] = None) -> SegmentationResult:
        """Segment one image.

        Args:
            image: a path, a PIL image or an (H, W, 3) uint8 RGB array; greyscale, RGBA, uint16
                (0..65535) and float ([0, 1]) arrays are converted, other ranges and dtypes refused
                (:func:`itaclip.engine.images.to_rgb_array`). Above the pixel limit
                (``$ITACLIP_MAX_PIXELS``, 100 megapixels) an image is refused before conversion.
            classes: if given, :meth:`set_vocabulary` is called with it first.
            regions: the image's region map for methods that read one (CorrCLIP): (H, W) integer
                segment ids 0 … 9999 at the image's size, the smallest present = unsegmented.
                Without it the segmenter's ``region_source`` is asked; other methods ignore it.
            image_key: the name ``region_source`` knows the image by: its path relative to the
                run's input folder (default: the file name when ``image`` is a path).
            progress: called with (windows done, windows total).
            on_similarity_maps: called once with the image's (Q, H, W) query similarity maps (after
                PAMR, before the logit scale), for measurements such as ``itaclip bench``'s
                agreement between modes. It must only read the tensor, during the call (copy what
                it keeps): the result is computed from it afterwards, in its memory.
        Returns:
            :class:`SegmentationResult` at the input's size (H, W).
        """
        if classes is not None:
            self.set_vocabulary(classes)
        if self.vocabulary is None or self.text_features is None:
            raise ItaclipError("no vocabulary: call set_vocabulary(classes) before segment(image)")
        vocab, text = self.vocabulary, self.text_features
        rgb = to_rgb_array(image)
        region_map = None
        if self.method.regions:
            key = image_key
            if key is None and isinstance(image, (str, os.PathLike)):
                key = os.path.basename(os.fspath(image))
            region_map = self.region_map(rgb, regions, key)
        with torch.inference_mode():
            logits = self.similarity_maps(rgb, text, progress, regions=region_map)
            if on_similarity_maps is not None:
                on_similarity_maps(logits)
            probs = class_probabilities(logits, vocab.query_class, self.config.logit_scale, inplace=True)
            del logits
            probs = apply_area_threshold(probs, self.config.area_thd, inplace=True)
            labels = label_map(probs, self.config.prob_thd, self.config.closing)
        if self.method.region_vote:
            labels = region_vote(labels, region_map)
        return SegmentationResult(labels, probs.float().cpu().numpy(), vocab.names)

    def region_map(self, rgb: np.ndarray, regions: Optional[np.ndarray] = None,
                   key: Optional[str] = None) -> np.ndarray:
        """The image's (H, W) int64 region map: ``regions`` checked, else the region source's."""
        if regions is None:
            if self.region_source is None:
                raise ItaclipError(f"method {self.method.name!r} needs a region map per image: pass regions=(H, W) "
                                   "ids, or give --regions DIR (files per image) or --region-generator sam2")
            regions = self.region_source(rgb, key)
        return check_region_map(regions, *rgb.shape[:2])

    def similarity_maps(self, rgb: np.ndarray, text: torch.Tensor, progress: Optional[Progress] = None,
                        regions: Optional[np.ndarray] = None) -> torch.Tensor:
        """(Q, H, W) query similarities at the image's size, after the refinements (before the logit scale).
        ``regions``: the (H, W) region map of methods that read one (checked by :meth:`region_map`)."""
        cfg = self.config
        height, width = rgb.shape[:2]
        backbone = self._loaded.backbone
        resized = resize_image(rgb, cfg.short_side, cfg.long_side_cap)
        if min(resized.shape[:2]) < self.encoder.patch_size:  # a strip such as 4100×1: no window holds a patch
            raise ItaclipError(f"image {width}×{height} is too narrow: at the working size "
                               f"{resized.shape[1]}×{resized.shape[0]} a side is shorter than one "
                               f"{self.encoder.patch_size}-pixel patch")
        image = normalize(resized, self.device, backbone.mean, backbone.std)
        # Some methods' code normalises the query features once more before the window logits (an ulp).
        context = WindowContext(text=F.normalize(text, dim=-1) if self.method.unit_text else text)
        if regions is not None:  # nearest to the working size, as float32 (ids below 10000 stay exact)
            region_tensor = torch.from_numpy(regions).to(self.device, torch.float32)[None, None]
            context = dataclasses.replace(context, regions=F.interpolate(
                region_tensor, size=resized.shape[:2], mode="nearest")[0, 0])
        if cfg.crop == 0 and self.method.whole_image == "original":
            logits = self._whole_image(image, context, (height, width))
        else:
            canvas = self._slide(image, context, progress)
            logits = F.interpolate(canvas[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            del canvas

        def guide() -> torch.Tensor:
            return F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)[0]

        for refine in self.refinements:
            logits = refine(logits, guide, text)
        return logits

    def _encode(self, crops: torch.Tensor, context: WindowContext,
                region_crops: Optional[torch.Tensor]) -> torch.Tensor:
        """Fused logits (B, Q, gh, gw) of (B, 3, h, w) crops on the encoder's output grid, views included;
        ``region_crops`` (B, h', w'): the crops' region maps before padding, or None."""
        if region_crops is not None:
            context = dataclasses.replace(context, regions=make_region_views(region_crops, self.views))
        with torch.autocast(self.device.type, dtype=self._autocast, enabled=self._autocast is not None):
            features, grid = self.encoder(make_views(crops, self.views), context)
        return fuse_patch_logits(features.float(), self.views, context.text, grid, self.config.lam)

    def _whole_image(self, image: torch.Tensor, context: WindowContext, size: tuple[int, int]) -> torch.Tensor:
        """One unpadded pass over the resized image, logits resized straight to ``size`` (Q, H, W)."""
        regions = None if context.regions is None else context.regions[None]
        logits = self._encode(image[None], context, regions)[0]
        out = torch.zeros(logits.shape[0], *size, device=self.device)
        add_upsampled(out, logits)
        return out

    def _slide(self, image: torch.Tensor, context: WindowContext, progress: Optional[Progress]) -> torch.Tensor:
        """Average of the windows' fused logits over the resized image: (Q, h, w)."""
        cfg = self.config
        text = context.text
        _, height, width = image.shape
        windows = image_windows(height, width, cfg.crop, cfg.stride)
        # Every window has the same size (a side shorter than the crop spans the image), so one
        # padding serves them all: views are then made of the padded window.
        multiple = self.method.pad_to if self.method.pad_to != "patch" else self.encoder.patch_size
        padding = (window_padding(windows[0].y2 - windows[0].y1, windows[0].x2 - windows[0].x1, multiple)
                   if multiple else None)
        canvas = torch.zeros(text.shape[0], height, width, device=self.device)
        count = torch.zeros(1, height, width, device=self.device)
        per_batch = max(1, self.batch_size // len(self.views))
        for start in range(0, len(windows), per_batch):
            chunk = windows[start:start + per_batch]
            crops = torch.stack([image[:, w.y1:w.y2, w.x1:w.x2] for w in chunk])
            if padding:
                crops = F.pad(crops, padding)
            region_crops = None if context.regions is None else \
                torch.stack([context.regions[w.y1:w.y2, w.x1:w.x2] for w in chunk])
            logits = self._encode(crops, context, region_crops)
            for w, window_logits in zip(chunk, logits):
                add_upsampled(canvas[:, w.y1:w.y2, w.x1:w.x2], window_logits, padding)
                count[:, w.y1:w.y2, w.x1:w.x2] += 1
            if progress is not None:
                progress(min(start + per_batch, len(windows)), len(windows))
        return canvas / count
