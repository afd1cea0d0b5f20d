"""ProxyCLIP and CorrCLIP in the apps: ``itaclip bench`` modes (random DINO, synthetic regions, FLOPs),
the demo (guide model and region generator loaded once, with progress), and the Label Studio
backend (regions from its region source)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from helpers.guided import regions_for
from helpers.images import make_smooth_image

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("single_thread")]

itaclip = pytest.importorskip("itaclip")
from itaclip.cli import main  # noqa: E402


class Stripes:
    """A region source: vertical stripes 20 pixels wide (no generator needed), counting its calls."""

    identity = {"source": "stripes"}
    description = "striped test regions"

    def __init__(self):
        self.calls = 0

    def __call__(self, image, name=None):
        self.calls += 1
        height, width = np.asarray(image).shape[:2]
        return (np.arange(width)[None, :] // 20).repeat(height, axis=0)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "photo.png"
    cv2.imwrite(str(path), make_smooth_image(60, 80, seed=3)[:, :, ::-1])
    return path


# ----------------------------------------------------------------------------------------- bench


def test_bench_modes_of_the_guided_methods(tiny_ckpt, dino_ckpt, tmp_path):
    out_json = tmp_path / "bench.json"
    modes = "fp32,proxyclip,corrclip,proxyclip+authors,corrclip+authors,corrclip+int8"
    assert main(["bench", "--weights", str(tiny_ckpt), "--guide-weights", str(dino_ckpt), "--size", "40x56",
                 "--short-side", "48", "--crop", "32", "--stride", "16", "--device", "cpu", "--inputs", "voc",
                 "--modes", modes, "--no-text", "--no-warmup", "--text-cache", str(tmp_path / "text"),
                 "--json", str(out_json)]) == 0
    records = {r["mode"]: r for r in json.loads(out_json.read_text())["images"]}
    assert list(records) == modes.split(",")
    for name, record in records.items():
        assert record["seconds_per_image"] > 0 and record["vit_tflop"] > 0, name
    # each method against its own first exact mode: corrclip+int8 against corrclip
    assert [name for name, record in records.items() if record["reference"]] == modes.split(",")[:-1]
    assert 0.0 <= records["corrclip+int8"]["agreement_vs_fp32"] <= 1.0
    assert records["corrclip+authors"]["queries"] == 46 and records["proxyclip"]["windows"] > 1


def test_bench_uses_a_random_dino_with_a_random_clip(tmp_path, monkeypatch):
    """Without --weights the bench runs random CLIP and DINO weights of ViT-B/16's and ViT-B/8's shapes
    (saved once beside each other); checked here without building them."""
    from itaclip.benchmark import runner

    saved = []
    monkeypatch.setattr(runner, "random_weights", lambda path, log: saved.append(path) or "clip.pt")
    monkeypatch.setattr(runner, "random_guide", lambda path, log: saved.append(path) or "dino.pth")
    seen = {}

    def stop(request, weights, inputs, modes, log):
        seen.update(weights=weights, guide=request.overrides.get("guide_weights"))
        return []

    monkeypatch.setattr(runner, "bench_images", stop)
    runner.run_bench(runner.BenchRequest(modes=[runner.Mode("proxyclip", {"method": "proxyclip"})], text=False,
                                         model_cache=tmp_path / "cache" / "clip.pt", device="cpu",
                                         startup_runs=0))
    assert seen == {"weights": "clip.pt", "guide": "dino.pth"}
    assert saved[1] == tmp_path / "cache" / "random_dino_vitb8.pth"


@pytest.mark.parametrize("method", ["proxyclip", "corrclip"])
def test_flops_count_the_matmuls(tiny_ckpt, dino_ckpt, method):
    """The guided encoders' FLOP formulas against torch's FlopCounterMode (which misses SDPA's CPU
    kernel — added here plainly — and over CorrCLIP's few region tokens, which the formula leaves out)."""
    from torch.utils.flop_counter import FlopCounterMode

    from itaclip.engine.encoders import WindowContext

    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False, method=method,
                            guide_weights=str(dino_ckpt))
    encoder = seg.encoder
    height, width = 112, 168
    images = torch.randn(2, 3, height, width)
    context = WindowContext(text=torch.zeros(3, 32), regions=torch.from_numpy(
        regions_for(height, width, seed=1, count=3)).float()[None].repeat(2, 1, 1))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        encoder(images, context)
    clip_tokens, cells = 1 + (height // 16) * (width // 16), (height // 8) * (width // 8)
    dino_blocks = encoder.dino.depth if method == "proxyclip" else encoder.dino.depth - 1
    sdpa = (encoder.trunk.depth - 1) * 4 * clip_tokens ** 2 * encoder.trunk.width \
        + dino_blocks * 4 * (1 + cells) ** 2 * encoder.dino.width
    counted = counter.get_total_flops() + 2 * sdpa
    expected = 2 * encoder.flops_at(height, width)
    assert counted == expected if method == "proxyclip" else 0 < counted - expected < 0.05 * expected


# ------------------------------------------------------------------------------------------ demo


def test_demo_loads_guide_and_regions_once(tmp_path, image_file, tiny_ckpt, dino_ckpt):
    from itaclip.demo import DemoEngine

    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False, guide_weights=str(dino_ckpt))
    made = []

    def make_regions():
        made.append(Stripes())
        return made[-1]

    engine = DemoEngine(segmenter=seg, overrides={"short_side": 112}, work_dir=tmp_path / "w", regions=make_regions)
    messages = []
    progress = lambda fraction, text: messages.append(text)  # noqa: E731
    engine.segment(image_file, "cat, dog", method="itaclip", progress=progress)
    assert not made and not any("loading" in m for m in messages)
    for method in ("proxyclip", "corrclip", "corrclip", "proxyclip"):
        result = engine.segment(image_file, "cat, dog, sky", method=method, progress=progress)
        expected = seg.for_method(method, "default", short_side=112, guide_weights=str(dino_ckpt))
        api = expected.segment(str(image_file), "cat, dog, sky", regions=Stripes()(np.zeros((60, 80))))
        np.testing.assert_array_equal(result.labels, api.labels)
    loading = [m for m in messages if "loading" in m]
    assert loading == [f"loading the guide model {dino_ckpt} (once)", "loading the region generator (once)"]
    assert len(made) == 1 and made[0].calls == 2


