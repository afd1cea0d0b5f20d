"""Run the bench: for each input and mode, segment the input's image and record seconds per image,
encoder time, ViT passes and FLOPs, peak memory and the agreement with the fp32 reference; then time
the text side (first encoding of the VOC vocabulary, and a second run served by the disk cache)."""

from __future__ import annotations

import dataclasses
import gc
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ..engine.errors import ItaclipError
from ..engine.files import write_json, writing
from .inputs import (
    DEFAULT_MODEL_CACHE,
    RANDOM_GUIDE_NAME,
    SCENARIOS,
    Mode,
    Scenario,
    input_image,
    random_guide,
    random_weights,
    scenarios,
    synthetic_image,
    synthetic_regions,
)
from .meters import EncoderMeter, PeakMemory, QueryArgmax, bare_passes
from .report import BenchReport, load_average, machine_info

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BenchRequest:
    """What to measure. ``weights`` None: random weights with ViT-B/16's shapes, saved once to
    ``model_cache``; ``modes`` None: the device's default modes."""

    weights: Optional[str] = None
    device: Optional[str] = None
    overrides: dict = field(default_factory=dict)
    """:class:`~itaclip.engine.config.SegmenterConfig` fields for every run (modes add theirs)."""
    inputs: Sequence[str] = tuple(SCENARIOS)
    modes: Optional[Sequence[Mode]] = None
    size: Optional[tuple[int, int]] = None
    """(height, width) of every input's image instead of the benchmark's size."""
    image: Optional[Union[str, Path]] = None
    """A photo resized to each input's size (default: a synthetic picture)."""
    repeat: int = 1
    warmup: bool = True
    text: bool = True
    startup_runs: int = 3
    """Fresh processes timed to a loaded segmenter (each beside one importing torch alone and one
    importing torch with the libraries the weights needed); 0: none."""
    threads: Optional[int] = None
    model_cache: Union[str, Path] = DEFAULT_MODEL_CACHE
    text_cache: Union[None, str, Path] = None
    """Text-feature cache of the image runs (None: itaclip's cache folder)."""
    json_path: Optional[Union[str, Path]] = None
    """Where the records so far are written after each mode (an interrupted run keeps them)."""
    bare: bool = False
    """Also time the same ViT passes (windows × views, same sizes) through CLIP's own vision tower,
    one at a time in plain PyTorch, for each mode."""


def _segmenter(request: BenchRequest, weights: str, preset: str, text_cache, **overrides):
    from ..engine.predictor import Segmenter

    return Segmenter(weights=weights, preset=preset, device=request.device, text_cache=text_cache,
                     **{**request.overrides, **overrides})


def bench_text(request: BenchRequest, weights: str) -> list[dict]:
    """VOC vocabulary (class names, background set, auxiliary definitions): first encoding with
    no cache, the same vocabulary plus one class right after it, then a second run (a new
    segmenter) served by the on-disk cache."""
    from ..engine.text import prompt_templates

    seg = _segmenter(request, weights, "voc21", text_cache=False)
    texts = vocabulary_texts(seg)
    start = time.perf_counter()
    seg.set_vocabulary()
    first = time.perf_counter() - start
    plus_one_s, plus_one_source = _plus_one_class(seg)
    del seg
    with tempfile.TemporaryDirectory(prefix="itaclip-bench-text-") as cache:
        _segmenter(request, weights, "voc21", text_cache=cache).set_vocabulary()  # fills the cache
        seg = _segmenter(request, weights, "voc21", text_cache=cache)
        start = time.perf_counter()
        seg.set_vocabulary()
        cached = time.perf_counter() - start
    return [dict(vocabulary="voc21", texts=texts, prompts=texts * len(prompt_templates()), first_s=first,
                 cached_s=cached, plus_one_s=plus_one_s, plus_one_source=plus_one_source,
                 device=str(seg.device))]


#: The class added to a vocabulary already encoded (with its auxiliary text, if the vocabulary has them).
EXTRA_CLASS = ("giraffe", "a tall African mammal with a very long neck and a spotted coat.")


def _plus_one_class(seg) -> tuple[float, str]:
    """Seconds to set the segmenter's vocabulary plus one class (text features are cached per
    text, so only the new class's texts are encoded), and where the features came from."""
    from ..engine.vocabulary import Vocabulary

    vocab = seg.vocabulary
    aux = vocab.aux_texts + (EXTRA_CLASS[1],) if vocab.aux_texts else None
    grown = Vocabulary(vocab.classes + ((EXTRA_CLASS[0],),), vocab.has_background, aux)
    start = time.perf_counter()
    seg.set_vocabulary(grown)
    return time.perf_counter() - start, seg.text_source


def vocabulary_texts(seg) -> int:
    """Texts the preset's vocabulary encodes: one per query name plus one per auxiliary text."""
    from ..engine.vocabulary import resolve_vocabulary

    vocab = resolve_vocabulary(preset=seg.preset)
    return len(vocab.queries) + (len(vocab.aux_texts) if vocab.aux_texts and seg.config.alpha > 0 else 0)


