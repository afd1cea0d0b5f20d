"""Region maps for CorrCLIP (itaclip.engine.regions): files, the SAM / SAM2 generator, the disk cache.

The generator runs on random weights of the real transformers architectures (tests/helpers/models.py)
and is compared with a plainly written reference below: one point prompt at a time, SAM's filters,
NMS and CorrCLIP's writing rule spelled out step by step.
"""

from __future__ import annotations

import json
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers.hub import fill_hub_cache
from helpers.images import make_smooth_image
from helpers.models import random_sam_model
from itaclip.engine.errors import ItaclipError
from itaclip.engine.regions import (
    GeneratedRegions,
    RegionCache,
    RegionFolder,
    RegionGenerator,
    read_region_file,
    region_source,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("single_thread")]

IMAGE = make_smooth_image(120, 160, seed=3)  # non-square: SAM and SAM2 scale point prompts differently
#: Thresholds at which the random models keep many masks: CorrCLIP's keep few or none of their noisy,
#: image-wide masks (SAM's predicted IoUs are ~0.03; all boxes are the whole image, so NMS keeps one).
LOW = {"sam2": dict(stability_score_thresh=0.1, box_nms_thresh=1.0),
       "sam": dict(pred_iou_thresh=0.0, stability_score_thresh=0.1, box_nms_thresh=1.0)}


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message and message
    return message


# ------------------------------------------------------------------------------------------- files


def label_map(height: int = 120, width: int = 160, top: int = 7) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, top, size=(height, width))


def test_npz_by_relative_path_then_stem(tmp_path):
    ids = label_map()
    (tmp_path / "street").mkdir()
    np.savez_compressed(tmp_path / "street" / "0001.npz", instance_mask=ids)
    np.savez_compressed(tmp_path / "0001.npz", instance_mask=ids + 1)  # the stem's file loses to the path's
    folder = RegionFolder(tmp_path)
    found = folder(IMAGE, "street/0001.jpg")
    assert found.dtype == np.int32 and found.shape == (120, 160)
    np.testing.assert_array_equal(found, ids)
    np.testing.assert_array_equal(folder(IMAGE, "elsewhere/0001.png"), ids + 1)  # the authors' flat folders
    assert folder.stats["read"] == 2


@pytest.mark.parametrize("mode", ["L", "P", "I;16"])
def test_label_png(tmp_path, mode):
    ids = label_map(top=300 if mode == "I;16" else 200)
    dtype = np.uint16 if mode == "I;16" else np.uint8
    image = Image.fromarray(ids.astype(dtype))
    if mode == "P":
        image = image.convert("P")  # palette: the stored indices are the ids
        ids = np.asarray(image)
    image.save(tmp_path / "a.png")
    np.testing.assert_array_equal(RegionFolder(tmp_path)(IMAGE, "a.jpg"), ids)


def test_npz_wins_over_png_and_path_names_image(tmp_path):
    np.savez(tmp_path / "a.npz", instance_mask=label_map())
    Image.fromarray(np.zeros((120, 160), np.uint8)).save(tmp_path / "a.png")
    image_path = tmp_path / "a.jpg"
    Image.fromarray(IMAGE).save(image_path, quality=95)
    np.testing.assert_array_equal(RegionFolder(tmp_path)(image_path), label_map())  # name from the path