def test_demo_without_a_region_generator_says_so(tmp_path, image_file, tiny_ckpt, dino_ckpt):
    from itaclip.demo import DemoEngine

    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False, guide_weights=str(dino_ckpt))
    engine = DemoEngine(segmenter=seg, overrides={"short_side": 112}, work_dir=tmp_path / "w")
    with pytest.raises(itaclip.ItaclipError, match="needs region maps and this demo has no region generator"):
        engine.segment(image_file, "cat, dog", method="corrclip")


# ---------------------------------------------------------------------------------- Label Studio


def test_label_studio_predictor_with_corrclip(tmp_path, image_file, tiny_ckpt, dino_ckpt, monkeypatch):
    """The backend's predictor serves CorrCLIP: the task's image gets its map from the region source;
    the brush masks are the labels of ``itaclip segment`` (the API)."""
    from itaclip.engine.vocabulary import resolve_vocabulary
    from itaclip.integrations.label_studio import LabelStudioPredictor

    monkeypatch.setenv("LOCAL_FILES_DOCUMENT_ROOT", str(image_file.parent))
    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=False, method="corrclip",
                            guide_weights=str(dino_ckpt), short_side=112, region_source=Stripes())
    predictor = LabelStudioPredictor(seg, resolve_vocabulary("cat, dog, sky"))
    (prediction,) = predictor.predict([{"id": 1, "data": {"image": f"/data/local-files/?d={image_file.name}"}}])
    assert "error" not in prediction and prediction["result"]
    labels = seg.segment(str(image_file)).labels
    assert {r["value"]["brushlabels"][0] for r in prediction["result"]} == \
        {["cat", "dog", "sky"][i] for i in np.unique(labels)}
