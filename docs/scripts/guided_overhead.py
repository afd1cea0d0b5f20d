"""How much a whole ``itaclip segment --method proxyclip|corrclip`` run costs beyond the model passes.

Times, on the same images, (1) the bare passes: CLIP ViT-B/16 and DINO ViT-B/8 run on each 336-pixel
window one at a time in plain PyTorch (open_clip's and timm's own modules, nothing else), and (2) the
whole command in a fresh process (imports, both models loaded, text features, windows, labels, files
written). Random weights with the real shapes (speed does not depend on the values).

    python docs/scripts/guided_overhead.py WORK_DIR [--images 4] [--rounds 3] [--threads 2]

Prints one line per round and method; docs/BENCHMARKS.md has the figures and the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def prepare(work: Path, images: int) -> tuple[Path, Path, Path, Path]:
    """Random CLIP (ViT-B/16 shapes) and DINO (ViT-B/8) files, VOC-size pictures and region maps."""
    import cv2

    from itaclip.benchmark.inputs import random_guide, random_weights, synthetic_image, synthetic_regions

    work.mkdir(parents=True, exist_ok=True)
    clip = Path(random_weights(work / "random_vit_b16.pt", print))
    dino = Path(random_guide(work / "random_dino_vitb8.pth", print))
    photos, regions = work / "photos", work / "regions"
    photos.mkdir(exist_ok=True)
    regions.mkdir(exist_ok=True)
    for index in range(images):
        picture = synthetic_image(375, 500, seed=index)
        cv2.imwrite(str(photos / f"{index}.png"), picture[:, :, ::-1])
        np.savez(regions / f"{index}.npz", instance_mask=synthetic_regions(picture))
    return clip, dino, photos, regions


def bare_seconds(clip: Path, photos: Path) -> float:
    """CLIP's and DINO's passes over every 336×336 window of every picture, one window at a time."""
    import timm

    from itaclip.engine.images import read_image
    from itaclip.engine.preprocess import normalize, resize_image, sliding_windows
    from itaclip.engine.weights import CLIP_MEAN, CLIP_STD, load_clip

    visual = load_clip(clip, device="cpu").visual
    dino = timm.create_model("vit_base_patch8_224", pretrained=False, num_classes=0, img_size=336).eval()
    grid = 336 // 16
    table = visual.positional_embedding
    patch = torch.nn.functional.interpolate(table[1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2), size=(grid, grid),
                                            mode="bicubic", align_corners=False)
    positions = torch.cat([table[:1], patch.permute(0, 2, 3, 1).reshape(grid * grid, -1)])
    total = 0.0
    with torch.inference_mode():
        for path in sorted(photos.glob("*.png")):
            image = normalize(resize_image(read_image(path), 336, 2048), "cpu", CLIP_MEAN, CLIP_STD)
            for w in sliding_windows(*image.shape[1:], 336, 112):
                window = image[None, :, w.y1:w.y2, w.x1:w.x2].contiguous()
                start = time.perf_counter()
                x = visual.conv1(window).flatten(2).transpose(1, 2)
                x = torch.cat([visual.class_embedding.expand(1, 1, -1), x], dim=1) + positions
                visual.transformer(visual.ln_pre(x))
                dino.forward_features(window)
                total += time.perf_counter() - start
    return total


def whole_seconds(method: str, clip: Path, dino: Path, photos: Path, regions: Path, out: Path) -> float:
    command = [sys.executable, "-m", "itaclip.cli", "segment", str(photos), "--method", method, "--weights", str(clip),
               "--guide-weights", str(dino), "--classes", "person, car, dog, cat, sky, tree", "--device", "cpu",
               "--out", str(out), "--overwrite", "--no-overlay"]
    if method == "corrclip":
        command += ["--regions", str(regions)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    clip, dino, photos, regions = prepare(args.work, args.images)
    for round_ in range(args.rounds):
        bare = bare_seconds(clip, photos)
        for method in ("proxyclip", "corrclip"):
            whole = whole_seconds(method, clip, dino, photos, regions, args.work / f"out-{method}")
            print(f"round {round_ + 1}: {method}: whole {whole:.2f} s, bare passes {bare:.2f} s, "
                  f"ratio {whole / bare:.3f}; load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
