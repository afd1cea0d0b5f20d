"""``itaclip bench`` end to end on tiny sizes with a tiny random CLIP (no timing assertions), the
encoder's FLOP count against torch's own FLOP counter, and the similarity-map hook the bench uses."""

from __future__ import annotations

import json

import pytest
import torch

from itaclip.benchmark.inputs import parse_mode, synthetic_image
from itaclip.cli import main
from itaclip.engine.errors import ItaclipError

TINY = ["--size", "40x56", "--short-side", "48", "--crop", "32", "--stride", "16", "--device", "cpu"]


@pytest.mark.timeout(600)  # heavier than the suite's default
def test_bench_runs_and_prints_tables(tiny_ckpt, tmp_path, capsys):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    code = main(["bench", "--weights", str(tiny_ckpt), *TINY, "--inputs", "voc,cityscapes",
                 "--modes", "fp32,batch1,stride32,bf16,int8", "--text-cache", str(tmp_path / "text"),
                 "--json", str(out_json), "--markdown", str(out_md), "--startup-runs", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| input | mode |" in printed and "| text vocabulary |" in printed
    assert "Load average" in printed and "torch" in printed
    assert "Start-up (fresh processes, median of 1): `import torch`" in printed
    assert out_md.read_text().strip() == printed.strip()

    data = json.loads(out_json.read_text())
    startup = data["machine"]["startup"]
    assert startup["runs"] == 1 and 0 < startup["import_torch_s"]
    assert 0 < startup["torch_s"] < startup["ready_s"]
    assert 0 < startup["weights_s"] < startup["ready_s"] and "open_clip" in startup["libraries"]
    assert 0 < startup["import_torch_s"] < startup["import_libraries_s"]
    records = data["images"]
    assert [(r["input"], r["mode"]) for r in records] == [
        (i, m) for i in ("voc", "cityscapes") for m in ("fp32", "batch1", "stride32", "bf16", "int8")
    ]
    for r in records:
        assert r["seconds_per_image"] > 0 and r["encoder_s"] > 0
        assert r["encoder_s"] <= r["seconds_per_image"]
        assert r["peak_memory_gb"] > 0
        assert r["vit_passes"] == r["windows"] * r["views"]
    voc = {r["mode"]: r for r in records if r["input"] == "voc"}
    assert voc["fp32"]["reference"] and voc["fp32"]["agreement_vs_fp32"] is None
    assert voc["batch1"]["agreement_vs_fp32"] == 1.0  # batching never changes fp32 labels
    assert voc["batch1"]["batch_size"] == 1 and voc["stride32"]["stride"] == 32
    assert voc["stride32"]["windows"] < voc["fp32"]["windows"]
    assert 0.0 <= voc["int8"]["agreement_vs_fp32"] <= 1.0
    assert voc["batch1"]["query_agreement_vs_fp32"] == 1.0
    assert 0.0 <= voc["bf16"]["query_agreement_vs_fp32"] <= 1.0
    assert voc["fp32"]["queries"] == 80 and voc["fp32"]["resized"] == [48, 67]

    (text,) = data["text"]
    assert text["vocabulary"] == "voc21" and text["prompts"] == text["texts"] * 80
    assert text["first_s"] > 0 and text["cached_s"] > 0 and text["plus_one_s"] > 0
    # the class added to voc21 costs its own texts only: its name and its auxiliary text
    assert text["plus_one_source"].startswith(f"{text['texts'] + 2} texts: {text['texts']} already in memory, "
                                              "2 encoded")


def test_gpu_only_mode_is_skipped_on_cpu(tiny_ckpt, tmp_path, capsys):
    code = main(["bench", "--weights", str(tiny_ckpt), *TINY, "--inputs", "voc", "--modes", "fp32,fp16",
                 "--no-text", "--startup-runs", "0", "--no-warmup", "--text-cache", str(tmp_path / "text"),
                 "--json", str(tmp_path / "b.json")])
    assert code == 0
    assert "fp16: skipped" in capsys.readouterr().err
    assert [r["mode"] for r in json.loads((tmp_path / "b.json").read_text())["images"]] == ["fp32"]


def test_bad_options(tiny_ckpt, capsys):
    assert main(["bench", "--weights", str(tiny_ckpt), "--inputs", "kitti", "--no-text"]) == 2
    assert "unknown input" in capsys.readouterr().err
    assert main(["bench", "--weights", str(tiny_ckpt), "--modes", "fp64", "--device", "cpu"]) == 2
    assert "unknown mode" in capsys.readouterr().err
    assert main(["bench", "--weights", str(tiny_ckpt), "--modes", "stride0", "--device", "cpu"]) == 2
    assert "stride" in capsys.readouterr().err
    assert main(["bench", "--weights", str(tiny_ckpt), "--startup-runs", "-1", "--device", "cpu"]) == 2
    assert "--startup-runs must be >= 0" in capsys.readouterr().err


def test_unwritable_report_is_one_line(tiny_ckpt, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["bench", "--weights", str(tiny_ckpt), *TINY, "--inputs", "voc", "--modes", "fp32", "--no-text",
                 "--startup-runs", "0", "--no-warmup", "--text-cache", str(tmp_path / "text"),
                 "--json", str(blocker / "b.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"itaclip bench: error: cannot write {blocker / 'b.json'}: ")


def test_parse_mode():
    assert parse_mode("bf16+stride56").overrides == {"precision": "bf16", "stride": 56}
    assert parse_mode("batch1").overrides == {"batch_size": 1}
    assert parse_mode("fp32").precision == "fp32"
    with pytest.raises(ItaclipError):
        parse_mode("stridex")
    assert parse_mode("naclip+bf16").overrides == {"method": "naclip", "precision": "bf16"}
    assert parse_mode("sclip+authors").authors and not parse_mode("sclip").authors
    with pytest.raises(ItaclipError, match="needs a method"):
        parse_mode("authors")


def test_bench_methods(tiny_ckpt, tmp_path):
    """A method mode runs its last block in the input's ITACLIP setting; +authors runs its own preset
    (NACLIP's VOC21: the whole image in one window, one view) with its own class list."""
    out_json = tmp_path / "bench.json"
    code = main(["bench", "--weights", str(tiny_ckpt), "--size", "40x56", "--short-side", "48", "--device", "cpu",
                 "--inputs", "voc", "--modes", "fp32,naclip,maskclip+stride32,naclip+authors,clearclip+authors",
                 "--no-text", "--startup-runs", "0", "--text-cache", str(tmp_path / "text"),
                 "--json", str(out_json)])
    assert code == 0
    records = {r["mode"]: r for r in json.loads(out_json.read_text())["images"]}
    assert records["naclip"]["windows"] == records["fp32"]["windows"] and records["naclip"]["views"] == 5
    # a method is compared with its own first exact mode, not with ITACLIP's
    assert records["naclip"]["agreement_vs_fp32"] is None and records["naclip"]["reference"]
    assert records["maskclip+stride32"]["stride"] == 32
    own = records["naclip+authors"]
    assert (own["windows"], own["views"], own["vit_passes"], own["queries"]) == (1, 1, 1, 56)
    assert records["clearclip+authors"]["queries"] == 21


def test_synthetic_image_is_deterministic():
    a, b = synthetic_image(30, 40), synthetic_image(30, 40)
    assert a.shape == (30, 40, 3) and a.dtype.name == "uint8" and (a == b).all()


@pytest.mark.parametrize("options", [
    {}, {"remove_ffn": False}, {"intermediate_layers": ()}, {"attention": ("q-k",)},
    {"attention": ("q-q", "k-k", "v-v"), "intermediate_layers": (7, 8, 9, 10)},
    # the method zoo's last blocks (itaclip.engine.methods.encoder_options)
    {"attention": ("identity",), "intermediate_layers": (), "remove_ffn": False},
    {"attention": ("q-q",), "intermediate_layers": (), "residual": False},
    {"attention": ("k-k",), "intermediate_layers": (), "residual": False, "gaussian_std": 5.0},
])
def test_flop_formula_matches_torch_flop_counter(tiny_ckpt, options):
    """torch's FlopCounterMode counts the convolution and every matmul except SDPA's kernel on the
    CPU, which is added here plainly: q·kᵀ and A·v, 2·T²·D FLOPs each, in blocks 1…L-1."""
    from torch.utils.flop_counter import FlopCounterMode

    from itaclip.engine.encoders.last_block import DenseEncoder
    from itaclip.engine.weights import load_clip

    visual = load_clip(tiny_ckpt, device="cpu").visual
    encoder = DenseEncoder(visual, **options)
    batch, grid_h, grid_w = 2, 14, 10
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        encoder(torch.randn(batch, 3, 16 * grid_h, 16 * grid_w))
    tokens, width, blocks = 1 + grid_h * grid_w, visual.conv1.weight.shape[0], encoder.trunk.depth
    sdpa = (blocks - 1) * 2 * (2 * tokens * tokens * width)
    assert counter.get_total_flops() + batch * sdpa == batch * encoder.flops(grid_h, grid_w)


def test_similarity_map_hook_sees_the_maps_and_changes_nothing(tiny_ckpt, smooth_image):
    """``Segmenter.segment(on_similarity_maps=...)`` hands over the maps the result is computed
    from (equal to ``similarity_maps``) and leaves the result bit-for-bit as without the hook."""
    from itaclip.engine.predictor import Segmenter

    seg = Segmenter(weights=tiny_ckpt, preset="voc21", device="cpu", short_side=64, crop=32, stride=16,
                    text_cache=False)
    seg.set_vocabulary("cat, dog, sky")
    seen = []
    with_hook = seg.segment(smooth_image, on_similarity_maps=lambda maps: seen.append(maps.clone()))
    plain = seg.segment(smooth_image)
    (maps,) = seen
    assert maps.shape == (len(seg.vocabulary.queries), *smooth_image.shape[:2])
    with torch.inference_mode():
        expected = seg.similarity_maps(smooth_image, seg.text_features)
    torch.testing.assert_close(maps, expected, rtol=0, atol=0)
    assert (with_hook.labels == plain.labels).all()
    assert (with_hook.probs == plain.probs).all()


def test_bench_new_methods_against_bare_passes(tiny_ckpt, tmp_path, capsys):
    """``--bare``: each mode's ViT passes timed again through CLIP's own vision tower (interleaved with
    the repeats, the fastest kept), in a table of its own; the new methods' modes run (their windows
    are square: SC-CLIP's outlier search needs more than 30 patches, here 6×6 at 96 px)."""
    out_json = tmp_path / "bench.json"
    code = main(["bench", "--weights", str(tiny_ckpt), "--size", "48x48", "--short-side", "96", "--device", "cpu",
                 "--inputs", "voc", "--modes", "scclip+stride48,sfp+authors,pearl+authors,resclip+stride48",
                 "--no-text", "--bare", "--repeat", "2", "--text-cache", str(tmp_path / "text"),
                 "--json", str(out_json)])
    assert code == 0
    records = {r["mode"]: r for r in json.loads(out_json.read_text())["images"]}
    assert set(records) == {"scclip+stride48", "sfp+authors", "pearl+authors", "resclip+stride48"}
    for record in records.values():
        assert record["bare_passes_s"] > 0 and record["best_s"] <= record["seconds_per_image"] + 1e-9
        assert record["load_s"] > 0 and record["vit_passes"] >= 1
    assert records["pearl+authors"]["vit_passes"] == 1  # PEARL's VOC21: the whole image
    assert "| voc | resclip+stride48 |" in capsys.readouterr().out
