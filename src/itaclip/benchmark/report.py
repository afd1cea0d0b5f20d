"""The bench's report: the machine it ran on, and the records as Markdown tables and JSON."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..engine.files import atomic_write_text, write_json, writing


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


def load_average() -> Optional[tuple[float, float, float]]:
    """The 1/5/15-minute load averages (other work on the machine slows the bench), if known."""
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
    ]
    if info.get("startup"):
        from .startup import startup_line

        lines.append(startup_line(info["startup"]))
    lines.append("")
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
    bare = [r for r in images if r.get("bare_passes_s")]
    if bare:
        lines += [
            "| input | mode | ViT passes | s / image | bare passes s | × bare | encoder extra | rest | load s "
            "| text s | whole run × bare |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in bare:
            passes, best = r["bare_passes_s"], r["best_s"]
            rest = r["seconds_per_image"] - r["encoder_s"]
            text = r["text_s"] or 0.0
            whole = (r["load_s"] + text + best) / (r["load_s"] + passes)
            lines.append(
                f"| {r['input']} | {r['mode']} | {r['vit_passes']} | {best:.2f} | {passes:.2f} "
                f"| {best / passes:.2f} | {100 * (r['encoder_s'] / passes - 1):+.0f} % "
                f"| {100 * rest / passes:.0f} % | {r['load_s']:.2f} | {_fmt(r['text_s'], '.2f')} | {whole:.2f} |")
        lines += ["", "s / image: the fastest of the repeats; bare passes: the fastest run of the same ViT passes "
                  "(windows × views, same sizes) through CLIP's own vision tower one at a time in plain PyTorch, each "
                  "run right after an image; × bare: their ratio; encoder extra: the method's encoder (mean) beyond "
                  "the bare passes; rest: everything after the encoder (canvas, refinements, probabilities, labels; "
                  "mean), both as a share of the bare passes; load: the model from its file; text: the text features "
                  "from the disk cache; whole run: (load + text + image) over (load + bare passes).", ""]
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


@dataclass
class BenchReport:
    machine: dict
    images: list[dict]
    texts: list[dict]

    @property
    def markdown(self) -> str:
        return markdown(self.machine, self.images, self.texts)

    def to_json(self) -> dict:
        return dict(machine=self.machine, images=self.images, text=self.texts)

    def save(self, markdown_path: Optional[Union[str, Path]] = None,
             json_path: Optional[Union[str, Path]] = None) -> None:
        """Write the Markdown and/or JSON forms (atomically)."""
        if markdown_path:
            with writing(markdown_path):
                atomic_write_text(markdown_path, self.markdown)
        if json_path:
            with writing(json_path):
                write_json(json_path, self.to_json())
