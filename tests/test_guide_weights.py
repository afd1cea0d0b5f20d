"""The guide model loader (itaclip.engine.weights.dino.load_guide): every form a DINO ViT comes in,
read as tensors only, the architecture from the state dict, refusals in one line before any
download, and DINO's releases downloaded once from a (local) server into the cache and checked."""

from __future__ import annotations

import argparse
import hashlib

import pytest
import torch

from helpers.hub import fill_hub_cache
from helpers.models import DINO_SHAPE, random_dino_state_dict
from helpers.servers import FileServer

pytestmark = pytest.mark.timeout(120)

itaclip = pytest.importorskip("itaclip")
from itaclip import ItaclipError  # noqa: E402
from itaclip.engine.weights import dino  # noqa: E402


@pytest.fixture(scope="module")
def state() -> dict:
    return random_dino_state_dict(**DINO_SHAPE)


def assert_same_model(guide, state):
    loaded = guide.model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value.float()), key


# ------------------------------------------------------------------------------------------- files


def test_released_state_dict(dino_ckpt, state):
    guide = dino.load_guide(dino_ckpt, device="cpu")
    assert_same_model(guide, state)
    assert (guide.width, guide.depth, guide.patch_size) == (64, 3, 8)
    assert guide.description.startswith("DINO ViT-width 64/8") and "3 blocks" in guide.description
    assert not guide.model.training and not any(p.requires_grad for p in guide.model.parameters())


def test_architecture_is_read_from_the_state_dict(tmp_path):
    """Width, depth, patch and table size come from the tensors (heads = width / 64)."""
    path = tmp_path / "b16.pth"
    torch.save(random_dino_state_dict(embed_dim=128, depth=2, patch_size=16, grid=14), path)
    guide = dino.load_guide(path, device="cpu")
    assert (guide.width, guide.depth, guide.patch_size, guide.model.blocks[0].attn.num_heads) == (128, 2, 16, 2)
    assert guide.model.pos_embed.shape == (1, 1 + 14 * 14, 128)


def test_training_checkpoint_teacher(tmp_path, state):
    """DINO's checkpoint.pth: the teacher's backbone (prefixes stripped, its projection head dropped),
    next to the student, the optimizer and the run's argparse namespace."""
    teacher = {f"backbone.{k}": v for k, v in state.items()}
    teacher["head.mlp.0.weight"] = torch.zeros(8, 64)
    teacher["head.last_layer.weight_g"] = torch.ones(1, 4)
    student = {f"module.{k}": v + 1 for k, v in teacher.items()}
    path = tmp_path / "checkpoint.pth"
    torch.save({"student": student, "teacher": teacher, "epoch": 100, "optimizer": {"state": {}},
                "args": argparse.Namespace(arch="vit_small", patch_size=8, lr=0.0005)}, path)
    assert_same_model(dino.load_guide(path, device="cpu"), state)
    ddp = tmp_path / "ddp.pth"
    torch.save({"teacher": {f"module.{k}": v for k, v in teacher.items()}}, ddp)
    assert_same_model(dino.load_guide(ddp, device="cpu"), state)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_files(tmp_path, state, suffix):
    """timm's vit_*_patch*_224.dino files hold the same keys: timm's own model saves them."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_base_patch8_224", pretrained=False, embed_dim=64, depth=3, num_heads=1,
                              num_classes=0)
    model.load_state_dict(state, strict=True)
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    else:
        torch.save(model.state_dict(), path)
    assert_same_model(dino.load_guide(path, device="cpu"), state)


def test_pickles_with_code_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pth"
    torch.save({"cls_token": Payload()}, path)
    with pytest.raises(ItaclipError, match="not a checkpoint of tensors only"):
        dino.load_guide(path)


@pytest.mark.parametrize("change, message", [
    (lambda s: {f"visual.{k}": v for k, v in s.items()}, "CLIP checkpoint"),
    (lambda s: {**s, "register_tokens": torch.zeros(1, 4, 64)}, "DINOv2-style"),
    (lambda s: {**s, "blocks.0.ls1.gamma": torch.ones(64)}, "DINOv2-style"),
    (lambda s: {**s, "dist_token": torch.zeros(1, 1, 64)}, "distilled DeiT"),
    (lambda s: {k: v for k, v in s.items() if k != "pos_embed"}, "no pos_embed"),
    (lambda s: {**s, "pos_embed": s["pos_embed"][:, :-1]}, "square position table"),
    (lambda s: {k: v for k, v in s.items() if k != "blocks.1.norm2.bias"}, "not a DINO ViT state dict"),
    (lambda s: {**s, "blocks.0.attn.qkv.weight": torch.zeros(3, 64)}, "not a DINO ViT state dict"),
])
def test_not_a_dino_vit_is_refused_in_one_line(tmp_path, state, change, message):
    path = tmp_path / "x.pth"
    torch.save(change(state), path)
    with pytest.raises(ItaclipError, match=message) as info:
        dino.load_guide(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("weights, message", [
    ("dino_vitl8", "unknown guide weights 'dino_vitl8'"),
    ("missing/dino.pth", "does not exist"),
    ("timm:vit_base_patch14_dinov2.lvd142m", "not one of timm's DINO .v1. ViTs .a DINOv2 model"),
    ("timm:vit_base_patch16_224.augreg_in21k", "not one of timm's DINO"),
    ("hf-hub:facebook/dino-vitb8", "only timm's DINO repositories"),
    ("hf-hub:timm/vit_small_patch14_dinov2.lvd142m", "not one of timm's DINO"),
])
def test_names_refused_before_any_download(monkeypatch, weights, message):
    import huggingface_hub

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setenv(dino.URL_ENV, "http://127.0.0.1:9/never")
    with pytest.raises(ItaclipError, match=message):
        dino.load_guide(weights)


# -------------------------------------------------------------------------- timm's copies on the hub


@pytest.mark.parametrize("form", ["timm:vit_small_patch8_224.dino", "hf-hub:timm/vit_small_patch8_224.dino"])
def test_timm_names_through_huggingface_hubs_cache(tmp_path, offline_hub, state, form):
    """Offline, a name resolves from huggingface_hub's own cache (what an earlier download left)."""
    from safetensors.torch import save_file

    files = tmp_path / "files"
    files.mkdir()
    save_file(state, str(files / "model.safetensors"))
    fill_hub_cache(offline_hub, "timm/vit_small_patch8_224.dino", files)
    guide = dino.load_guide(form, device="cpu")
    assert_same_model(guide, state)
    assert form in guide.description
    with pytest.raises(ItaclipError, match="could not get timm/vit_base_patch8_224.dino"):
        dino.load_guide("timm:vit_base_patch8_224.dino")


