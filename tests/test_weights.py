"""Every weights form loads the same network the same way (tiny random models, no network).

The reference is the same tensors in OpenAI's checkpoint layout (``--weights ckpt.pt``); forms that
have no OpenAI-layout twin (GELU models) are checked against their own library's forward pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.hub import fill_hub_cache
from helpers.weights import StateModule, openai_to_transformers
from itaclip import ItaclipError, Segmenter
from itaclip.engine.encoders.last_block import DenseEncoder
from itaclip.engine.settings import weights_identity
from itaclip.engine.weights import CLIP_MEAN, CLIP_STD, load_backbone
from itaclip.engine.weights.random import random_openai_state_dict

transformers = pytest.importorskip("transformers")

SRC = Path(__file__).resolve().parents[1] / "src"

#: 12 vision blocks (the paper's layers 7, 8, 10 exist), 2 heads, small everything else.
SHAPE = dict(vision_width=128, vision_layers=12, patch_size=16, grid=14, text_width=64, text_layers=2,
             embed_dim=32, seed=5)
CLASSES = ["cat", "dog", "tree"]
FAST = dict(stride=112, pamr_steps=2)


@pytest.fixture(scope="module")
def openai_state():
    return random_openai_state_dict(**SHAPE)


@pytest.fixture(scope="module")
def openai_ckpt(openai_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("openai") / "tiny.pt"
    torch.save(openai_state, path)
    return path


@pytest.fixture(scope="module")
def hf_model(openai_state):
    return openai_to_transformers(openai_state)


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "tiny-clip"
    hf_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image():
    from helpers.images import make_smooth_image

    return make_smooth_image(96, 128, seed=3)


def _segment(weights, image, **options):
    seg = Segmenter(weights=weights, preset="default", device="cpu", text_cache=False, **FAST, **options)
    seg.set_vocabulary(CLASSES)
    return seg.segment(image)


def _assert_same_outputs(result, expected):
    assert result.class_names == expected.class_names
    assert np.array_equal(result.labels, expected.labels)
    assert np.abs(result.probs - expected.probs).max() <= 1e-4


@pytest.fixture(scope="module")
def openai_result(openai_ckpt, image):
    return _segment(openai_ckpt, image)


def _features_agree(backbone, reference_image_features, reference_text_features, pixels, tokens):
    model = backbone.model
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(pixels), reference_image_features, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(model.encode_text(tokens), reference_text_features, atol=2e-5, rtol=1e-4)


# ------------------------------------------------------------------------------ transformers


def test_transformers_folder_is_the_same_network(hf_model, hf_folder, openai_ckpt):
    backbone = load_backbone(hf_folder, "cpu")
    assert "transformers CLIPModel" in backbone.description and "QuickGELU" in backbone.description
    assert (backbone.mean, backbone.std) == (CLIP_MEAN, CLIP_STD)
    pixels = torch.randn(2, 3, 224, 224)
    tokens = backbone.tokenizer(["a photo of a cat", "a dog"])
    with torch.no_grad():
        image_ref = hf_model.get_image_features(pixel_values=pixels)
        text_ref = hf_model.get_text_features(input_ids=tokens)
    image_ref = getattr(image_ref, "pooler_output", image_ref)
    text_ref = getattr(text_ref, "pooler_output", text_ref)
    _features_agree(backbone, image_ref, text_ref, pixels, tokens)
    openai = load_backbone(openai_ckpt, "cpu").model.state_dict()
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, openai[key]), key


def test_transformers_folder_gives_the_openai_checkpoint_outputs(hf_folder, image, openai_result):
    _assert_same_outputs(_segment(hf_folder, image), openai_result)


def test_hub_id_from_the_cache_offline(offline_hub, hf_folder, image, openai_result):
    fill_hub_cache(offline_hub, "tinyorg/tiny-clip", hf_folder)
    _assert_same_outputs(_segment("tinyorg/tiny-clip", image), openai_result)


def test_hub_id_offline_without_cache_is_one_line(offline_hub, hf_folder):
    with pytest.raises(ItaclipError, match="config.json of tinyorg/absent-clip .*HF_HUB_OFFLINE=1 is set and "
                                           "the Hugging Face cache .* has no copy") as info:
        load_backbone("tinyorg/absent-clip", "cpu")
    assert "\n" not in str(info.value)
    fill_hub_cache(offline_hub, "tinyorg/config-only", hf_folder, files={"config.json"})
    with pytest.raises(ItaclipError, match="cannot load weights of tinyorg/config-only .* has no copy") as info:
        load_backbone("tinyorg/config-only", "cpu")
    assert "\n" not in str(info.value)


def test_siglip_hub_id_is_refused_from_its_config(offline_hub, tmp_path):
    folder = tmp_path / "siglip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "siglip", "architectures": ["SiglipModel"]}))
    fill_hub_cache(offline_hub, "google/tiny-siglip", folder)  # config only: weights never needed
    with pytest.raises(ItaclipError, match="SigLIP.*attention head") as info:
        load_backbone("google/tiny-siglip", "cpu")
    assert "\n" not in str(info.value)


def test_gelu_transformers_folder_matches_transformers(openai_state, tmp_path):
    model = openai_to_transformers(openai_state, quick_gelu=False)
    model.save_pretrained(tmp_path / "gelu")
    backbone = load_backbone(tmp_path / "gelu", "cpu")
    assert "(GELU)" in backbone.description
    pixels = torch.randn(1, 3, 224, 224)
    tokens = backbone.tokenizer(["a tree"])
    with torch.no_grad():
        image_ref = model.get_image_features(pixel_values=pixels)
        text_ref = model.get_text_features(input_ids=tokens)
    _features_agree(backbone, getattr(image_ref, "pooler_output", image_ref),
                    getattr(text_ref, "pooler_output", text_ref), pixels, tokens)


# -------------------------------------------------------------------------------- open_clip


TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 128, "patch_size": 16, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


@pytest.fixture
def tiny_open_clip(monkeypatch):
    """Architectures ItaTiny (GELU) and ItaTiny-quickgelu registered in open_clip for this test."""
    from open_clip import factory

    monkeypatch.setitem(factory._MODEL_CONFIGS, "ItaTiny", json.loads(json.dumps(TINY_OPEN_CLIP)))
    monkeypatch.setitem(factory._MODEL_CONFIGS, "ItaTiny-quickgelu", {**json.loads(json.dumps(TINY_OPEN_CLIP)),
                                                                      "quick_gelu": True})


def _random_open_clip(name: str, seed: int):
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    with torch.no_grad():
        for tensor in model.parameters():  # no constant tensors (unit LayerNorms, zero biases)
            tensor.add_(torch.randn_like(tensor) * 0.05)
    return model.eval()


def _dense_reference(model, pixels):
    """open_clip's own forward: final patch tokens (after ln_post) projected and normalised; the
    engine with the plain CLIP attention, no fused maps and the FFN kept must give the same."""
    model.visual.output_tokens = True
    with torch.no_grad():
        _, tokens = model.visual(pixels)
    model.visual.output_tokens = False
    return F.normalize(tokens @ model.visual.proj, dim=-1)


@pytest.mark.parametrize("name, activation", [("ItaTiny", torch.nn.GELU), ("ItaTiny-quickgelu", None)])
def test_named_open_clip_checkpoint(tiny_open_clip, tmp_path, name, activation):
    from open_clip.transformer import QuickGELU

    reference = _random_open_clip(name, seed=7)
    path = tmp_path / "open_clip.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)

    with pytest.raises(ItaclipError, match="cannot tell which activation.*--weights") as info:
        load_backbone(path, "cpu")  # fp32 open_clip checkpoint: GELU or QuickGELU cannot be known
    assert "\n" not in str(info.value)

    backbone = load_backbone(f"{name}:{path}", "cpu")
    model = backbone.model
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, activation or QuickGELU)
    pixels = torch.randn(2, 3, 224, 224)
    tokens = backbone.tokenizer(["a cat", "a photo of a dog"])
    with torch.no_grad():
        _features_agree(backbone, reference.encode_image(pixels), reference.encode_text(tokens), pixels, tokens)
        encoder = DenseEncoder(model.visual, attention=("q-k",), intermediate_layers=(), remove_ffn=False)
        features, _ = encoder(pixels)
    torch.testing.assert_close(features, _dense_reference(reference, pixels), atol=2e-5, rtol=1e-4)


def test_gelu_open_clip_equals_gelu_transformers(tiny_open_clip, tmp_path, image):
    """Two independent routes to one GELU network (open_clip's module, our transformers
    conversion) give the same segmentation."""
    reference = _random_open_clip("ItaTiny", seed=8)
    torch.save(reference.state_dict(), tmp_path / "gelu.pt")
    state = {k: v for k, v in reference.state_dict().items()}
    state["logit_scale"] = state["logit_scale"].reshape(())
    openai_to_transformers(state, quick_gelu=False).save_pretrained(tmp_path / "gelu-hf")
    _assert_same_outputs(_segment(f"ItaTiny:{tmp_path / 'gelu.pt'}", image), _segment(tmp_path / "gelu-hf", image))


@pytest.fixture
def no_network(monkeypatch):
    """Any URL download fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    import open_clip.pretrained

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", refuse)


