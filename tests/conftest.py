"""Shared test fixtures: tiny random CLIP checkpoints in OpenAI's layout and small test images.

Everything here is cheap (session-scoped, built once) and needs no network. Sections:

* checkpoints — ``tiny_ckpt`` (1 head, 12 vision layers, the default test model),
  ``two_head_ckpt`` (width 128: 2 heads in both towers), ``six_layer_ckpt`` (6 vision layers);
  each has a ``*_state`` twin: the fp32 state dict as the naive reference loads it. ``dino_ckpt``
  / ``dino_state``: a random DINO guide model (ProxyCLIP, CorrCLIP) in DINO's released layout.
* ``single_thread`` — use with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
* images — (H, W, 3) uint8 RGB arrays: ``random_image``, ``smooth_image``, ``blocks_image``.
* Hugging Face hub — ``offline_hub`` (an empty offline cache) and ``fill_hub_cache`` (a repository in it).

Other test modules may add fixtures below, in the matching section.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS_DIR = Path(__file__).parent
if str(TESTS_DIR) not in sys.path:  # lets test modules `import naive_reference`
    sys.path.insert(0, str(TESTS_DIR))


# ---------------------------------------------------------------------------------------- threads


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for the module (restored after): the naive reference runs many small ops,
    which OpenMP spinning makes many times slower on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------ checkpoints


def _save_random_checkpoint(directory: Path, name: str, **shape) -> Path:
    from itaclip.engine.weights.random import random_openai_state_dict

    path = directory / f"{name}.pt"
    torch.save(random_openai_state_dict(**shape), path)
    return path


#: Shapes of the test checkpoints (kwargs of ``itaclip.engine.weights.random.random_openai_state_dict``).
TINY_SHAPE = dict(vision_width=64, vision_layers=12, patch_size=16, grid=14, text_width=64,
                  text_layers=2, embed_dim=32, seed=0)
TWO_HEAD_SHAPE = dict(vision_width=128, vision_layers=12, patch_size=16, grid=14, text_width=128,
                      text_layers=2, embed_dim=32, seed=1)
SIX_LAYER_SHAPE = dict(vision_width=64, vision_layers=6, patch_size=16, grid=14, text_width=64,
                       text_layers=2, embed_dim=32, seed=2)


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def tiny_ckpt(checkpoint_dir) -> Path:
    """ViT-B/16-shaped grid (patch 16, 14×14 = 224 px), width 64 (1 head), 12 layers, 2 text layers."""
    return _save_random_checkpoint(checkpoint_dir, "tiny", **TINY_SHAPE)


@pytest.fixture(scope="session")
def two_head_ckpt(checkpoint_dir) -> Path:
    """Like ``tiny_ckpt`` with width 128 in both towers: 2 attention heads."""
    return _save_random_checkpoint(checkpoint_dir, "two_head", **TWO_HEAD_SHAPE)


@pytest.fixture(scope="session")
def six_layer_ckpt(checkpoint_dir) -> Path:
    """Like ``tiny_ckpt`` with 6 vision layers (the paper's layers 7, 8, 10 do not exist)."""
    return _save_random_checkpoint(checkpoint_dir, "six_layer", **SIX_LAYER_SHAPE)


def _reference_state(path: Path) -> dict:
    from naive_reference import load_reference_state

    return load_reference_state(path)


@pytest.fixture(scope="session")
def tiny_state(tiny_ckpt) -> dict:
    return _reference_state(tiny_ckpt)


@pytest.fixture(scope="session")
def two_head_state(two_head_ckpt) -> dict:
    return _reference_state(two_head_ckpt)


@pytest.fixture(scope="session")
def six_layer_state(six_layer_ckpt) -> dict:
    return _reference_state(six_layer_ckpt)


#: Shape of the test guide model (kwargs of ``random_models.random_dino_state_dict``): DINO's layout
#: with patch 8 and a 28×28 table, width 64 (1 head), 3 blocks.
DINO_SHAPE = dict(embed_dim=64, depth=3, patch_size=8, grid=28, seed=5)


@pytest.fixture(scope="session")
def dino_ckpt(checkpoint_dir) -> Path:
    """A random DINO ViT saved as DINO's releases are (a plain state dict in a .pth file)."""
    from random_models import random_dino_state_dict

    path = checkpoint_dir / "dino.pth"
    torch.save(random_dino_state_dict(**DINO_SHAPE), path)
    return path


@pytest.fixture(scope="session")
def dino_state(dino_ckpt) -> dict:
    """``dino_ckpt``'s tensors as the guided reference loads them."""
    from naive_guided import load_guide_state

    return load_guide_state(dino_ckpt)


# ----------------------------------------------------------------------------------------- images


def make_random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Uniform noise, (h, w, 3) uint8 RGB."""
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def make_smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus a few soft blobs and mild noise: no flat regions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([
        128 + 100 * np.sin(xx / max(w, 1) * 3.1 + rng.uniform(0, 6)) * np.cos(yy / max(h, 1) * 2.3),
        128 + 100 * np.cos((xx + yy) / max(h + w, 1) * 5.0 + rng.uniform(0, 6)),
        128 + 100 * np.sin(yy / max(h, 1) * 4.0 + rng.uniform(0, 6)),
    ], axis=-1)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.1, 0.3) * min(h, w)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(-80, 80, size=3)
    img += rng.normal(0, 2.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_blocks_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Piecewise-constant colour rectangles: exactly flat regions (a PAMR stress case)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 256, size=3)
    for _ in range(5):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = y0 + rng.integers(h // 5, h // 2 + 1), x0 + rng.integers(w // 5, w // 2 + 1)
        img[y0:y1, x0:x1] = rng.integers(0, 256, size=3)
    return img


@pytest.fixture(scope="session")
def random_image() -> np.ndarray:
    """96×128 noise."""
    return make_random_image(96, 128, seed=0)


@pytest.fixture(scope="session")
def smooth_image() -> np.ndarray:
    """90×120 smooth synthetic picture."""
    return make_smooth_image(90, 120, seed=1)


@pytest.fixture(scope="session")
def blocks_image() -> np.ndarray:
    """80×104 flat colour rectangles."""
    return make_blocks_image(80, 104, seed=2)


# ------------------------------------------------------------------------------------------ cache


@pytest.fixture(scope="session", autouse=True)
def isolated_text_cache(tmp_path_factory):
    """Text-feature cache in a per-session folder: tests never read or write the user's cache (nor
    download the authors' texts)."""
    import os

    path = tmp_path_factory.mktemp("text-cache")
    # The authors' auxiliary texts are never fetched from GitHub: a closed local port answers at once.
    values = {"ITACLIP_CACHE": str(path), "ITACLIP_AUTHORS_TEXTS_URL": "http://127.0.0.1:9/no-network"}
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    yield path
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# ------------------------------------------------------------------------------------ hugging face


def fill_hub_cache(cache: Path, repo_id: str, folder: Path, files=None) -> str:
    """Put ``folder``'s files (or those named in ``files``) into ``cache`` as huggingface_hub lays out
    a download: refs/main → snapshots/<commit>/<files>. Returns the commit."""
    import hashlib

    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for item in folder.iterdir():
        if files is None or item.name in files:
            (snapshot / item.name).write_bytes(item.read_bytes())
    return commit


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty, offline Hugging Face cache in tmp_path (env for subprocesses, constants for this one)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