def _mode_segmenter(request: BenchRequest, base, scenario: Scenario, mode: Mode):
    """The segmenter of one mode: the input's segmenter with the mode's options (a method brings the
    defaults of its own options, e.g. ResCLIP's feedback, and drops what it refuses, e.g. an area
    threshold); with ``authors``, the mode's method with its own preset for the input and its own
    class list."""
    if not mode.authors:
        own: dict = {}
        if "method" in mode.overrides:
            from ..engine.methods import get_method

            record = get_method(mode.overrides["method"])
            own = {name: record.defaults[name] for name in record.reads if name in record.defaults}
            own.update({name: None for name in record.refused})
        return base.with_config(**{**own, **mode.overrides})
    overrides = {k: v for k, v in mode.overrides.items() if k != "method"}
    seg = base.for_method(mode.overrides["method"], scenario.preset, **{**request.overrides, **overrides})
    seg.set_vocabulary()
    return seg


def bench_images(request: BenchRequest, weights: str, inputs: list[Scenario], modes: Sequence[Mode],
                 log: Log = _stderr) -> list[dict]:
    from ..engine.preprocess import image_windows, rescaled_size

    text_cache = request.text_cache if request.text_cache is not None else True
    records = []
    for scenario in inputs:
        start = time.perf_counter()
        base = _segmenter(request, weights, scenario.preset, text_cache)
        base.region_source = synthetic_regions  # methods that read region maps get tiles (no generator)
        load_s = time.perf_counter() - start
        log(f"itaclip bench: {scenario.name}: encoding the {scenario.preset} vocabulary")
        base.set_vocabulary()
        height, width = request.size or scenario.size
        image = input_image(request.image, (height, width))
        references: dict = {}  # (method, authors) → the labels and query argmax of its first exact mode
        for mode in modes:
            try:
                seg = _mode_segmenter(request, base, scenario, mode)
            except ItaclipError as exc:
                log(f"itaclip bench: {scenario.name} {mode.name}: skipped ({exc})")
                continue
            cfg = seg.config
            resized = rescaled_size(height, width, cfg.short_side, cfg.long_side_cap)
            windows = len(image_windows(*resized, cfg.crop, cfg.stride))
            if request.warmup:  # one square window of the run's size (a small --size image may be smaller)
                side = min(cfg.crop or max(resized), *resized)
                seg.with_config(short_side=side, long_side_cap=side,
                                stride=cfg.crop or cfg.stride).segment(synthetic_image(side, side))
            meter = EncoderMeter(seg.encoder, seg.device)
            queries = QueryArgmax()
            log(f"itaclip bench: {scenario.name} {mode.name}: {request.repeat} image(s) of {width}×{height} "
                f"({resized[1]}×{resized[0]}, {windows} windows)")
            try:
                bare = _BarePasses(seg, image) if request.bare else None
                times, bare_times = [], []
                with PeakMemory(seg.device) as memory:
                    for _ in range(request.repeat):
                        start = time.perf_counter()
                        result = seg.segment(image, on_similarity_maps=queries)
                        times.append(time.perf_counter() - start)
                        if bare is not None:  # interleaved, so that both see the same machine load
                            bare_times.append(bare.run())
                seconds = sum(times) / len(times)
            finally:
                meter.close()
            bare_s = min(bare_times) if bare_times else None
            agreement = query_agreement = None
            reference = False
            # Each method is compared with its own first exact mode (another method's labels are not
            # an approximation of these): bf16 ProxyCLIP against fp32 ProxyCLIP.
            key = (mode.overrides.get("method"), mode.authors)
            if key not in references and mode.precision == "fp32" and "stride" not in mode.overrides:
                references[key], reference = (result.labels, queries.value), True
            elif key in references:
                agreement = float((result.labels == references[key][0]).mean())
                query_agreement = float((queries.value == references[key][1]).mean())
            records.append(dict(
                input=scenario.name, preset=scenario.preset, image_size=[height, width], resized=list(resized),
                windows=windows, views=len(seg.views), mode=mode.name, precision=cfg.precision,
                stride=cfg.stride, batch_size=seg.batch_size, device=str(seg.device),
                queries=int(seg.text_features.shape[0]), classes=len(seg.vocabulary.names),
                seconds_per_image=seconds, images_per_s=1.0 / seconds,
                encoder_s=meter.seconds / request.repeat, vit_passes=meter.passes // request.repeat,
                vit_tflop=meter.flops / request.repeat / 1e12,
                encoder_gflops=meter.flops / meter.seconds / 1e9 if meter.seconds else None,
                peak_memory_gb=memory.peak / 1e9, memory_increase_gb=memory.increase / 1e9,
                agreement_vs_fp32=agreement, query_agreement_vs_fp32=query_agreement, reference=reference,
                distinct_labels=int(len(np.unique(result.labels))),
                load_s=load_s, text_s=_cached_text_seconds(seg, text_cache) if request.bare else None,
                bare_passes_s=bare_s, best_s=min(times),
            ))
            log(f"itaclip bench: {scenario.name} {mode.name}: {seconds:.2f} s/image")
            if request.json_path:  # partial results survive an interrupted run
                with writing(request.json_path):
                    write_json(request.json_path, dict(images=records))
            del seg, meter, result
            gc.collect()  # the next mode's peak memory should not include this one's encoder
        del base
        gc.collect()
    return records