def test_open_clip_tag_from_a_filled_cache(tiny_open_clip, monkeypatch, tmp_path, no_network, image):
    """NAME:TAG through open_clip's own download code: a cached file with the right checksum is
    used without the network; the tag's QuickGELU flag wins over the bare name's GELU, and the
    result equals the same tensors as an OpenAI-layout file (and as NAME:PATH)."""
    from open_clip import pretrained

    from itaclip.engine.weights.random import _stored_in_fp16

    reference = _random_open_clip("ItaTiny-quickgelu", seed=9)
    with torch.no_grad():  # values OpenAI's fp16 storage holds exactly, so both files are one network
        for key, tensor in reference.state_dict().items():
            if _stored_in_fp16(key, tensor):
                tensor.copy_(tensor.half().float())
    path = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), path)
    openai_file = tmp_path / "openai-layout.pt"
    torch.save({k: v.half() if _stored_in_fp16(k, v) else v for k, v in reference.state_dict().items()}, openai_file)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = tmp_path / "clip-cache"
    cache.mkdir()
    (cache / "ita-tiny.pt").write_bytes(path.read_bytes())
    url = f"https://openaipublic.azureedge.net/clip/models/{sha}/ita-tiny.pt"  # sha in the URL, as OpenAI's
    monkeypatch.setitem(pretrained._PRETRAINED, "ItaTiny", {
        "tinytag": pretrained._pcfg(url=url, quick_gelu=True),
        "halfnorm": pretrained._pcfg(url=url, quick_gelu=True, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))})

    backbone = load_backbone("ItaTiny:tinytag", "cpu", cache_dir=str(cache))
    assert "QuickGELU" in backbone.description and (backbone.mean, backbone.std) == (CLIP_MEAN, CLIP_STD)
    pixels = torch.randn(1, 3, 224, 224)
    tokens = backbone.tokenizer(["a cat"])
    _features_agree(backbone, reference.encode_image(pixels), reference.encode_text(tokens), pixels, tokens)
    tagged = _segment("ItaTiny:tinytag", image, cache_dir=str(cache))
    _assert_same_outputs(tagged, _segment(openai_file, image))
    _assert_same_outputs(_segment(f"ItaTiny-quickgelu:{path}", image), tagged)

    # The tag's normalisation reaches the pipeline.
    half = load_backbone("ItaTiny:halfnorm", "cpu", cache_dir=str(cache))
    assert half.mean == (127.5, 127.5, 127.5) and half.std == (63.75, 63.75, 63.75)
    assert np.abs(_segment("ItaTiny:halfnorm", image, cache_dir=str(cache)).probs - tagged.probs).max() > 1e-3
    from itaclip.engine.preprocess import normalize

    assert torch.equal(normalize(image, "cpu", half.mean, half.std),
                       (torch.from_numpy(image).permute(2, 0, 1).float() - 127.5) / 63.75)


