"""``itaclip bench``: speed and memory of the engine per input size, mode and device.

For each *input* (an image of a benchmark's typical size, run with that benchmark's preset) and
each *mode* (precision, stride, batch size) it segments one image and reports seconds per image,
images/s, the time spent in the ViT encoder, the encoder's FLOPs counted from the shapes and its
achieved GFLOP/s, peak memory, and the label agreement with the fp32 mode on the same image. It
also times the text side: the first encoding of the VOC vocabulary (no cache), a second run
served by the on-disk text cache, and the VOC vocabulary plus one class right after the first
encoding (text features are cached per text: only the new class's texts are encoded).

Without ``--weights`` it uses a randomly initialised model with ViT-B/16's shapes (saved once to
``--model-cache``): speed does not depend on the weights' values, so no download is needed. Label
agreement on random weights says how much a mode perturbs the similarity maps, not how it changes
mIoU with the real model.

ViT FLOPs per encoder pass (one crop view; multiply-add = 2 FLOPs), for T = 1 + gh·gw tokens,
width D, L blocks, E output dim, n attention terms, R recorded layers:

    patch embedding      2·(T-1)·(3·p²)·D
    linear layers        2·T·12·D² per block (qkv 3D², out D², MLP 8D²), minus 2·T·8·D² when the
                         last block's MLP is dropped
    attention matmuls    4·T²·D per block 1…L-1 (q·kᵀ and A·v over all heads)
    self-self maps       2·T²·D per term, for each of the R recorded blocks and the last block,
                         plus 2·T²·D for the last block's Â·v
    projection           2·(T-1)·D·E

LayerNorms, softmaxes, GELUs and additions are not counted. ViT-B/16 at 224 px with the paper's
settings: 33.8 GFLOP per pass (35.3 for the unmodified ViT: all MLPs, q·kᵀ attention).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import ItaclipError
from .options import add_engine_arguments, add_model_arguments, config_overrides

#: Shapes of the random stand-in for ViT-B/16 (kwargs of itaclip.models.random_openai_state_dict).
RANDOM_VIT_B16 = dict(vision_width=768, vision_layers=12, text_width=512, text_layers=12, embed_dim=512)
DEFAULT_MODEL_CACHE = Path("~/.cache/itaclip/bench/random_vit_b16.pt")


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    preset: str
    size: tuple[int, int]
    """(height, width) of the original image."""
    description: str


SCENARIOS = {
    s.name: s for s in [
        Scenario("voc", "voc21", (375, 500), "VOC: 500×375 → short side 336"),
        Scenario("coco_stuff", "coco_stuff", (480, 640), "COCO-Stuff: 640×480 → short side 448"),
        Scenario("cityscapes", "cityscapes", (1024, 2048), "Cityscapes: 2048×1024 → short side 560"),
    ]
}
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    overrides: dict

    @property
    def precision(self) -> str:
        return self.overrides.get("precision", "fp32")


def parse_mode(text: str) -> Mode:
    """``fp32``, ``bf16``, ``int8``, ``stride56``, ``batch1``, or '+'-joined: ``bf16+stride56``."""
    overrides: dict[str, Any] = {}
    for token in text.strip().split("+"):
        token = token.strip()
        try:
            if token in PRECISIONS:
                overrides["precision"] = token
            elif token.startswith("stride"):
                overrides["stride"] = int(token[len("stride"):])
            elif token.startswith("batch"):
                overrides["batch_size"] = int(token[len("batch"):])
            else:
                raise ValueError
        except ValueError:
            raise ItaclipError(
                f"unknown mode {text!r}: use fp32, fp16, bf16, int8, strideN, batchN or '+'-joined ones"
            ) from None
    return Mode(text.strip(), overrides)


def default_modes(device_type: str) -> str:
    if device_type == "cpu":
        return "fp32,stride56,stride112,bf16,int8"
    return "fp32,stride56,stride112,fp16,bf16"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", default="voc,coco_stuff,cityscapes", metavar="NAMES",
                        help=f"comma-separated input sizes from {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--modes", metavar="MODES",
                        help="comma-separated modes: fp32, fp16, bf16, int8, strideN, batchN or '+'-joined "
                             "(bf16+stride56); default CPU: fp32,stride56,stride112,bf16,int8; "
                             "GPU: fp32,stride56,stride112,fp16,bf16")
    parser.add_argument("--size", metavar="HxW", help="original image size for every input (e.g. 48x64)")
    parser.add_argument("--image", metavar="PATH",
                        help="a photo to resize to each input's size (default: a synthetic picture)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="timed images per input and mode")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the one-window warm-up run of each mode")
    parser.add_argument("--no-text", dest="text", action="store_false", help="skip the text-encoding benchmark")
    parser.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads (default: torch's)")
    parser.add_argument("--model-cache", default=str(DEFAULT_MODEL_CACHE), metavar="PATH",
                        help="where the random ViT-B/16-shaped checkpoint is saved once (default: %(default)s)")
    parser.add_argument("--text-cache", metavar="DIR",
                        help="text-feature cache for the image runs (default: itaclip's cache folder)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report (Markdown) to FILE")
    parser.add_argument("--json", metavar="FILE", help="also write the raw records (JSON) to FILE")
    add_model_arguments(parser)
    parser.set_defaults(weights=None)
    for action in parser._actions:  # say what the bench does without --weights
        if action.dest == "weights":
            action.help = "a CLIP name or checkpoint (default: random weights with ViT-B/16's shapes)"
    add_engine_arguments(parser)


# ------------------------------------------------------------------------------------ measuring


def vit_pass_flops(encoder, grid_h: int, grid_w: int) -> int:
    """FLOPs of one encoder pass over a (grid_h·p, grid_w·p) crop (formula in the module docstring)."""
    visual = encoder.visual
    blocks = len(encoder.blocks)
    width = visual.conv1.weight.shape[0]
    patch = encoder.patch_size
    out_dim = visual.proj.shape[1] if visual.proj is not None else width
    n = grid_h * grid_w
    tokens = 1 + n
    terms = len(encoder.attention)
    flops = 2 * n * 3 * patch * patch * width
    flops += blocks * 2 * tokens * 12 * width * width
    if encoder.remove_ffn:
        flops -= 2 * tokens * 8 * width * width
    flops += (blocks - 1) * 4 * tokens * tokens * width
    flops += (len(encoder.recorded) + 1) * terms * 2 * tokens * tokens * width + 2 * tokens * tokens * width
    flops += 2 * n * width * out_dim
    return flops


class EncoderMeter:
    """Times every forward call of a :class:`DenseEncoder` and counts its passes and FLOPs."""

    def __init__(self, encoder, device):
        self.encoder, self.device = encoder, device
        self.seconds, self.passes, self.flops = 0.0, 0, 0
        self._start = 0.0
        self._handles = [encoder.register_forward_pre_hook(self._before),
                         encoder.register_forward_hook(self._after)]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def _before(self, module, args) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _after(self, module, args, output) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start
        images = args[0]
        patch = self.encoder.patch_size
        self.passes += images.shape[0]
        self.flops += images.shape[0] * vit_pass_flops(self.encoder, images.shape[-2] // patch, images.shape[-1] // patch)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


class QueryArgmax:
    """Keeps the argmax over queries of the refined similarity maps of a segmenter's last image: a
    finer agreement measure than the labels, which thresholds and the class max can make uniform
    (with random weights the VOC preset labels every pixel background)."""

    def __init__(self, segmenter):
        self.value = None
        self._segmenter = segmenter
        compute = segmenter.similarity_maps

        def similarity_maps(*args, **kwargs):
            maps = compute(*args, **kwargs)
            self.value = maps.argmax(dim=0).cpu().numpy()
            return maps

        segmenter.similarity_maps = similarity_maps  # this instance only

    def close(self) -> None:
        """Remove the wrapper (it refers to the segmenter: a cycle that would keep it alive)."""
        del self._segmenter.similarity_maps
        self._segmenter = None


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory during a ``with`` block: CUDA's allocator peak, or the process's resident set
    sampled every few milliseconds on the CPU. ``peak`` is absolute, ``increase`` over the start."""

    def __init__(self, device, interval: float = 0.005):
        self.device, self.interval = device, interval
        self.peak = self.start = 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start = self.peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())

    @property
    def increase(self) -> int:
        return max(0, self.peak - self.start)


