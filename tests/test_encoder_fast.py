"""The encoder's fast-path pieces against plain computations written here: in-place QuickGELU,
self-self maps on strided (B, heads, T, hd) views, batch independence, and the same features
under bf16 autocast whichever way the residual stream is kept (fp32)."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import QuickGELU

from itaclip.engine.encoders.last_block import DenseEncoder, self_self_attention
from itaclip.engine.encoders.vit import quick_gelu_
from itaclip.engine.weights import load_clip

pytestmark = pytest.mark.usefixtures("single_thread")


def test_quick_gelu_in_place_is_bit_identical():
    x = torch.randn(37, 300) * 4
    expected = QuickGELU()(x.clone())
    y = x.clone()
    out = quick_gelu_(y)
    assert out.data_ptr() == y.data_ptr()
    assert torch.equal(out, expected)


@pytest.mark.parametrize("terms", [("q-q", "k-k"), ("q-k",), ("q-q", "k-k", "v-v"), ("v-v",)])
def test_self_self_attention_on_strided_views(terms):
    batch, heads, tokens, head_dim = 2, 3, 11, 8
    qkv = torch.randn(batch, tokens, 3, heads, head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # strided views, as the encoder passes them
    assert not q.is_contiguous()
    scale = head_dim ** -0.5
    got = self_self_attention(terms, q, k, v, scale)
    for b in range(batch):
        for h in range(heads):
            a = {"q": q[b, h], "k": k[b, h], "v": v[b, h]}
            plain = torch.zeros(tokens, tokens)
            for term in terms:
                left, right = term.split("-")
                logits = (a[left] @ a[right].T) * scale
                plain += torch.softmax(logits, dim=-1)
            torch.testing.assert_close(got[b, h], plain, atol=1e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def two_head_visual(two_head_ckpt):
    return load_clip(two_head_ckpt, device="cpu").visual


def test_batch_independence(two_head_visual):
    encoder = DenseEncoder(two_head_visual)
    images = torch.randn(3, 3, 224, 160)
    with torch.inference_mode():
        batched, grid = encoder(images)
        single = torch.cat([encoder(images[i:i + 1])[0] for i in range(3)])
    assert grid == (14, 10)
    torch.testing.assert_close(batched, single, atol=2e-6, rtol=0)


def test_input_untouched_and_repeatable(two_head_visual):
    """The in-place residual adds must not write into anything the caller or the model holds."""
    encoder = DenseEncoder(two_head_visual, remove_ffn=False)
    images = torch.randn(2, 3, 224, 224)
    before_images = images.clone()
    before_params = {n: p.clone() for n, p in two_head_visual.named_parameters()}
    with torch.inference_mode():
        first, _ = encoder(images)
        second, _ = encoder(images)
    assert torch.equal(first, second)
    assert torch.equal(images, before_images)
    for name, param in two_head_visual.named_parameters():
        assert torch.equal(param, before_params[name]), name


def test_bf16_autocast_close_to_fp32(two_head_visual):
    encoder = DenseEncoder(two_head_visual)
    images = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        exact, _ = encoder(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast, _ = encoder(images)
    cosine = torch.nn.functional.cosine_similarity(fast.float(), exact, dim=-1)
    assert cosine.min() > 0.98


@pytest.mark.parametrize("chunk_elements", [1, 37 * 45 * 2, 37 * 45 * 4])
def test_pamr_in_query_chunks_equals_naive(monkeypatch, chunk_elements):
    """PAMR refines a few query channels at a time: bit-identical to the whole map at once, and
    equal to the naive reference (tests/naive_reference.py) within rounding."""
    import itaclip.engine.refine.pamr as pamr_module
    import naive_reference as ref

    g = torch.Generator().manual_seed(3)
    guide = torch.randn(3, 37, 45, generator=g)
    logits = torch.randn(7, 37, 45, generator=g)
    monkeypatch.setattr(pamr_module, "CHUNK_ELEMENTS", 1 << 40)
    whole = pamr_module.pamr(guide, logits, 4, (2, 5))
    monkeypatch.setattr(pamr_module, "CHUNK_ELEMENTS", chunk_elements)
    chunked = pamr_module.pamr(guide, logits, 4, (2, 5))
    assert torch.equal(chunked, whole)
    torch.testing.assert_close(chunked, ref.reference_pamr(guide, logits, 4, (2, 5)), atol=1e-6, rtol=0)


def test_int8_close_to_fp32_and_engine_restored(two_head_visual):
    engine = torch.backends.quantized.engine
    int8 = DenseEncoder(two_head_visual, int8=True)
    assert torch.backends.quantized.engine == engine
    exact = DenseEncoder(two_head_visual)
    images = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        cosine = torch.nn.functional.cosine_similarity(int8(images)[0], exact(images)[0], dim=-1)
    assert cosine.min() > 0.98


def test_low_precision_weight_copy_equals_autocast_casts(two_head_visual):
    """Keeping the projections in bf16 gives exactly what autocast's per-call casts give."""
    images = torch.randn(2, 3, 224, 224)
    plain = DenseEncoder(two_head_visual)
    kept = DenseEncoder(two_head_visual, autocast_dtype=torch.bfloat16)
    assert kept.trunk.linears[0]["qkv"].weight.dtype == torch.bfloat16
    assert two_head_visual.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float32
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(plain(images)[0], kept(images)[0])


@pytest.mark.parametrize("queries", [1, 63, 64, 65, 183])
def test_add_upsampled_equals_upsample_then_add(queries):
    """Windows' logits are upsampled into the canvas a few queries at a time: equal to upsampling
    the whole (Q, gh, gw) map and adding it, written plainly."""
    import torch.nn.functional as F

    from itaclip.engine.views import add_upsampled

    g = torch.Generator().manual_seed(4)
    canvas = torch.randn(queries, 40, 50, generator=g)
    logits = torch.randn(queries, 3, 4, generator=g)
    expected = canvas.clone()
    expected[:, 5:37, 2:50] += F.interpolate(logits[None], size=(32, 48), mode="bilinear", align_corners=False)[0]
    add_upsampled(canvas[:, 5:37, 2:50], logits)
    assert torch.equal(canvas, expected)