@pytest.mark.parametrize("weights, message", [
    ("RN50", "ResNet"),
    ("RN50:openai", "ResNet"),
    ("RN101-quickgelu:yfcc15m", "ResNet"),
    ("convnext_base:laion400m_s13b_b51k", "timm"),
    ("ViT-B-16-SigLIP:webli", "SigLIP model: its image tower pools with an attention head"),
    ("EVA02-B-16:merged2b_s8b_b131k", "timm"),
    ("ViT-L-14-CLIPA:datacomp1b", "ViT-L-14-CLIPA is not supported"),
    ("ViT-B-16:no_such_tag", "tags are"),
    ("ViT-B-16-plus", "names an architecture"),
    ("hf-hub", "unknown weights"),
    ("ViT-H-14-worldwide:metaclip2_worldwide", "tokenizes differently"),
    ("ViT-M-16-alt", "ls_init_value"),
    ("RN50x4-quickgelu", "ResNet"),
    ("some/dir/ckpt.pt", "does not exist"),
])
def test_refusals_come_before_any_download(no_network, weights, message):
    """Refused from the name or config alone (the opener and hub client fail the test if called)."""
    with pytest.raises(ItaclipError, match=message) as info:
        load_backbone(weights, "cpu")
    assert "\n" not in str(info.value)