# ------------------------------------------------------------------------------------ inputs


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic picture with smooth gradients, soft blobs, flat rectangles and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([
        128 + 90 * np.sin(xx / width * 3.1 + 1.0) * np.cos(yy / height * 2.3),
        128 + 90 * np.cos((xx + yy) / (height + width) * 5.0 + 2.0),
        128 + 90 * np.sin(yy / height * 4.0 + 3.0),
    ], axis=-1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.1, 0.3) * min(height, width)
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None] * rng.uniform(-80, 80, 3)
    for _ in range(3):
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        img[y0:y0 + height // 4, x0:x0 + width // 4] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 3.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def input_image(args: argparse.Namespace, size: tuple[int, int]) -> np.ndarray:
    if args.image is None:
        return synthetic_image(*size)
    import cv2

    from ..images import read_image

    return cv2.resize(read_image(args.image), (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    try:
        h, w = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ItaclipError(f"--size must be HxW, e.g. 375x500, got {text!r}") from None
    if h < 1 or w < 1:
        raise ItaclipError(f"--size must be positive, got {text!r}")
    return h, w


def resolve_weights(args: argparse.Namespace) -> str:
    """--weights, or the random ViT-B/16-shaped checkpoint (created on first use)."""
    if args.weights is not None:
        return args.weights
    path = Path(args.model_cache).expanduser()
    if not path.is_file():
        import torch

        from ..models import random_openai_state_dict

        print(f"itaclip bench: saving random ViT-B/16-shaped weights to {path} (once)", file=sys.stderr)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        torch.save(random_openai_state_dict(**RANDOM_VIT_B16), tmp)
        os.replace(tmp, path)
    return str(path)


# ------------------------------------------------------------------------------------ benchmarks


def _segmenter(args: argparse.Namespace, weights: str, preset: str, text_cache, **overrides):
    from ..predictor import Segmenter

    return Segmenter(weights=weights, preset=preset, device=args.device, text_cache=text_cache,
                     **{**config_overrides(args), **overrides})


def bench_text(args: argparse.Namespace, weights: str) -> list[dict]:
    """VOC vocabulary (class names, background set, auxiliary definitions): first encoding with
    no cache, then a second run (a new segmenter) served by the on-disk cache."""
    records = []
    seg = _segmenter(args, weights, "voc21", text_cache=False)
    vocab_texts = _vocabulary_texts(seg)
    start = time.perf_counter()
    seg.set_vocabulary()
    first = time.perf_counter() - start
    plus_one_s, plus_one_source = _plus_one_class(seg)
    del seg
    with tempfile.TemporaryDirectory(prefix="itaclip-bench-text-") as cache:
        _segmenter(args, weights, "voc21", text_cache=cache).set_vocabulary()  # fills the cache
        seg = _segmenter(args, weights, "voc21", text_cache=cache)
        start = time.perf_counter()
        seg.set_vocabulary()
        cached = time.perf_counter() - start
    from ..text import TEMPLATES

    records.append(dict(vocabulary="voc21", texts=vocab_texts, prompts=vocab_texts * len(TEMPLATES),
                        first_s=first, cached_s=cached, plus_one_s=plus_one_s, plus_one_source=plus_one_source,
                        device=str(seg.device)))
    return records


#: The class added to a vocabulary already encoded (with its auxiliary text, if the vocabulary has them).
EXTRA_CLASS = ("giraffe", "a tall African mammal with a very long neck and a spotted coat.")


def _plus_one_class(seg) -> tuple[float, str]:
    """Seconds to set the segmenter's vocabulary plus one class (text features are cached per
    text, so only the new class's texts are encoded), and where the features came from."""
    from ..vocabulary import Vocabulary

    vocab = seg.vocabulary
    aux = vocab.aux_texts + (EXTRA_CLASS[1],) if vocab.aux_texts else None
    grown = Vocabulary(vocab.classes + ((EXTRA_CLASS[0],),), vocab.has_background, aux)
    start = time.perf_counter()
    seg.set_vocabulary(grown)
    return time.perf_counter() - start, seg.text_source


def _vocabulary_texts(seg) -> int:
    """Texts the preset's vocabulary encodes: one per query name plus one per auxiliary text."""
    from ..vocabulary import resolve_vocabulary

    vocab = resolve_vocabulary(preset=seg.preset)
    return len(vocab.queries) + (len(vocab.aux_texts) if vocab.aux_texts and seg.config.alpha > 0 else 0)


def bench_images(args: argparse.Namespace, weights: str, scenarios: list[Scenario], modes: list[Mode],
                 size: Optional[tuple[int, int]]) -> list[dict]:
    from ..preprocess import rescaled_size, sliding_windows

    text_cache = args.text_cache if args.text_cache is not None else True
    records = []
    for scenario in scenarios:
        base = _segmenter(args, weights, scenario.preset, text_cache)
        print(f"itaclip bench: {scenario.name}: encoding the {scenario.preset} vocabulary", file=sys.stderr)
        base.set_vocabulary()
        height, width = size or scenario.size
        image = input_image(args, (height, width))
        reference_labels = reference_queries = None
        for mode in modes:
            try:
                seg = base.with_config(**mode.overrides)
            except ItaclipError as exc:
                print(f"itaclip bench: {scenario.name} {mode.name}: skipped ({exc})", file=sys.stderr)
                continue
            cfg = seg.config
            resized = rescaled_size(height, width, cfg.short_side, cfg.long_side_cap)
            windows = len(sliding_windows(*resized, cfg.crop, cfg.stride))
            if args.warmup:
                side = min(cfg.crop, *resized)
                seg.with_config(short_side=side, long_side_cap=side, stride=cfg.crop).segment(image[:side, :side])
            meter = EncoderMeter(seg.encoder, seg.device)
            queries = QueryArgmax(seg)
            print(f"itaclip bench: {scenario.name} {mode.name}: {args.repeat} image(s) of {width}×{height} "
                  f"({resized[1]}×{resized[0]}, {windows} windows)", file=sys.stderr)
            try:
                with PeakMemory(seg.device) as memory:
                    start = time.perf_counter()
                    for _ in range(args.repeat):
                        result = seg.segment(image)
                    seconds = (time.perf_counter() - start) / args.repeat
            finally:
                meter.close()
                queries.close()
            agreement = query_agreement = None
            reference = False
            if reference_labels is None and mode.precision == "fp32" and "stride" not in mode.overrides:
                # the first exact mode is the reference
                reference_labels, reference_queries, reference = result.labels, queries.value, True
            elif reference_labels is not None:
                agreement = float((result.labels == reference_labels).mean())
                query_agreement = float((queries.value == reference_queries).mean())
            records.append(dict(
                input=scenario.name, preset=scenario.preset, image_size=[height, width], resized=list(resized),
                windows=windows, views=len(seg.views), mode=mode.name, precision=cfg.precision,
                stride=cfg.stride, batch_size=seg.batch_size, device=str(seg.device),
                queries=int(seg.text_features.shape[0]), classes=len(seg.vocabulary.names),
                seconds_per_image=seconds, images_per_s=1.0 / seconds,
                encoder_s=meter.seconds / args.repeat, vit_passes=meter.passes // args.repeat,
                vit_tflop=meter.flops / args.repeat / 1e12,
                encoder_gflops=meter.flops / meter.seconds / 1e9 if meter.seconds else None,
                peak_memory_gb=memory.peak / 1e9, memory_increase_gb=memory.increase / 1e9,
                agreement_vs_fp32=agreement, query_agreement_vs_fp32=query_agreement, reference=reference,
                distinct_labels=int(len(np.unique(result.labels))),
            ))
            print(f"itaclip bench: {scenario.name} {mode.name}: {seconds:.2f} s/image", file=sys.stderr)
            if args.json:  # partial results survive an interrupted run
                _write_json(args.json, dict(images=records))
            del seg, meter, result
            gc.collect()  # the next mode's peak memory should not include this one's encoder
        del base
        gc.collect()
    return records


# ------------------------------------------------------------------------------------ report


def machine_info(device) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    # the instruction sets that decide fp32, bf16 and int8 speed
    features = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    info = dict(cpu=cpu, cpu_features=features, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(), device=str(device))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _load() -> Optional[tuple[float, float, float]]:
    try:
        return os.getloadavg()
    except OSError:
        return None


def _fmt(value, spec: str, missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def _agreement(record: dict, key: str) -> str:
    if record["reference"]:
        return "reference"
    value = record[key]
    return "–" if value is None else f"{100 * value:.2f} %"


def markdown(info: dict, images: list[dict], texts: list[dict]) -> str:
    load = info.get("load_start"), info.get("load_end")
    lines = [
        f"Machine: {info['cpu']} ({info['cpu_count']} logical CPUs"
        + (f"; {', '.join(info['cpu_features'])}" if info.get("cpu_features") else "")
        + f"), torch {info['torch']} with "
        f"{info['torch_threads']} threads, Python {info['python']}, device {info['device']}"
        + (f" ({info['gpu']})" if "gpu" in info else "") + ".",
        "Load average (1/5/15 min) at start: " + " / ".join(f"{v:.2f}" for v in load[0])
        + "; at end: " + " / ".join(f"{v:.2f}" for v in load[1]) + "." if all(load) else "Load average: unknown.",
        f"Model: {info['weights']}.",
        "",
    ]
    if images:
        lines += [
            "| input | mode | windows × views | s / image | images / s | encoder s | ViT passes | ViT TFLOP "
            "| encoder GFLOP/s | rest s | peak memory GB (+ during run) | labels = fp32 (distinct) "
            "| query argmax = fp32 |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in images:
            h, w = r["image_size"]
            rh, rw = r["resized"]
            lines.append(
                f"| {r['input']} {w}×{h} → {rw}×{rh}, {r['queries']} queries | {r['mode']} (batch {r['batch_size']}) "
                f"| {r['windows']} × {r['views']} | {r['seconds_per_image']:.2f} | {r['images_per_s']:.3f} "
                f"| {r['encoder_s']:.2f} | {r['vit_passes']} | {r['vit_tflop']:.3f} "
                f"| {_fmt(r['encoder_gflops'], '.1f')} | {r['seconds_per_image'] - r['encoder_s']:.2f} "
                f"| {r['peak_memory_gb']:.2f} (+{r['memory_increase_gb']:.2f}) "
                f"| {_agreement(r, 'agreement_vs_fp32')} ({r['distinct_labels']}) "
                f"| {_agreement(r, 'query_agreement_vs_fp32')} |"
            )
        lines.append("")
    if texts:
        lines += [
            "| text vocabulary | texts × templates = prompts | first encoding s (no cache) | prompts / s "
            "| second run s (disk cache) | + 1 class s (texts) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in texts:
            lines.append(f"| {r['vocabulary']} | {r['texts']} × 80 = {r['prompts']} | {r['first_s']:.2f} "
                         f"| {r['prompts'] / r['first_s']:.0f} | {r['cached_s']:.3f} "
                         f"| {r['plus_one_s']:.3f} ({r['plus_one_source'].split(' (')[0]}) |")
        lines.append("")
    return "\n".join(lines)


def _write_json(path: str, data: dict) -> None:
    import json

    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..config import build_config
    from ..models import resolve_device

    if args.repeat < 1:
        raise ItaclipError(f"--repeat must be >= 1, got {args.repeat}")
    if args.threads is not None:
        if args.threads < 1:
            raise ItaclipError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.inputs.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ItaclipError(f"unknown input(s) {unknown}: choose from {', '.join(SCENARIOS)}")
    device = resolve_device(args.device)
    modes = [parse_mode(m) for m in (args.modes or default_modes(device.type)).split(",") if m.strip()]
    for scenario in names:  # bad options fail before any work
        for mode in modes:
            build_config(SCENARIOS[scenario].preset, **{**config_overrides(args), **mode.overrides})
    size = _parse_size(args.size)
    weights = resolve_weights(args)

    info = machine_info(device)
    info["weights"] = ("random weights with ViT-B/16's shapes" if args.weights is None else args.weights)
    info["load_start"] = _load()
    images = bench_images(args, weights, [SCENARIOS[n] for n in names], modes, size)
    texts = bench_text(args, weights) if args.text else []
    info["load_end"] = _load()

    report = markdown(info, images, texts)
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report)
    if args.json:
        _write_json(args.json, dict(machine=info, images=images, text=texts))
    return 0