def _npz_with_header(path, shape, dtype="<i8"):
    """An .npz whose instance_mask claims ``shape`` but holds no data (a 'bomb')."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("instance_mask.npy", b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text)


BAD_FILES = {
    "missing": (None, r"no region map for a\.jpg: expected .*a\.npz"),
    "size": (lambda p: np.savez(p / "a.npz", instance_mask=np.zeros((60, 80), np.int64)),
             r"is 80×60 pixels but its image is 160×120"),
    "png size": (lambda p: Image.fromarray(np.zeros((60, 80), np.uint8)).save(p / "a.png"), r"80×60 pixels"),
    "key": (lambda p: np.savez(p / "a.npz", masks=label_map()), r"no array 'instance_mask' \(it has masks\)"),
    "float": (lambda p: np.savez(p / "a.npz", instance_mask=label_map().astype(np.float32)),
              r"holds float32 values: region ids must be integers"),
    "bool": (lambda p: np.savez(p / "a.npz", instance_mask=label_map() > 3), r"holds bool values"),
    "3-d": (lambda p: np.savez(p / "a.npz", instance_mask=label_map()[None]), r"shape \(1, 120, 160\)"),
    "reserved": (lambda p: np.savez(p / "a.npz", instance_mask=label_map() + 9995),
                 r"id 10001: ids must be below 10000"),
    "negative": (lambda p: np.savez(p / "a.npz", instance_mask=label_map() - 1), r"negative ids \(-1\)"),
    "garbage": (lambda p: (p / "a.npz").write_bytes(b"not a zip at all"), r"cannot read region map .*a\.npz"),
    "truncated png": (lambda p: (p / "a.png").write_bytes(_png_bytes()[:60]),
                      r"cannot read region map .*a\.png"),
    "rgb png": (lambda p: Image.fromarray(IMAGE).save(p / "a.png"), r"is a RGB PNG: region maps are single"),
    "bomb": (lambda p: _npz_with_header(p / "a.npz", (120000, 160000)), r"120000 pixels but its image"),
}


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(label_map().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_region_files_are_one_line(tmp_path, case):
    make, pattern = BAD_FILES[case]
    if make:
        make(tmp_path)
    with pytest.raises(ItaclipError, match=pattern) as info:
        RegionFolder(tmp_path)(IMAGE, "a.jpg")
    one_line(info)


def test_pixel_limit_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setenv("ITACLIP_MAX_PIXELS", "1000")
    _npz_with_header(tmp_path / "a.npz", (120, 160))  # no data: refused by the limit, not read
    with pytest.raises(ItaclipError, match="more than the limit of 0.001") as info:
        read_region_file(tmp_path / "a.npz")  # no image size to compare with: the engine's limit
    one_line(info)
    Image.fromarray(label_map().astype(np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ItaclipError, match="more than the limit of 0.001") as info:
        read_region_file(tmp_path / "a.png")
    one_line(info)
    # with the image's size given, the size decides (the image's own limit bounded it)
    np.testing.assert_array_equal(read_region_file(tmp_path / "a.png", (120, 160)), label_map())


def test_names_never_leave_the_folder(tmp_path):
    inside = tmp_path / "regions"
    inside.mkdir()
    np.savez(tmp_path / "secret.npz", instance_mask=label_map())
    np.savez(inside / "secret.npz", instance_mask=label_map() + 1)
    for name in ("../secret.jpg", str(tmp_path / "secret.jpg")):  # climbing out or absolute: the stem only
        np.testing.assert_array_equal(RegionFolder(inside)(IMAGE, name), label_map() + 1)


def test_folder_errors(tmp_path):
    with pytest.raises(ItaclipError, match="does not exist or is not a folder") as info:
        RegionFolder(tmp_path / "absent")
    one_line(info)
    with pytest.raises(ItaclipError, match="found by the image's name") as info:
        RegionFolder(tmp_path)(IMAGE)
    one_line(info)


# ------------------------------------------------------------------------------------ generator


@pytest.fixture(scope="module", params=["sam2", "sam"])
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def model(kind):
    return random_sam_model(kind)


def naive_region_map(model, kind, image, *, points_per_side=8, pred_iou_thresh=0.4,
                     stability_score_thresh=0.4, box_nms_thresh=0.7):
    """CorrCLIP's regions, one point prompt at a time, written out plainly."""
    from transformers import SamImageProcessor

    try:
        from transformers import Sam2ImageProcessor
    except ImportError:  # transformers 4.x
        from transformers import Sam2ImageProcessorFast as Sam2ImageProcessor

    size = model.config.prompt_encoder_config.image_size
    height, width = image.shape[:2]
    if kind == "sam2":
        processor = Sam2ImageProcessor(size={"height": size, "width": size})
    else:
        processor = SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size})
    scale = size / max(height, width)
    new_height, new_width = int(height * scale + 0.5), int(width * scale + 0.5)  # SAM's resized image
    with torch.no_grad():
        embeddings = model.get_image_embeddings(processor(images=image, return_tensors="pt")["pixel_values"])
        candidates = []
        for row in range(points_per_side):
            for col in range(points_per_side):
                x = np.float32((col + 0.5) / points_per_side * width)  # cell centres, in image pixels
                y = np.float32((row + 0.5) / points_per_side * height)
                if kind == "sam2":  # the image was stretched to size × size
                    point = [x / np.float32(width) * size, y / np.float32(height) * size]
                else:  # the longest side became `size`, the aspect ratio kept
                    point = [x * new_width / width, y * new_height / height]
                output = model(image_embeddings=embeddings,
                               input_points=torch.tensor([[[point]]], dtype=torch.float32),
                               input_labels=torch.tensor([[[1]]]), multimask_output=False)
                low_res = output.pred_masks[0, :, 0]  # (1, h, w)
                bilinear = dict(mode="bilinear", align_corners=False)
                if kind == "sam2":
                    logits = F.interpolate(low_res[None], (height, width), **bilinear)
                else:
                    padded = F.interpolate(low_res[None], (size, size), **bilinear)
                    logits = F.interpolate(padded[..., :new_height, :new_width], (height, width), **bilinear)
                logits = logits[0, 0]
                score = float(output.iou_scores[0, 0, 0])
                if pred_iou_thresh > 0 and not score > pred_iou_thresh:
                    continue
                stability = float((logits > 1).sum()) / float((logits > -1).sum())
                if stability_score_thresh > 0 and not stability >= stability_score_thresh:
                    continue
                candidates.append((score, (logits > 0).numpy()))

    def box(mask):
        ys, xs = np.nonzero(mask)
        return (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else (0, 0, 0, 0)

    def box_iou(a, b):  # boxes of pixel indices, areas as torchvision's (x1 - x0) · (y1 - y0)
        inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    kept = []
    for score, mask in sorted(candidates, key=lambda c: -c[0]):  # best predicted IoU first
        if all(box_iou(box(mask), box(other)) <= box_nms_thresh for _, other in kept):
            kept.append((score, mask))
    kept.sort(key=lambda c: int(c[1].sum()))  # by area, ascending; ties keep the IoU order
    region_map = np.zeros((height, width), dtype=np.int32)
    for region_id, (_, mask) in enumerate(kept, start=1):
        region_map[mask] = region_id  # larger masks overwrite smaller ones
    return region_map


def test_defaults_are_corrclips(model, kind):
    generator = RegionGenerator(model)
    assert generator.settings == {"points_per_side": 8, "pred_iou_thresh": 0.4, "stability_score_thresh": 0.4,
                                  "stability_score_offset": 1.0, "mask_threshold": 0.0, "box_nms_thresh": 0.7}
    if kind == "sam2":
        assert model.config.mask_decoder_config.dynamic_multimask_via_stability  # transformers' default: on …
        assert not generator.model.mask_decoder.dynamic_multimask_via_stability  # … CorrCLIP's SAM2: off


@pytest.mark.parametrize("batch", [64, 5])
def test_generator_equals_the_plain_reference(model, kind, batch):
    generator = RegionGenerator(model, points_per_batch=batch, **LOW[kind])
    region_map = generator.generate(IMAGE)
    reference = naive_region_map(model, kind, IMAGE, **{**dict(pred_iou_thresh=0.4), **LOW[kind]})
    assert region_map.dtype == np.int32 and region_map.shape == IMAGE.shape[:2]
    assert region_map.max() >= 10  # many masks: the order and the overwriting are really exercised
    np.testing.assert_array_equal(region_map, reference)


def squares_model(model):
    """``model``'s own class with its decoder replaced by a known answer: point prompt (x, y) gives a
    square around (x, y) on the low-resolution grid, sized and scored by the point's position, some
    of them soft (logits ±0.5: stability 0), some scored 0.3 (below CorrCLIP's IoU threshold)."""

    class Squares(type(model)):
        def get_image_embeddings(self, pixel_values, **kwargs):
            return pixel_values

        def forward(self, image_embeddings=None, input_points=None, input_labels=None, multimask_output=True,
                    **kwargs):
            size = self.config.prompt_encoder_config.image_size
            centres = (torch.arange(size // 4) + 0.5) * 4  # low-resolution cells, in input coordinates
            rows, cols = centres[:, None], centres[None, :]
            masks, scores = [], []
            for x, y in input_points[0, :, 0].tolist():
                cell = int(x // 32) + 8 * int(y // 32)
                half = (6, 14, 40, 90)[cell % 4]
                inside = ((cols - x).abs() <= half) & ((rows - y).abs() <= half)
                level = 0.5 if cell % 7 == 3 else 4.0
                masks.append(torch.where(inside, level, -level))
                scores.append(0.3 if cell % 5 == 1 else 0.5 + cell / 200)
            return SimpleNamespace(pred_masks=torch.stack(masks)[None, :, None],
                                   iou_scores=torch.tensor(scores)[None, :, None])

    squares = Squares(model.config).eval()
    squares.load_state_dict(model.state_dict())
    return squares


def test_filters_and_nms_on_known_masks(model, kind):
    squares = squares_model(model)
    generator = RegionGenerator(squares)  # CorrCLIP's thresholds
    masks, scores = generator.generate_masks(IMAGE)
    assert 5 <= len(masks) <= 40 and np.all(scores > 0.4)  # filtered, and overlapping squares suppressed
    np.testing.assert_array_equal(generator.generate(IMAGE), naive_region_map(squares, kind, IMAGE))
    unsuppressed = RegionGenerator(squares, box_nms_thresh=1.0).generate_masks(IMAGE)[0]
    assert len(unsuppressed) > len(masks)


def test_ids_area_order_and_overwriting(model, kind):
    generator = RegionGenerator(model, **LOW[kind])
    masks, scores = generator.generate_masks(IMAGE)
    region_map = generator.generate(IMAGE)
    areas = masks.sum(axis=(1, 2))
    assert len(masks) >= 10 and np.all(np.diff(areas) >= 0)  # ascending area
    assert set(np.unique(region_map)) <= set(range(len(masks) + 1))
    assert np.all((region_map == 0) == ~masks.any(0))  # 0 exactly where no mask is
    assert np.all(region_map[masks[-1]] == len(masks))  # the largest mask is written last: whole
    for region_id, mask in enumerate(masks, start=1):  # each id lies in its mask and no later mask covers it
        inside = region_map == region_id
        assert np.all(mask[inside]) and not np.any(masks[region_id:][:, inside])
    assert generator.generate(IMAGE).tobytes() == region_map.tobytes()  # deterministic


def test_point_prompts_follow_each_models_resize(model, kind):
    seen = []
    hook = model.prompt_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_points"][0, :, 0].clone()), with_kwargs=True)
    try:
        RegionGenerator(model, points_per_side=2).generate(IMAGE)  # a 120 × 160 image, input 256
    finally:
        hook.remove()
    points = torch.cat(seen)
    # cell centres (40, 30), (120, 30), (40, 90), (120, 90); SAM2 stretches to 256 × 256, SAM scales by 1.6
    if kind == "sam2":
        expected = [[64, 64], [192, 64], [64, 192], [192, 192]]
    else:
        expected = [[64, 48], [192, 48], [64, 144], [192, 144]]
    torch.testing.assert_close(points, torch.tensor(expected, dtype=torch.float32))


def test_no_masks_is_all_unsegmented(model):
    generator = RegionGenerator(model, pred_iou_thresh=0.999)
    assert not generator.generate(IMAGE).any()


@pytest.mark.parametrize("bad", [dict(points_per_side=0), dict(points_per_side=100), dict(points_per_batch=0),
                                 dict(pred_iou_thresh="high"), dict(box_nms_thresh=float("nan"))])
def test_bad_settings_are_one_line(model, bad, kind, offline_hub):
    with pytest.raises(ItaclipError) as info:
        RegionGenerator(model, **bad)
    one_line(info)
    with pytest.raises(ItaclipError) as before_any_download:  # the weights are not in the (empty) cache
        RegionGenerator.from_pretrained(kind, **bad)
    assert str(before_any_download.value) == str(info.value)


# -------------------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def model_folder(model, kind, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"{kind}-weights")
    model.save_pretrained(folder)
    return folder


def test_from_a_folder(model, kind, model_folder):
    loaded = RegionGenerator.from_pretrained(kind, model_folder, device="cpu", **LOW[kind])
    assert loaded.identity["weights"].startswith("folder-sha256:")
    np.testing.assert_array_equal(loaded.generate(IMAGE), RegionGenerator(model, **LOW[kind]).generate(IMAGE))


def test_sam2_video_checkpoint_loads_as_the_image_model(tmp_path):
    """SAM2's hub checkpoints are Sam2VideoModel folders (model_type sam2_video); the image part is used."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    model = random_sam_model("sam2")
    parts = {name: getattr(model.config, name).to_dict()
             for name in ("vision_config", "prompt_encoder_config", "mask_decoder_config")}
    memory = dict(memory_attention_hidden_size=32, memory_encoder_hidden_size=32, memory_fuser_embed_dim=32,
                  memory_encoder_output_channels=16, mask_downsampler_embed_dim=32)
    video = Sam2VideoModel(Sam2VideoConfig(**parts, **memory))
    video.load_state_dict(model.state_dict(), strict=False)  # every image-model tensor; memory parts random
    video.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "sam2_video"
    loaded = RegionGenerator.from_pretrained("sam2", tmp_path, **LOW["sam2"])
    expected = RegionGenerator(model, **LOW["sam2"]).generate(IMAGE)
    np.testing.assert_array_equal(loaded.generate(IMAGE), expected)


def test_the_other_kinds_folder_is_refused(kind, model_folder):
    other = "sam" if kind == "sam2" else "sam2"
    message = f"is a {kind.upper()} model: use --region-generator {kind}"
    with pytest.raises(ItaclipError, match=message) as info:
        RegionGenerator.from_pretrained(other, model_folder)
    one_line(info)


def test_pickled_weights_are_refused(tmp_path, model_folder):
    (tmp_path / "config.json").write_bytes((model_folder / "config.json").read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    kind = json.loads((tmp_path / "config.json").read_text())["model_type"]
    with pytest.raises(ItaclipError, match="only pytorch_model.bin .a pickle") as info:
        RegionGenerator.from_pretrained(kind, tmp_path)
    one_line(info)


def test_hub_id_from_the_cache_offline(offline_hub, model, kind, model_folder):
    commit = fill_hub_cache(offline_hub, "tinyorg/tiny-sam", model_folder)
    loaded = RegionGenerator.from_pretrained(kind, "tinyorg/tiny-sam", **LOW[kind])
    assert loaded.identity["weights"] == f"hf:tinyorg/tiny-sam@{commit}"
    np.testing.assert_array_equal(loaded.generate(IMAGE), RegionGenerator(model, **LOW[kind]).generate(IMAGE))


def test_hub_id_offline_and_not_cached_is_one_line(offline_hub, kind, model_folder):
    message = "config.json is not in the Hugging Face cache .* cannot be reached"
    with pytest.raises(ItaclipError, match=message) as info:
        RegionGenerator.from_pretrained(kind)  # the default weights, never downloaded here
    one_line(info)
    fill_hub_cache(offline_hub, "tinyorg/config-only", model_folder, files={"config.json"})
    with pytest.raises(ItaclipError, match="model.safetensors is not in the Hugging Face cache") as info:
        RegionGenerator.from_pretrained(kind, "tinyorg/config-only")
    one_line(info)


def test_non_sam_config_is_refused_before_weights(offline_hub, tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    fill_hub_cache(offline_hub, "openai/tiny-clip", folder)  # config only: the weights are never asked for
    with pytest.raises(ItaclipError, match=r"not a transformers SAM2 model \(model_type 'clip'\)") as info:
        RegionGenerator.from_pretrained("sam2", "openai/tiny-clip")
    one_line(info)


def test_unknown_kind_and_weights(tmp_path):
    with pytest.raises(ItaclipError, match="unknown region generator 'sam3'") as info:
        RegionGenerator.from_pretrained("sam3")
    one_line(info)
    (tmp_path / "sam.pt").write_bytes(b"x")
    with pytest.raises(ItaclipError, match="is a file: region weights are a transformers folder") as info:
        RegionGenerator.from_pretrained("sam", tmp_path / "sam.pt")
    one_line(info)


def test_missing_transformers_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails
    message = r"needs transformers 4\.56 or newer \(pip install 'itaclip\[hf\]'\)"
    with pytest.raises(ItaclipError, match=message) as info:
        RegionGenerator.from_pretrained("sam2", "facebook/sam2.1-hiera-tiny")
    one_line(info)


# ---------------------------------------------------------------------------------------- cache


class Counting:
    """A generator wrapper that counts the maps it makes."""

    def __init__(self, generator):
        self.generator, self.calls = generator, 0
        self.identity, self.description = generator.identity, generator.description

    def generate(self, image):
        self.calls += 1
        return self.generator.generate(image)


@pytest.fixture
def counting(model, kind):
    return Counting(RegionGenerator(model, **LOW[kind]))


def test_cache_hit_and_miss(counting, tmp_path):
    source = GeneratedRegions(counting, RegionCache(tmp_path))
    first = source(IMAGE, "a.jpg")
    again = source(IMAGE.copy(), "renamed.png")  # the pixels decide, not the name
    np.testing.assert_array_equal(first, again)
    assert again.dtype == np.int32 and counting.calls == 1
    assert source.stats["generated"] == 1 and source.stats["cached"] == 1 and source.stats["seconds"] > 0
    other = IMAGE.copy()
    other[0, 0, 0] ^= 1
    source(other, "a.jpg")  # one pixel changed: another entry
    assert counting.calls == 2
    fresh = GeneratedRegions(counting, RegionCache(tmp_path))  # another process: the same entries
    np.testing.assert_array_equal(fresh(IMAGE), first)
    assert counting.calls == 2


def test_every_setting_is_part_of_the_key(model, kind, tmp_path):
    cache = RegionCache(tmp_path)
    base = RegionGenerator(model, **LOW[kind])
    keys = {cache.key(IMAGE, base.identity)}
    for change in (dict(points_per_side=4), dict(pred_iou_thresh=0.3), dict(stability_score_thresh=0.2),
                   dict(stability_score_offset=0.5), dict(mask_threshold=0.1), dict(box_nms_thresh=0.8)):
        keys.add(cache.key(IMAGE, RegionGenerator(model, **{**LOW[kind], **change}).identity))
    keys.add(cache.key(IMAGE, RegionGenerator(model, weights_identity="hf:x/y@1", **LOW[kind]).identity))
    keys.add(cache.key(IMAGE, RegionGenerator(random_sam_model(kind, seed=1), **LOW[kind]).identity))
    assert len(keys) == 9
    batched = RegionGenerator(model, points_per_batch=3, **LOW[kind])
    assert cache.key(IMAGE, batched.identity) in keys  # the batch size is execution only


def test_damaged_entry_is_made_again(counting, tmp_path):
    cache = RegionCache(tmp_path)
    source = GeneratedRegions(counting, cache)
    expected = source(IMAGE)
    path = cache.store.path(cache.key(IMAGE, counting.identity))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"):
        np.testing.assert_array_equal(source(IMAGE), expected)
    assert counting.calls == 2
    np.testing.assert_array_equal(source(IMAGE), expected)  # overwritten: a hit again
    assert counting.calls == 2
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.warns(UserWarning, match="corrupt"):
        source(IMAGE)
    assert counting.calls == 3


def test_cache_is_bounded(tmp_path):
    cache = RegionCache(tmp_path, max_bytes=10_000)
    rng = np.random.default_rng(0)
    keys = []
    for index in range(12):  # noisy maps: ~2 kB each
        key = cache.key(IMAGE + index, {"generator": "test"})
        cache.put(key, rng.integers(0, 9999, size=(30, 40)))
        keys.append(key)
        if index == 0:
            first = cache.store.path(key)
    assert cache.get(keys[0]) is not None  # a hit refreshes the first entry …
    import os

    os.utime(first, (2e9, 2e9))
    assert cache.evict() > 0
    sizes = sum(p.stat().st_size for p in tmp_path.glob("*/*.pt"))
    assert sizes <= 8_000 and first.exists()  # … so the least recently used go first


# ----------------------------------------------------------------------------------- the factory


def test_region_source_choices(tmp_path, model_folder, kind):
    for both_or_neither in (dict(), dict(regions_dir=tmp_path, generator="sam2")):
        with pytest.raises(ItaclipError, match="CorrCLIP needs region maps") as info:
            region_source(**both_or_neither)
        one_line(info)
    with pytest.raises(ItaclipError, match="apply to --region-generator") as info:
        region_source(regions_dir=tmp_path, weights="facebook/sam-vit-base")
    one_line(info)
    np.savez(tmp_path / "a.npz", instance_mask=label_map())
    files = region_source(regions_dir=tmp_path)
    assert files.identity == {"source": "files", "folder": str(tmp_path.resolve())}
    np.testing.assert_array_equal(files(IMAGE, "a.jpg"), label_map())
    generated = region_source(generator=kind, weights=model_folder, cache=tmp_path / "cache", device="cpu",
                              **LOW[kind])
    assert generated.identity["source"] == "generated" and generated.identity["generator"] == kind
    assert "cached in" in generated.description
    region_map = generated(IMAGE)
    assert region_map.max() >= 10 and generated(IMAGE).tobytes() == region_map.tobytes()
    assert generated.stats["cached"] == 1