NOT_A_FORMAT = r"not a CLIP checkpoint: not a PyTorch, TorchScript or \.safetensors file \(it starts with b'"


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"\x89PNG\r\n\x1a\n" + bytes(64), NOT_A_FORMAT + r"\\x89PNG"),
    (b"<!DOCTYPE html><html>", NOT_A_FORMAT + "<!DOCTYP"),
])
def test_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path, content, message):
    """Before: torch's unpickler message ("Check the documentation of torch.load … weights_only …"),
    or a bare "EOFError" for an empty file."""
    path = tmp_path / "ViT-B-16.pt"
    path.write_bytes(content)
    with pytest.raises(ItaclipError, match=f"cannot load weights .*ViT-B-16.pt: {message}") as info:
        load_backbone(path, "cpu")
    assert "\n" not in str(info.value) and "torch.load" not in str(info.value)


def test_torchscript_archive_is_announced_and_pickles_are_data_only(tmp_path, caplog, openai_state):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"visual.proj": Payload()}, handle)
    with pytest.raises(ItaclipError, match="tensors only") as info:
        load_backbone(tmp_path / "evil.pt", "cpu")
    assert "\n" not in str(info.value)


    torch.jit.save(torch.jit.script(StateModule(openai_state)), tmp_path / "archive.pt")
    with caplog.at_level("WARNING", logger="itaclip.engine.weights.reading"):
        load_backbone(tmp_path / "archive.pt", "cpu")
    assert "TorchScript archive" in caplog.text and "runs the code" in caplog.text


def test_weights_identity_follows_bytes(tmp_path, openai_ckpt, hf_folder):
    copy = tmp_path / "renamed.pt"
    copy.write_bytes(openai_ckpt.read_bytes())
    assert weights_identity(copy) == weights_identity(openai_ckpt)
    assert weights_identity(f"ViT-B-16:{copy}") == "ViT-B-16:" + weights_identity(copy)
    assert weights_identity(hf_folder).startswith("folder-sha256:")
    assert weights_identity("ViT-B-16:laion2b_s34b_b88k") == "ViT-B-16:laion2b_s34b_b88k"


def test_sharded_transformers_folder(hf_model, tmp_path, openai_ckpt):
    hf_model.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    loaded = load_backbone(tmp_path / "sharded", "cpu").model.state_dict()
    for key, value in load_backbone(openai_ckpt, "cpu").model.state_dict().items():
        assert torch.equal(value, loaded[key]), key


