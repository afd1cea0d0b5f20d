"""Every weights form loads the same network the same way (tiny random models, no network).

The reference is the same tensors in OpenAI's checkpoint layout (``--weights ckpt.pt``); forms that
have no OpenAI-layout twin (GELU models) are checked against their own library's forward pass.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.weights import StateModule, openai_to_transformers
from itaclip import ItaclipError, Segmenter
from itaclip.engine.encoders.last_block import DenseEncoder
from itaclip.engine.settings import weights_identity
from itaclip.engine.weights import CLIP_MEAN, CLIP_STD, load_backbone
from itaclip.engine.weights.random import random_openai_state_dict

transformers = pytest.importorskip("transformers")

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


def _fill_hub_cache(cache, repo_id: str, folder, files=None) -> None:
    """The layout huggingface_hub writes: refs/main → snapshots/<commit>/<files>."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for item in folder.iterdir():
        if files is None or item.name in files:
            (snapshot / item.name).write_bytes(item.read_bytes())


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An offline Hugging Face cache in tmp_path (env for subprocesses, constants for this one)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_id_from_the_cache_offline(offline_hub, hf_folder, image, openai_result):
    _fill_hub_cache(offline_hub, "tinyorg/tiny-clip", hf_folder)
    _assert_same_outputs(_segment("tinyorg/tiny-clip", image), openai_result)


def test_hub_id_offline_without_cache_is_one_line(offline_hub, hf_folder):
    with pytest.raises(ItaclipError, match="not in the Hugging Face cache.*cannot be reached") as info:
        load_backbone("tinyorg/absent-clip", "cpu")
    assert "\n" not in str(info.value)
    _fill_hub_cache(offline_hub, "tinyorg/config-only", hf_folder, files={"config.json"})
    with pytest.raises(ItaclipError, match="weights are not in the Hugging Face cache") as info:
        load_backbone("tinyorg/config-only", "cpu")
    assert "\n" not in str(info.value)


def test_siglip_hub_id_is_refused_from_its_config(offline_hub, tmp_path):
    folder = tmp_path / "siglip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "siglip", "architectures": ["SiglipModel"]}))
    _fill_hub_cache(offline_hub, "google/tiny-siglip", folder)  # config only: weights never needed
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
    _fill_hub_cache(offline_hub, "tinyorg/open-clip-tiny", tmp_path / "repo")
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
    _fill_hub_cache(offline_hub, "tinyorg/siglip-like", tmp_path / "repo")
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
