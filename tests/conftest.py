"""Shared test fixtures: tiny random CLIP checkpoints in OpenAI's layout and small test images.

Everything here is cheap (session-scoped, built once) and needs no network. Sections:

* checkpoints — ``tiny_ckpt`` (1 head, 12 vision layers, the default test model),
  ``two_head_ckpt`` (width 128: 2 heads in both towers), ``six_layer_ckpt`` (6 vision layers);
  each has a ``*_state`` twin: the fp32 state dict as the naive reference loads it.
* ``single_thread`` — use with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
* images — (H, W, 3) uint8 RGB arrays: ``random_image``, ``smooth_image``, ``blocks_image``.
* text — ``cheap_text_features`` (4 of the 80 prompt templates, for tests of the harness around
  the text side: ``pytestmark = pytest.mark.usefixtures("cheap_text_features")``).
* downloads — ``mirror``: a local mirror of the authors' texts (a stand-in file, pinned).

Shared helpers that are not fixtures live in ``tests/helpers/``.

Other test modules may add fixtures below, in the matching section.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS_DIR = Path(__file__).parent
if str(TESTS_DIR) not in sys.path:  # lets test modules `import naive_reference`
    sys.path.insert(0, str(TESTS_DIR))

from helpers.images import make_blocks_image, make_random_image, make_smooth_image  # noqa: E402
from helpers.servers import FileServer, paper_like_texts  # noqa: E402

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


# ----------------------------------------------------------------------------------------- images


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


# ------------------------------------------------------------------------------------------- text


@pytest.fixture
def cheap_text_features(request, tmp_path_factory, monkeypatch):
    """Text encoding with 4 of the 80 prompt templates (the harness, not the text side, is under
    test), cached in this session's own folder; tests marked ``real_text`` (the torchrun test,
    whose worker processes cannot be patched) use all templates and another cache folder."""
    base = tmp_path_factory.getbasetemp()
    if "real_text" in request.fixturenames:
        monkeypatch.setenv("ITACLIP_CACHE", str(base / "text-cache"))
        return
    monkeypatch.setenv("ITACLIP_CACHE", str(base / "text-cache-4-templates"))
    import itaclip.engine.predictor as predictor
    from itaclip.engine.text import TEMPLATES, template_features

    def four_templates(model, tokenizer, names, templates=TEMPLATES, progress=None):
        return template_features(model, tokenizer, names, templates=templates[:4], progress=progress)

    monkeypatch.setattr(predictor, "template_features", four_templates)


# -------------------------------------------------------------------------------------- downloads


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    """A local mirror holding the stand-in file, pinned by its SHA-256, and an empty cache."""
    from itaclip.auxtexts import authors

    server = FileServer()
    data = paper_like_texts()
    server.files["voc21_definitions.txt"] = data
    monkeypatch.setitem(authors.FILES, "voc21",
                        authors.AuthorsFile("voc21_definitions.txt", hashlib.sha256(data).hexdigest()))
    monkeypatch.setenv(authors.URL_ENV, server.url)
    monkeypatch.setenv("ITACLIP_CACHE", str(tmp_path / "cache"))
    yield server
    server.close()