def _open_clip_repo(folder, model, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), model_cfg=None):
    """What open_clip's push_to_hf_hub writes: open_clip_config.json + open_clip_model.safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    config = {"model_cfg": model_cfg or TINY_OPEN_CLIP, "preprocess_cfg": {"mean": list(mean), "std": list(std)}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    if model is not None:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")


def test_open_clip_hub_repo_and_folder(offline_hub, tmp_path):
    """hf-hub:ORG/REPO through open_clip's own hub code (from the cache, offline), the same id
    without the prefix (an open_clip repository has no transformers config.json), and the same
    files as a local folder: the repo's GELU config and its normalisation are used."""
    reference = _random_open_clip_from_cfg(TINY_OPEN_CLIP, seed=11)
    _open_clip_repo(tmp_path / "repo", reference)
    fill_hub_cache(offline_hub, "tinyorg/open-clip-tiny", tmp_path / "repo")
    pixels = torch.randn(1, 3, 224, 224)
    for weights in ("hf-hub:tinyorg/open-clip-tiny", "tinyorg/open-clip-tiny", tmp_path / "repo"):
        backbone = load_backbone(weights, "cpu")
        assert "(GELU)" in backbone.description
        assert backbone.mean == (127.5,) * 3 and backbone.std == (127.5,) * 3
        tokens = backbone.tokenizer(["a cat"])
        _features_agree(backbone, reference.encode_image(pixels), reference.encode_text(tokens), pixels, tokens)


def test_open_clip_hub_repo_refused_from_its_config(offline_hub, tmp_path):
    cfg = json.loads(json.dumps(TINY_OPEN_CLIP))
    cfg["vision_cfg"] = {"timm_model_name": "vit_base_patch16_siglip_224", "image_size": 224}
    _open_clip_repo(tmp_path / "repo", None, model_cfg=cfg)  # config only: weights never needed
    fill_hub_cache(offline_hub, "tinyorg/siglip-like", tmp_path / "repo")
    with pytest.raises(ItaclipError, match="SigLIP model") as info:
        load_backbone("hf-hub:tinyorg/siglip-like", "cpu")
    assert "\n" not in str(info.value)


def _random_open_clip_from_cfg(cfg: dict, seed: int):
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(**json.loads(json.dumps(cfg)))
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.add_(torch.randn_like(tensor) * 0.05)
    return model.eval()


def test_cli_transformers_folder_and_openai_file_write_the_same_labels(hf_folder, openai_ckpt, tmp_path, image):
    from PIL import Image

    from itaclip.cli import main

    Image.fromarray(image).save(tmp_path / "photo.png")
    labels = []
    for name, weights in (("folder", hf_folder), ("file", openai_ckpt)):
        args = ["segment", str(tmp_path / "photo.png"), "--classes", ", ".join(CLASSES), "--weights", str(weights),
                "--device", "cpu", "--stride", "112", "--pamr-steps", "2", "--save-probs", "--out",
                str(tmp_path / name)]
        assert main(args) == 0
        labels.append((np.array(Image.open(tmp_path / name / "photo.png")),
                       np.load(tmp_path / name / "photo.npz")["probs"]))
    assert np.array_equal(labels[0][0], labels[1][0])
    assert np.abs(labels[0][1] - labels[1][1]).max() <= 1e-4


@pytest.mark.parametrize("name", ["ViT-B-16", "ViT-B-16-quickgelu", "ViT-B-32", "ViT-L-14", "ViT-L-14-336",
                                  "ViT-H-14", "ViT-bigG-14", "ViT-B-16-plus-240"])
def test_plain_clip_vits_are_accepted_from_their_config(name):
    import open_clip

    from itaclip.engine.weights.support import unsupported_reason

    assert unsupported_reason(open_clip.get_model_config(name)) is None


def test_unavailable_or_unsupported_devices_are_one_line():
    from itaclip.engine.devices import resolve_device

    cases = ["xpu", "meta", "cuda:abc"] + ([] if torch.backends.mps.is_available() else ["mps"]) \
        + ([] if torch.cuda.is_available() else ["cuda"])
    for device in cases:
        with pytest.raises(ItaclipError, match="device") as info:
            resolve_device(device)
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------- hostile transformers folders


def _edited_folder(hf_folder, target, edit=None, text=None, index=None):
    """A copy of ``hf_folder`` (weights linked) with config.json edited, replaced by ``text``, or
    the weights named by a shard ``index`` instead of the file itself."""
    target.mkdir()
    config = json.loads((hf_folder / "config.json").read_text())
    if edit is not None:
        edit(config)
    (target / "config.json").write_text(text if text is not None else json.dumps(config))
    if index is None:
        (target / "model.safetensors").symlink_to(hf_folder / "model.safetensors")
    else:
        (target / "model.safetensors.index.json").write_text(json.dumps(index))
    return target


