"""Image decoding (EXIF, greyscale, RGBA, 16-bit), atomic writes and the CLIP factory's errors."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from helpers.weights import StateModule
from itaclip import ItaclipError, load_clip
from itaclip.engine.devices import resolve_device
from itaclip.engine.files import write_png
from itaclip.engine.images import read_image, to_rgb_array
from itaclip.engine.weights import text_tower_fingerprint
from itaclip.engine.weights.random import random_openai_state_dict


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.RandomState(0)
    return (rng.rand(20, 30, 3) * 255).astype(np.uint8)


def test_png_round_trip_rgb(tmp_path, rgb):
    write_png(tmp_path / "a.png", rgb)
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind


def test_greyscale_rgba_and_16bit_files(tmp_path, rgb):
    grey = rgb[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert np.array_equal(read_image(tmp_path / "g.png"), np.repeat(grey[:, :, None], 3, axis=2))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    deep = rgb.astype(np.uint16) * 257 + 3
    cv2.imwrite(str(tmp_path / "d.png"), deep[:, :, ::-1])
    assert np.array_equal(read_image(tmp_path / "d.png"), (deep >> 8).astype(np.uint8))  # OpenCV keeps the high byte


def test_exif_orientation_is_applied(tmp_path, rgb):
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    decoded = read_image(tmp_path / "r.jpg")
    assert decoded.shape == (30, 20, 3)
    pil_view = to_rgb_array(Image.open(tmp_path / "r.jpg"))
    assert pil_view.shape == (30, 20, 3)


def test_array_inputs_are_converted(rgb):
    assert np.array_equal(to_rgb_array(rgb[:, :, 0]), np.repeat(rgb[:, :, :1], 3, axis=2))
    assert np.array_equal(to_rgb_array(rgb.astype(np.float32) / 255.0), rgb)
    assert np.array_equal(to_rgb_array((rgb.astype(np.uint16) << 8)), rgb)
    with pytest.raises(ItaclipError, match="shape"):
        to_rgb_array(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ItaclipError, match="dtype"):
        to_rgb_array(np.zeros((4, 4, 3), np.int32))


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_unreadable_image_is_one_line_error(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ItaclipError, match="cannot read image") as info:
        read_image(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ItaclipError, match="does not exist"):
        read_image(tmp_path / "missing.png")


@pytest.fixture(scope="module")
def small_state():
    return random_openai_state_dict(vision_layers=3, text_layers=1, grid=4)


def test_checkpoint_as_state_dict_and_torchscript(tmp_path, small_state):
    torch.save(small_state, tmp_path / "sd.pt")
    model = load_clip(tmp_path / "sd.pt", device="cpu")
    assert model.visual.conv1.weight.dtype == torch.float32
    assert model.visual.positional_embedding.shape == (17, 64)
    assert torch.equal(model.visual.proj, small_state["visual.proj"].float())

    # OpenAI ships TorchScript archives whose state_dict() has the same dotted keys.
    jit_path = tmp_path / "jit.pt"
    torch.jit.save(torch.jit.script(StateModule(small_state)), jit_path)
    model2 = load_clip(jit_path, device="cpu")
    assert torch.equal(model2.visual.proj, model.visual.proj)
    assert text_tower_fingerprint(model2) == text_tower_fingerprint(model)


def test_fingerprint_changes_with_text_weights(tmp_path, small_state):
    torch.save(small_state, tmp_path / "a.pt")
    changed = dict(small_state)
    changed["token_embedding.weight"] = changed["token_embedding.weight"] + 1
    torch.save(changed, tmp_path / "b.pt")
    a, b = (text_tower_fingerprint(load_clip(tmp_path / name, "cpu")) for name in ("a.pt", "b.pt"))
    assert a != b


def test_bad_weights_are_one_line_errors(tmp_path, small_state):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ItaclipError, match="cannot load weights") as info:
        load_clip(corrupt, "cpu")
    assert "\n" not in str(info.value)
    partial = dict(small_state)
    partial.pop("visual.proj")
    partial.pop("visual.ln_post.weight")
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ItaclipError, match="cannot load weights"):
        load_clip(tmp_path / "partial.pt", "cpu")
    with pytest.raises(ItaclipError, match="does not exist"):
        load_clip(tmp_path / "missing.pt", "cpu")
    with pytest.raises(ItaclipError, match="unknown weights"):
        load_clip("ViT-Q-99", "cpu")


def test_offline_download_says_how_to_get_weights(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ItaclipError, match="could not download ViT-B/16.*--weights PATH") as info:
        load_clip("ViT-B/16", "cpu", cache_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_unavailable_device():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ItaclipError, match="not available"):
            resolve_device("cuda:0")
    with pytest.raises(ItaclipError, match="device"):
        resolve_device("tpu")