def _cached_text_seconds(seg, text_cache) -> Optional[float]:
    """Seconds to read the segmenter's text features from the disk cache as a new run would (None
    without a disk cache): the text part of a whole ``itaclip segment`` run after the first."""
    from ..engine.text_store import TextFeatureStore

    if text_cache is False:
        return None
    vocab = seg.vocabulary
    texts = list(vocab.queries) + (list(vocab.aux_texts) if vocab.aux_texts and seg.config.alpha > 0 else [])
    loaded = seg._loaded
    store = TextFeatureStore(loaded._encode_texts, loaded._text_identity, text_cache)
    start = time.perf_counter()
    store.features(texts)
    return time.perf_counter() - start


class _BarePasses:
    """The segmenter's ViT passes (its windows × views, same sizes, padded where the method pads)
    through CLIP's own vision tower, one crop at a time (:func:`~itaclip.benchmark.meters.bare_passes`)."""

    def __init__(self, seg, image: np.ndarray):
        import torch

        from ..engine.preprocess import image_windows, normalize, resize_image, window_padding

        cfg = seg.config
        backbone = seg._loaded.backbone
        resized = normalize(resize_image(image, cfg.short_side, cfg.long_side_cap), seg.device, backbone.mean,
                            backbone.std)
        patch = seg.encoder.patch_size
        multiple = seg.method.pad_to if seg.method.pad_to != "patch" else patch
        self.crops = []
        for window in image_windows(*resized.shape[1:], cfg.crop, cfg.stride):
            crop = resized[:, window.y1:window.y2, window.x1:window.x2]
            padding = window_padding(*crop.shape[1:], multiple) if multiple else None
            crop = torch.nn.functional.pad(crop, padding) if padding else crop  # the sizes the encoder sees
            crop = crop[:, :crop.shape[1] // patch * patch, :crop.shape[2] // patch * patch]  # whole patches
            self.crops += [crop[None]] * len(seg.views)
        self.visual = seg.model.visual
        self.positional = seg.encoder.trunk.positional_embedding(self.crops[0].shape[-2] // patch,
                                                                 self.crops[0].shape[-1] // patch)
        bare_passes(self.visual, self.crops[:1], self.positional)  # warm-up

    def run(self) -> float:
        """Seconds for all the passes."""
        return bare_passes(self.visual, self.crops, self.positional)


def run_bench(request: BenchRequest, log: Log = _stderr) -> BenchReport:
    """Every input × mode, then the text side; bad options fail before any work."""
    import torch

    from ..engine.devices import resolve_device
    from ..engine.methods import build_config, get_method
    from .inputs import default_modes, parse_modes

    if request.repeat < 1:
        raise ItaclipError(f"--repeat must be >= 1, got {request.repeat}")
    if request.startup_runs < 0:
        raise ItaclipError(f"--startup-runs must be >= 0, got {request.startup_runs}")
    if request.threads is not None:
        if request.threads < 1:
            raise ItaclipError(f"--threads must be >= 1, got {request.threads}")
        torch.set_num_threads(request.threads)
    inputs = scenarios(request.inputs)
    device = resolve_device(request.device)
    modes = list(request.modes) if request.modes is not None else parse_modes(default_modes(device.type))
    for scenario in inputs:
        for mode in modes:
            build_config(scenario.preset, **{**request.overrides, **mode.overrides})
    weights = request.weights if request.weights is not None else random_weights(request.model_cache, log)
    guided = [m for m in modes if "method" in m.overrides and get_method(m.overrides["method"]).guide]
    if guided and request.weights is None and "guide_weights" not in request.overrides:
        # random CLIP, random guide: DINO ViT-B/8's shapes beside the CLIP stand-in
        guide = random_guide(Path(request.model_cache).expanduser().with_name(RANDOM_GUIDE_NAME), log)
        request = dataclasses.replace(request, overrides={**request.overrides, "guide_weights": guide})

    machine = machine_info(device)
    machine["weights"] = "random weights with ViT-B/16's shapes" if request.weights is None else request.weights
    machine["load_start"] = load_average()
    if request.startup_runs:
        from .startup import bench_startup

        log(f"itaclip bench: start-up: {request.startup_runs} × 3 fresh processes")
        machine["startup"] = bench_startup(weights, request.device, request.startup_runs)
    images = bench_images(request, weights, inputs, modes, log)
    texts = bench_text(request, weights) if request.text else []
    machine["load_end"] = load_average()
    report = BenchReport(machine, images, texts)
    report.save(json_path=request.json_path)
    return report