def _set(section, field, value):
    def edit(config):
        if section is None:
            config[field] = value
        else:
            config[section][field] = value
    return edit


HEADS_MUST = "num_attention_heads must be a positive integer"


@pytest.mark.parametrize("edit, message", [
    (_set("vision_config", "num_attention_heads", 0), f"vision_config.{HEADS_MUST}, got 0"),
    (_set("vision_config", "num_attention_heads", "abc"), f'{HEADS_MUST}, got "abc"'),
    (_set("text_config", "num_attention_heads", [1]), r"text_config.num_attention_heads .* got \[1\]"),
    (_set("vision_config", "num_attention_heads", None), f"{HEADS_MUST}, got null"),
    (_set("vision_config", "hidden_act", ["gelu"]), "vision_config.hidden_act must be one of quick_gelu, gelu"),
    (_set("text_config", "layer_norm_eps", "x"), "text_config.layer_norm_eps must be a finite number"),
    (_set("vision_config", "layer_norm_eps", float("nan")), "layer_norm_eps must be a finite number .* got nan"),
    (_set("text_config", "layer_norm_eps", -1e-5), "layer_norm_eps must be a finite number between 0 and 1"),
    (_set("text_config", "vocab_size", "49408"), 'text_config.vocab_size must be a positive integer, got "49'),
    (_set(None, "vision_config", [1, 2]), r"vision_config must be an object, got \[1, 2\]"),
    (_set(None, "vision_config", "abc"), 'vision_config must be an object, got "abc"'),
    (_set(None, "text_config_dict", [1]), "text_config_dict must be an object"),
    (_set(None, "model_type", ["clip"]), r"not a transformers CLIPModel \(model_type \[\"clip\"\]\)"),
    (lambda config: config.pop("vision_config"),
     "num_attention_heads 12 .transformers' default: config.json has no vision_config. does not divide"),
    (_set("text_config", "num_attention_heads", 3), "text_config.num_attention_heads 3 does not divide"),
])
def test_hostile_configs_are_one_line(hf_folder, tmp_path, edit, message):
    """Each value the engine reads from config.json is checked (type, range, finiteness) before
    it is used: one line naming the field, never a traceback or a run to NaN probabilities."""
    folder = _edited_folder(hf_folder, tmp_path / "edited", edit)
    with pytest.raises(ItaclipError, match=message) as info:
        load_backbone(folder, "cpu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('"clip"', 'config.json is not a JSON object, got "clip"'),
    ("{", "cannot read .*config.json"),
])
def test_unreadable_configs_are_one_line(hf_folder, tmp_path, text, message):
    folder = _edited_folder(hf_folder, tmp_path / "edited", text=text)
    with pytest.raises(ItaclipError, match=message) as info:
        load_backbone(folder, "cpu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("shard, message", [
    (5, "shard 5 is not a file name in the model's folder"),
    ("../hf-outside/model.safetensors", "is not a file name in the model's folder"),
    ("ABSOLUTE", "is not a file name in the model's folder"),
])
def test_shard_index_names_only_files_of_its_folder(hf_folder, tmp_path, shard, message):
    outside = tmp_path / "hf-outside"
    outside.mkdir()
    (outside / "model.safetensors").symlink_to(hf_folder / "model.safetensors")  # loads if followed
    shard = str(outside / "model.safetensors") if shard == "ABSOLUTE" else shard
    folder = _edited_folder(hf_folder, tmp_path / "edited", index={"weight_map": {"logit_scale": shard}})
    with pytest.raises(ItaclipError, match=message) as info:
        load_backbone(folder, "cpu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("preprocessor, message", [
    ({"image_mean": ["a", 0, 0]}, "image_mean must be 3 finite numbers"),
    ({"image_std": [0.5, 0.5, 0.0]}, "image_std must be 3 finite positive numbers"),
    ({"image_mean": [0.5, float("nan"), 0.5]}, "image_mean must be 3 finite numbers"),
])
def test_hostile_preprocessor_configs_are_one_line(hf_folder, tmp_path, preprocessor, message):
    folder = _edited_folder(hf_folder, tmp_path / "edited")
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    with pytest.raises(ItaclipError, match=message) as info:
        load_backbone(folder, "cpu")
    assert "\n" not in str(info.value)


