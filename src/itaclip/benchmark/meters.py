"""Measurements taken while a segmenter works: encoder time and FLOPs (forward hooks on the window
encoder, whose ``flops`` every encoder family provides), peak memory, the argmax of the similarity
maps (through :meth:`Segmenter.segment`'s ``on_similarity_maps`` hook), and the bare cost of the same
ViT passes in plain PyTorch. None of them changes a result."""

from __future__ import annotations

import os
import threading
import time


class EncoderMeter:
    """Times every forward call of a window encoder and counts its passes and FLOPs."""

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
        if hasattr(self.encoder, "flops_at"):  # encoders with two grids (CLIP's and DINO's) count from pixels
            self.flops += images.shape[0] * self.encoder.flops_at(*images.shape[-2:])
        else:
            self.flops += images.shape[0] * self.encoder.flops(images.shape[-2] // patch, images.shape[-1] // patch)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


class QueryArgmax:
    """Pass as ``on_similarity_maps`` to :meth:`Segmenter.segment`: keeps the argmax over queries of
    the last image's similarity maps. A finer agreement measure than the labels, which thresholds
    and the class max can make uniform (with random weights the VOC preset labels every pixel
    background)."""

    def __init__(self):
        self.value = None

    def __call__(self, maps) -> None:
        self.value = maps.argmax(dim=0).cpu().numpy()


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


def bare_passes(visual, crops, positional) -> float:
    """Seconds for CLIP's own vision tower on each (1, 3, h, w) crop of ``crops``, one at a time, in
    plain PyTorch — the bare cost a method's passes are compared with: patch embedding, the model's
    blocks as they are (``visual.transformer``), ``ln_post`` and the projection of every token.
    ``positional``: the crops' (1 + N, D) positional table (resampled once beforehand, not timed)."""
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        for crop in crops:
            x = visual.conv1(crop).flatten(2).transpose(1, 2)
            x = torch.cat([visual.class_embedding.expand(1, 1, -1), x], dim=1) + positional
            x = visual.transformer(visual.ln_pre(x))
            x = visual.ln_post(x) @ visual.proj
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return time.perf_counter() - start
