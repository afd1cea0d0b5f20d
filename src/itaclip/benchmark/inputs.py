"""What the bench runs: an image of each benchmark's typical size with that benchmark's preset
(an *input*), under settings that trade exactness for speed (a *mode*), on a synthetic picture or
a photo, with real weights or random ones of ViT-B/16's shapes (speed does not depend on the
values, so no download is needed)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from ..engine.errors import ItaclipError

if TYPE_CHECKING:  # numpy is imported where a picture is made: `itaclip bench --help` needs none of it
    import numpy as np

#: Shapes of the random stand-in for ViT-B/16 (kwargs of itaclip.engine.weights.random.random_openai_state_dict).
RANDOM_VIT_B16 = dict(vision_width=768, vision_layers=12, text_width=512, text_layers=12, embed_dim=512)
DEFAULT_MODEL_CACHE = Path("~/.cache/itaclip/bench/random_vit_b16.pt")
#: The random stand-in for DINO ViT-B/8 (the guided methods' guide) is saved beside it under this name.
RANDOM_GUIDE_NAME = "random_dino_vitb8.pth"
#: Side of the square regions of the bench's synthetic region maps (SAM's 8×8-point maps of a VOC
#: image hold a few dozen regions).
REGION_TILE = 48


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


def scenarios(names: Sequence[str]) -> list[Scenario]:
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ItaclipError(f"unknown input(s) {unknown}: choose from {', '.join(SCENARIOS)}")
    return [SCENARIOS[n] for n in names]


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    overrides: dict
    authors: bool = False
    """Run the mode's method with its authors' preset for the input (and their class list)."""

    @property
    def precision(self) -> str:
        return self.overrides.get("precision", "fp32")


def parse_mode(text: str) -> Mode:
    """``fp32``, ``bf16``, ``int8``, ``stride56``, ``batch1``, a method (``naclip``: its last block
    and window handling in the input's ITACLIP setting), ``authors`` (with a method: the method's
    own preset for the input), or '+'-joined: ``bf16+stride56``, ``naclip+authors``."""
    from ..engine.methods import list_methods

    overrides: dict[str, Any] = {}
    authors = False
    for token in text.strip().split("+"):
        token = token.strip()
        try:
            if token in PRECISIONS:
                overrides["precision"] = token
            elif token in list_methods():
                overrides["method"] = token
            elif token == "authors":
                authors = True
            elif token.startswith("stride"):
                overrides["stride"] = int(token[len("stride"):])
            elif token.startswith("batch"):
                overrides["batch_size"] = int(token[len("batch"):])
            else:
                raise ValueError
        except ValueError:
            raise ItaclipError(
                f"unknown mode {text!r}: use fp32, fp16, bf16, int8, strideN, batchN, a method "
                f"({', '.join(list_methods())}), authors or '+'-joined ones"
            ) from None
    if authors and "method" not in overrides:
        raise ItaclipError(f"mode {text!r}: 'authors' needs a method, e.g. naclip+authors")
    return Mode(text.strip(), overrides, authors)


def default_modes(device_type: str) -> str:
    if device_type == "cpu":
        return "fp32,stride56,stride112,bf16,int8"
    return "fp32,stride56,stride112,fp16,bf16"


def parse_modes(text: str) -> list[Mode]:
    """Comma-separated modes (see :func:`parse_mode`)."""
    return [parse_mode(m) for m in text.split(",") if m.strip()]


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic picture with smooth gradients, soft blobs, flat rectangles and mild noise."""
    import numpy as np

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


def input_image(photo: Optional[Union[str, Path]], size: tuple[int, int]) -> np.ndarray:
    """``photo`` resized to ``size`` (height, width), or the synthetic picture of that size."""
    if photo is None:
        return synthetic_image(*size)
    import cv2

    from ..engine.images import read_image

    return cv2.resize(read_image(photo), (size[1], size[0]), interpolation=cv2.INTER_AREA)


def random_guide(path: Union[str, Path], log: Callable[[str], None]) -> str:
    """A DINO checkpoint of random weights with ViT-B/8's shapes at ``path`` (timm's initialisation, in
    DINO's released layout), created on first use."""
    path = Path(path).expanduser()
    if not path.is_file():
        import timm
        import torch

        from ..engine.files import atomic_write_bytes, writing

        log(f"itaclip bench: saving random DINO ViT-B/8-shaped weights to {path} (once)")
        model = timm.create_model("vit_base_patch8_224", pretrained=False, num_classes=0)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        with writing(path):
            atomic_write_bytes(path, buffer.getvalue())
    return str(path)


def synthetic_regions(image: "np.ndarray", name: Optional[str] = None) -> "np.ndarray":
    """A region source for the bench (no generator needed): square regions of :data:`REGION_TILE`
    pixels with an unsegmented border of one tile."""
    import numpy as np

    height, width = np.asarray(image).shape[:2]
    rows, cols = np.arange(height)[:, None] // REGION_TILE, np.arange(width)[None, :] // REGION_TILE
    tiles = 1 + rows * (width // REGION_TILE + 1) + cols
    border = (rows == 0) | (cols == 0)
    return np.where(border, 0, tiles)


def random_weights(path: Union[str, Path], log: Callable[[str], None]) -> str:
    """A checkpoint of random weights with ViT-B/16's shapes at ``path``, created on first use."""
    path = Path(path).expanduser()
    if not path.is_file():
        import torch

        from ..engine.files import atomic_write_bytes, writing
        from ..engine.weights.random import random_openai_state_dict

        log(f"itaclip bench: saving random ViT-B/16-shaped weights to {path} (once)")
        buffer = io.BytesIO()
        torch.save(random_openai_state_dict(**RANDOM_VIT_B16), buffer)
        with writing(path):
            atomic_write_bytes(path, buffer.getvalue())
    return str(path)