def test_nan_eps_through_the_cli_fails_instead_of_writing_nan(hf_folder, tmp_path, image, capfd):
    from PIL import Image

    from itaclip.cli import main

    nan_eps = _set("vision_config", "layer_norm_eps", float("nan"))
    folder = _edited_folder(hf_folder, tmp_path / "edited", nan_eps)
    Image.fromarray(image).save(tmp_path / "photo.png")
    code = main(["segment", str(tmp_path / "photo.png"), "--classes", "cat, dog", "--weights", str(folder),
                 "--device", "cpu", "--out", str(tmp_path / "out")])
    err = capfd.readouterr().err.strip().splitlines()
    assert code != 0 and not (tmp_path / "out" / "photo.png").exists()
    assert len(err) == 1 and "layer_norm_eps" in err[0] and "Traceback" not in err[0]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("weights", ["/dev/zero", "ViT-B-16:/dev/zero"])
def test_a_device_as_weights_is_named_as_such(weights):
    with pytest.raises(ItaclipError, match="/dev/zero is not a regular file") as info:
        load_backbone(weights, "cpu")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------- weight names without a network


def _closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once, as without a network."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unreachable_network(tmp_path, monkeypatch):
    """No network (tests never touch it): the Hub's endpoint and an https proxy are closed local
    ports, HF_HUB_OFFLINE is not set, the Hugging Face and open_clip caches are empty folders.
    Returns the Hub cache."""
    from huggingface_hub import constants

    from itaclip.engine.weights import network

    closed = f"http://127.0.0.1:{_closed_port()}"
    cache = tmp_path / "hub"
    cache.mkdir()
    for name, value in (("HF_ENDPOINT", closed), ("HF_HUB_CACHE", str(cache)), ("https_proxy", closed),
                        ("HOME", str(tmp_path / "home"))):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(network, "_probed", {})  # this test's network, probed afresh
    return cache


def _timed_load(weights, **kwargs):
    import time

    start = time.monotonic()
    try:
        return load_backbone(weights, "cpu", **kwargs), time.monotonic() - start
    except ItaclipError as exc:
        return exc, time.monotonic() - start


@pytest.mark.parametrize("weights, what, local", [
    ("tinyorg/tiny-clip", "config.json of tinyorg/tiny-clip", "--weights /path/to/folder"),
    ("hf-hub:tinyorg/open-clip-tiny", "the weights of hf-hub:tinyorg/open-clip-tiny", "--weights /path/to/folder"),
    ("ViT-B-16:laion2b_s34b_b88k", "the weights of ViT-B-16:laion2b_s34b_b88k",
     "--weights ViT-B-16:/path/to/open_clip_model.safetensors"),
    ("ViT-B/16", "the ViT-B/16 weights", "--weights /path/to/ViT-B-16.pt"),
])
def test_weight_names_without_network_are_one_quick_line(unreachable_network, weights, what, local):
    """Not cached and no network: one line at once (the probe finds the host closed), naming
    HF_HUB_OFFLINE for Hub names and a local form of the weights; before, huggingface_hub retried
    each of three files for about 25 s."""
    error, seconds = _timed_load(weights)
    assert isinstance(error, ItaclipError), error
    message = str(error)
    assert message.startswith(f"cannot download {what}") and "cannot be reached" in message, message
    assert local in message and "\n" not in message
    assert ("HF_HUB_OFFLINE=1" in message) == (weights != "ViT-B/16")
    assert seconds < 5, seconds