# ------------------------------------------------------------------------------- DINO's releases


@pytest.fixture
def release(monkeypatch, tmp_path, state):
    """A local mirror of DINO's release site holding a small DINO as ``dino_vits16`` (the shape check
    made to expect it), and an empty cache."""
    server = FileServer()
    buffer = tmp_path / "release.pth"
    torch.save(state, buffer)
    server.files["dino_deitsmall16_pretrain.pth"] = buffer.read_bytes()
    monkeypatch.setitem(dino.RELEASE_SHAPES, "dino_vits16", (64, 3, 8))
    monkeypatch.setenv(dino.URL_ENV, server.url)
    monkeypatch.setenv("ITACLIP_CACHE", str(tmp_path / "cache"))
    yield server
    server.close()


def test_release_downloaded_once_recorded_and_checked(release, tmp_path, state):
    guide = dino.load_guide("dino_vits16", device="cpu")
    assert_same_model(guide, state)
    assert release.requests == ["/mirror/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"]
    cached = tmp_path / "cache" / "guide" / "dino_deitsmall16_pretrain.pth"
    record = cached.with_name(cached.name + ".sha256")
    assert record.read_text().strip() == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert "dino_vits16, DINO's release" in guide.description
    release.close()  # offline from now on: the cache serves
    assert_same_model(dino.load_guide("dino_vits16", device="cpu"), state)
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF  # altered after the download
    cached.write_bytes(bytes(data))
    with pytest.raises(ItaclipError, match="not the .* recorded when it was downloaded: delete it"):
        dino.load_guide("dino_vits16")


def test_release_of_the_wrong_shape_is_refused_and_not_kept(release, tmp_path, monkeypatch):
    monkeypatch.setitem(dino.RELEASE_SHAPES, "dino_vits16", (384, 12, 16))
    with pytest.raises(ItaclipError, match="not dino_vits16"):
        dino.load_guide("dino_vits16")
    assert not (tmp_path / "cache" / "guide" / "dino_deitsmall16_pretrain.pth").exists()


def test_release_downloads_are_bounded(release, tmp_path, monkeypatch):
    monkeypatch.setattr(dino, "MAX_DOWNLOAD_BYTES", 1000)
    with pytest.raises(ItaclipError, match="more than the 1000"):
        dino.load_guide("dino_vits16")
    assert not list((tmp_path / "cache").rglob("*.pth"))


def test_release_unreachable(monkeypatch, tmp_path):
    monkeypatch.setenv(dino.URL_ENV, "http://127.0.0.1:9/no-network")
    monkeypatch.setenv("ITACLIP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ItaclipError, match="could not download dino_vitb8 .* --guide-weights PATH") as info:
        dino.load_guide("dino_vitb8")
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "cache").rglob("*.pth"))