def test_cached_weight_names_load_without_network_at_once(unreachable_network, tiny_open_clip, hf_folder, tmp_path,
                                                          monkeypatch, image, openai_result):
    """Without a network, what is in the caches loads at once, through the same routes: a
    transformers repository, an open_clip repository (hf-hub:) and an open_clip tag whose weights
    live on the Hub (its normalisation from its record, its activation from its tag)."""
    from open_clip import pretrained

    fill_hub_cache(unreachable_network, "tinyorg/tiny-clip", hf_folder)
    backbone, seconds = _timed_load("tinyorg/tiny-clip")
    assert not isinstance(backbone, Exception), backbone
    assert seconds < 5, seconds
    _assert_same_outputs(_segment("tinyorg/tiny-clip", image), openai_result)

    reference = _random_open_clip_from_cfg(TINY_OPEN_CLIP, seed=11)
    _open_clip_repo(tmp_path / "repo", reference)
    fill_hub_cache(unreachable_network, "tinyorg/open-clip-tiny", tmp_path / "repo")
    monkeypatch.setitem(pretrained._PRETRAINED, "ItaTiny", {
        "hubtag": pretrained._pcfg(hf_hub="tinyorg/open-clip-tiny/", quick_gelu=True, mean=(0.5, 0.5, 0.5),
                                   std=(0.25, 0.25, 0.25))})
    pixels = torch.randn(1, 3, 224, 224)
    for weights, activation, mean in (("hf-hub:tinyorg/open-clip-tiny", "(GELU)", 127.5),
                                      ("ItaTiny:hubtag", "(QuickGELU)", 127.5)):
        backbone, seconds = _timed_load(weights)
        assert not isinstance(backbone, Exception), backbone
        assert seconds < 5, seconds
        assert activation in backbone.description and backbone.mean == (mean,) * 3
        assert backbone.std == ((127.5,) * 3 if weights.startswith("hf-hub") else (63.75,) * 3)
        loaded = backbone.model.state_dict()
        assert all(torch.equal(value, loaded[key]) for key, value in reference.state_dict().items())
    tokens = load_backbone("hf-hub:tinyorg/open-clip-tiny", "cpu").tokenizer(["a cat"])
    _features_agree(load_backbone("hf-hub:tinyorg/open-clip-tiny", "cpu"), reference.encode_image(pixels),
                    reference.encode_text(tokens), pixels, tokens)


def test_hf_hub_offline_set_by_the_user_is_named(offline_hub):
    error, seconds = _timed_load("tinyorg/absent-clip")
    assert isinstance(error, ItaclipError) and seconds < 5
    assert "HF_HUB_OFFLINE=1 is set and the Hugging Face cache" in str(error) and "unset it" in str(error)


def test_a_hanging_name_lookup_is_bounded(monkeypatch):
    """A name lookup that never answers (getaddrinfo has no timeout) costs the probe's limit once."""
    import socket
    import threading
    import time

    from itaclip.engine.weights import network

    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(10)
        raise OSError("no answer")

    monkeypatch.setattr(socket, "create_connection", hang)
    monkeypatch.setattr(network, "PROBE_SECONDS", 0.5)
    monkeypatch.setattr(network, "_probed", {})
    start = time.monotonic()
    assert not network.reachable("https://hub.invalid/x") and not network.reachable("https://hub.invalid/y")
    assert time.monotonic() - start < 1.5
    release.set()


_OFFLINE_CLI = """
import sys
from itaclip.cli import main
sys.exit(main(["segment", sys.argv[1], "--classes", "cat, dog", "--weights", sys.argv[2], "--out", sys.argv[3]]))
"""


@pytest.mark.parametrize("weights", ["openai/clip-vit-base-patch16", "ViT-B-16:laion2b_s34b_b88k",
                                     "hf-hub:timm/vit_base_patch16_clip_224.openai"])
def test_offline_weight_names_print_only_our_line(tmp_path, image, weights):
    """The whole command's output without a network: our one line, none of huggingface_hub's
    retries or open_clip's ERROR:root lines."""
    import subprocess
    import sys

    from PIL import Image

    Image.fromarray(image).save(tmp_path / "photo.png")
    closed = f"http://127.0.0.1:{_closed_port()}"
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "no_proxy", "NO_PROXY")}
    env.update(HF_ENDPOINT=closed, https_proxy=closed, HF_HUB_CACHE=str(tmp_path / "hub"), HOME=str(tmp_path),
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", _OFFLINE_CLI, str(tmp_path / "photo.png"), weights,
                           str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=170)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("itaclip segment: error: cannot download") and "HF_HUB_OFFLINE=1" in lines[0]
