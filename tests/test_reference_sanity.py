"""The naive reference (tests/naive_reference.py) checked against independent facts: open_clip's
encoders, torchvision's transforms, a convolution-based PAMR, hand-derived window grids and an
independent bicubic sampler for the positional table. Nothing here touches the engine."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import naive_reference as ref
from helpers.images import make_random_image, make_smooth_image

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def open_clip_tiny(tiny_ckpt):
    import open_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.load_openai_model(str(tiny_ckpt), precision="fp32", device="cpu")
    return model.eval()


@pytest.fixture(scope="module")
def open_clip_two_head(two_head_ckpt):
    import open_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.load_openai_model(str(two_head_ckpt), precision="fp32", device="cpu")
    return model.eval()


def _normalised(h, w, seed=0):
    return ref.reference_normalise(make_smooth_image(h, w, seed))


# ------------------------------------------------------------------------------ weights and shapes


def test_state_is_fp32_and_fp16_values_are_kept(tiny_ckpt, tiny_state):
    raw = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    assert raw["visual.conv1.weight"].dtype == torch.float16
    assert all(v.dtype == torch.float32 for v in tiny_state.values())
    assert torch.equal(tiny_state["visual.conv1.weight"], raw["visual.conv1.weight"].float())


def test_dims(tiny_state, two_head_state, six_layer_state):
    assert ref.vision_dims(tiny_state) == dict(width=64, patch=16, heads=1, layers=12, grid=14, embed_dim=32)
    assert ref.vision_dims(two_head_state)["heads"] == 2
    assert ref.text_dims(two_head_state)["heads"] == 2
    assert ref.vision_dims(six_layer_state)["layers"] == 6


# ------------------------------------------------------------------------------------------- text


def test_templates_are_openai_imagenet_80():
    templates = ref.imagenet_templates()
    assert len(templates) == 80
    assert templates[0]("cat") == "a bad photo of a cat."
    assert templates[1]("cat") == "a photo of many cat."
    assert templates[-1]("cat") == "a tattoo of the cat."
    assert len({t("x") for t in templates}) == 80


@pytest.mark.parametrize("which", ["tiny", "two_head"])
def test_text_encoder_equals_open_clip(which, tiny_state, two_head_state, open_clip_tiny, open_clip_two_head):
    state, model = (tiny_state, open_clip_tiny) if which == "tiny" else (two_head_state, open_clip_two_head)
    texts = ["a photo of a cat.", "itap of my pottedplant.", "A bird:  an animal with feathers.."]
    tokens = ref.reference_tokenize(texts)
    with torch.no_grad():
        expected = model.encode_text(tokens)
    got = ref.reference_encode_text_tokens(state, tokens)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_text_features_blend_rules(tiny_state):
    classes = [("sky", "wall"), ("cat",), ("dog", "puppy")]
    aux = ["a small animal.", "a loyal animal."]
    plain, owner = ref.reference_text_features(tiny_state, classes, has_background=True)
    assert owner == [0, 0, 1, 2, 2]
    torch.testing.assert_close(plain.norm(dim=-1), torch.ones(5))
    blended, _ = ref.reference_text_features(tiny_state, classes, True, aux, alpha=0.3)
    assert torch.equal(blended[:2], plain[:2])  # background never blended
    t_aux_dog = ref.reference_prompt_feature(tiny_state, aux[1])
    torch.testing.assert_close(blended[4], 0.7 * plain[4] + 0.3 * t_aux_dog)
    assert not torch.allclose(blended[4].norm(), torch.tensor(1.0))  # no re-normalisation
    same, _ = ref.reference_text_features(tiny_state, classes, True, aux, alpha=0.0)
    assert torch.equal(same, plain)
    # Without a background set every class is blended, class c with text c.
    nobg, _ = ref.reference_text_features(tiny_state, classes[1:], False, aux, alpha=0.3)
    torch.testing.assert_close(nobg, blended[2:])


# ---------------------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("which", ["tiny", "two_head"])
def test_plain_encoder_equals_open_clip_visual(which, tiny_state, two_head_state, open_clip_tiny,
                                               open_clip_two_head):
    """q-k attention, FFN kept, no intermediate maps = an unmodified CLIP ViT."""
    state, model = (tiny_state, open_clip_tiny) if which == "tiny" else (two_head_state, open_clip_two_head)
    image = _normalised(224, 224, seed=3)
    visual = model.visual
    visual.output_tokens = True
    try:
        with torch.no_grad():
            pooled, tokens = visual(image[None])
    finally:
        visual.output_tokens = False
    got = ref.reference_encode_tokens(state, image, attention="q-k", remove_ffn=False, intermediate_layers=())
    torch.testing.assert_close(got[0], pooled[0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got[1:], tokens[0] @ visual.proj, atol=2e-5, rtol=1e-5)


def _encode_with_open_clip_modules(visual, image, terms, layers, remove_ffn):
    """A second, module-based form of the modified encoder: open_clip's own conv1 / ln_pre /
    resblocks (blocks 1 … L-1 called as modules) and, for the maps and the last block, projections
    laid out as (tokens, batch·heads, head_dim) like OpenAI's attention code."""
    x = visual.conv1(image[None])
    g_h, g_w = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.reshape(1, 1, -1), x], dim=1)
    table = visual.positional_embedding
    n = table.shape[0] - 1
    if g_h * g_w != n:
        side = int(math.sqrt(n))
        grid = F.interpolate(table[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2),
                             scale_factor=((g_h + 0.1) / side, (g_w + 0.1) / side), mode="bicubic",
                             align_corners=False)
        table = torch.cat([table[:1], grid.permute(0, 2, 3, 1).reshape(g_h * g_w, -1)])
    x = visual.ln_pre(x + table)

    def projections(block, tokens):  # tokens (1, N, D) -> three (heads, N, hd)
        heads = block.attn.num_heads
        lnd = block.ln_1(tokens).transpose(0, 1)
        q, k, v = F.linear(lnd, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
        hd = lnd.shape[-1] // heads
        return [t.contiguous().view(-1, heads, hd).transpose(0, 1) for t in (q, k, v)]

    def fused_map(block, tokens):
        q, k, v = projections(block, tokens)
        s = q.shape[-1] ** -0.5
        total = 0
        for term in terms:
            if term == "q-k":
                total = total + F.softmax(torch.bmm(q * s, k.transpose(1, 2)), dim=-1)
            else:
                a = {"q": q, "k": k, "v": v}[term[0]]
                total = total + F.softmax(torch.bmm(a, a.transpose(1, 2)) * s, dim=-1)
        return total

    *body, last = visual.transformer.resblocks
    recorded = []
    for index, block in enumerate(body):
        if index + 1 in layers:
            recorded.append(fused_map(block, x))
        x = block(x)
    attn = fused_map(last, x)
    if recorded:
        attn = 0.5 * attn + 0.5 * torch.stack(recorded).mean(dim=0)
    _, _, v = projections(last, x)
    out = torch.bmm(attn, v).transpose(0, 1).reshape(1, x.shape[1], -1)
    x = x + last.attn.out_proj(out)
    if not remove_ffn:
        x = x + last.mlp(last.ln_2(x))
    return (visual.ln_post(x) @ visual.proj)[0]


@pytest.mark.parametrize("options", [
    dict(attention="q-q+k-k", remove_ffn=True, intermediate_layers=(7, 8, 10)),
    dict(attention="q-k", remove_ffn=True, intermediate_layers=(7,)),
    dict(attention="q-q+k-k+v-v", remove_ffn=False, intermediate_layers=(2, 11, 5)),
    dict(attention="v-v", remove_ffn=True, intermediate_layers=()),
])
@pytest.mark.parametrize("size", [(224, 224), (170, 224), (39, 100)])
@pytest.mark.parametrize("which", ["tiny", "two_head"])
def test_modified_encoder_equals_module_based_form(which, size, options, tiny_state, two_head_state,
                                                   open_clip_tiny, open_clip_two_head):
    state, model = (tiny_state, open_clip_tiny) if which == "tiny" else (two_head_state, open_clip_two_head)
    image = _normalised(*size, seed=10)
    with torch.no_grad():
        expected = _encode_with_open_clip_modules(model.visual, image, ref.parse_attention(options["attention"]),
                                                  options["intermediate_layers"], options["remove_ffn"])
    got = ref.reference_encode_tokens(state, image, **options)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_patch_embed_equals_strided_conv_and_drops_leftover(tiny_state):
    image = _normalised(70, 53, seed=4)
    conv = F.conv2d(image[None], tiny_state["visual.conv1.weight"], stride=16)[0]  # (64, 4, 3)
    got = ref.reference_patch_embed(tiny_state, image)
    torch.testing.assert_close(got, conv.reshape(64, -1).t(), atol=1e-5, rtol=1e-5)


def test_self_self_maps_rows_sum_to_number_of_terms(tiny_state):
    x = torch.randn(1 + 4 * 5, 64)
    for attention, terms in [("q-k", 1), ("q-q", 1), ("v-v", 1), ("q-q+k-k", 2), ("q-q+k-k+v-v", 3)]:
        a = ref.reference_attention_map(x, tiny_state, "visual.transformer.resblocks.3", 1, attention)
        assert a.shape == (1, 21, 21)
        torch.testing.assert_close(a.sum(-1), torch.full((1, 21), float(terms)))
    qk = ref.reference_attention_map(x, tiny_state, "visual.transformer.resblocks.3", 1, "q-q+k-k")
    qq = ref.reference_attention_map(x, tiny_state, "visual.transformer.resblocks.3", 1, "q-q")
    kk = ref.reference_attention_map(x, tiny_state, "visual.transformer.resblocks.3", 1, "k-k")
    torch.testing.assert_close(qk, qq + kk)


def test_two_heads_split_columns(two_head_state):
    """Head h uses q/k columns h·64 … h·64+63; checked against a by-hand per-head computation."""
    prefix = "visual.transformer.resblocks.2"
    x = torch.randn(10, 128)
    a = ref.reference_attention_map(x, two_head_state, prefix, 2, "q-q")
    w, b = two_head_state[prefix + ".attn.in_proj_weight"], two_head_state[prefix + ".attn.in_proj_bias"]
    q = x @ w[:128].t() + b[:128]
    for h in range(2):
        qh = q[:, h * 64:(h + 1) * 64]
        torch.testing.assert_close(a[h], torch.softmax(qh @ qh.t() / 8.0, dim=-1))


def test_encoder_options_matter(tiny_state):
    """Each option changes the output (so the engine tests can tell them apart)."""
    image = _normalised(224, 224, seed=5)
    base = ref.reference_encode_crop(tiny_state, image)
    assert base.shape == (196, 32)
    torch.testing.assert_close(base.norm(dim=-1), torch.ones(196))
    for options in [dict(attention="q-k"), dict(remove_ffn=False), dict(intermediate_layers=()),
                    dict(intermediate_layers=(7,)), dict(attention="q-q+k-k+v-v")]:
        other = ref.reference_encode_crop(tiny_state, image, **options)
        assert (other - base).abs().max() > 1e-3, options


def test_intermediate_layers_validated(six_layer_state):
    image = _normalised(224, 224)
    with pytest.raises(ValueError):
        ref.reference_encode_crop(six_layer_state, image, intermediate_layers=(7, 8, 10))
    assert ref.reference_encode_crop(six_layer_state, image, intermediate_layers=(2, 3, 5)).shape == (196, 32)


# ------------------------------------------------------------------------------ positional table


def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    def k(x):
        x = abs(x)
        if x <= 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        if x < 2:
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        return 0.0
    return [k(t + 1), k(t), k(1 - t), k(2 - t)]


def _bicubic_by_scale(grid: np.ndarray, scale_h: float, scale_w: float) -> np.ndarray:
    """Independent bicubic sampler with PyTorch's scale_factor semantics (align_corners=False):
    out size floor(n·s), source x = (i + 0.5)/s - 0.5, Keys a = -0.75, indices clamped."""
    d, n_h, n_w = grid.shape
    out_h, out_w = int(math.floor(n_h * scale_h)), int(math.floor(n_w * scale_w))

    def axis_matrix(n_in, n_out, s):
        m = np.zeros((n_out, n_in))
        for i in range(n_out):
            x = (i + 0.5) / s - 0.5
            x0 = math.floor(x)
            for j, wgt in zip(range(x0 - 1, x0 + 3), _cubic_weights(x - x0)):
                m[i, min(max(j, 0), n_in - 1)] += wgt
        return m

    mh, mw = axis_matrix(n_h, out_h, scale_h), axis_matrix(n_w, out_w, scale_w)
    return np.einsum("ij,djk,lk->dil", mh, grid.astype(np.float64), mw)


@pytest.mark.parametrize("g", [(14, 14), (13, 9), (6, 14), (3, 3)])
def test_positional_table_resampling(tiny_state, g):
    table = tiny_state["visual.positional_embedding"]
    got = ref.reference_positional_embedding(tiny_state, *g)
    assert got.shape == (1 + g[0] * g[1], 64)
    assert torch.equal(got[0], table[0])
    if g == (14, 14):
        assert torch.equal(got, table)
        return
    grid = table[1:].reshape(14, 14, 64).permute(2, 0, 1).numpy()
    expected = _bicubic_by_scale(grid, (g[0] + 0.1) / 14, (g[1] + 0.1) / 14)
    expected = torch.from_numpy(expected).float().permute(1, 2, 0).reshape(-1, 64)
    torch.testing.assert_close(got[1:], expected, atol=1e-5, rtol=1e-5)
    # The "+0.1 trick" is not a resize to the target size.
    by_size = F.interpolate(table[1:].reshape(1, 14, 14, 64).permute(0, 3, 1, 2), size=g, mode="bicubic",
                            align_corners=False)[0].permute(1, 2, 0).reshape(-1, 64)
    assert (by_size - got[1:]).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------ views


def test_grey_equals_torchvision():
    from torchvision.transforms.functional import rgb_to_grayscale

    image = _normalised(40, 37, seed=6)
    torch.testing.assert_close(ref.reference_grey(image), rgb_to_grayscale(image, num_output_channels=3),
                               atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("size", [(224, 224), (45, 224), (12, 13)])
def test_blur_equals_torchvision(size):
    from torchvision.transforms import GaussianBlur
    from torchvision.transforms.functional import gaussian_blur

    image = _normalised(*size, seed=7)
    got = ref.reference_blur(image)
    torch.testing.assert_close(got, gaussian_blur(image, [11, 11], [5.0, 5.0]), atol=1e-5, rtol=1e-5)
    # The authors' transform object samples sigma from (5, 5): the same thing.
    torch.manual_seed(0)
    torch.testing.assert_close(got, GaussianBlur(kernel_size=11, sigma=5)(image), atol=1e-5, rtol=1e-5)


def test_crop_logits_view_rules(tiny_state):
    crop = _normalised(224, 224, seed=8)
    text, _ = ref.reference_text_features(tiny_state, [("cat",), ("dog",), ("sky",)])
    plain = ref.reference_crop_logits(tiny_state, crop, text, image_engineering=False)
    assert plain.shape == (3, 224, 224)
    only_original = ref.reference_crop_logits(tiny_state, crop, text, views=())
    torch.testing.assert_close(only_original, plain, atol=0, rtol=0)
    full = ref.reference_crop_logits(tiny_state, crop, text, lam=0.7)
    l1 = ref.reference_crop_logits(tiny_state, crop, text, views=("grey", "blur"))
    l1_lam = ref.reference_crop_logits(tiny_state, crop, text, lam=1.0)
    torch.testing.assert_close(l1_lam, l1, atol=1e-6, rtol=0)
    assert (full - l1).abs().max() > 1e-4
    # One flip view alone: L = λ·L1 + (1-λ)·flip(logits of the flipped crop).
    vflip = ref.reference_crop_logits(tiny_state, crop, text, views=("vflip",), lam=0.6)
    flipped = ref.reference_crop_logits(tiny_state, torch.flip(crop, dims=(1,)), text, image_engineering=False)
    torch.testing.assert_close(vflip, 0.6 * plain + 0.4 * torch.flip(flipped, dims=(1,)), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ windows and resize


def test_windows():
    assert ref.reference_windows(224, 224, 224, 28) == [(0, 224, 0, 224)]
    assert ref.reference_windows(224, 280, 224, 28) == [(0, 224, 0, 224), (0, 224, 28, 252), (0, 224, 56, 280)]
    assert ref.reference_windows(224, 290, 224, 56) == [(0, 224, 0, 224), (0, 224, 56, 280), (0, 224, 66, 290)]
    assert ref.reference_windows(100, 300, 224, 28)[0] == (0, 100, 0, 224)
    for h, w, stride in [(336, 448, 28), (280, 371, 56), (224, 1867, 28), (60, 500, 28)]:
        wins = ref.reference_windows(h, w, 224, stride)
        cover = np.zeros((h, w), int)
        for y1, y2, x1, x2 in wins:
            assert y2 - y1 == min(224, h) and x2 - x1 == min(224, w)
            cover[y1:y2, x1:x2] += 1
        assert cover.min() >= 1
    assert len(ref.reference_windows(336, 448, 224, 28)) == 5 * 9  # SPEC §6


def test_resize_rule():
    img = make_random_image(80, 100)
    assert ref.reference_resize(img, 224).shape == (224, 280, 3)
    assert ref.reference_resize(img, 336).shape == (336, 420, 3)
    assert ref.reference_resize(make_random_image(60, 500), 224).shape[:2] == (int(60 * 224 / 60 + .5), 1867)
    same = make_random_image(224, 300)
    assert ref.reference_resize(same, 224) is same
    tall = make_random_image(10, 4000)  # long side cap: f = 2048/4000
    assert ref.reference_resize(tall, 336).shape[:2] == (5, 2048)


def test_normalise_values():
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = (255, 0, 10)
    x = ref.reference_normalise(img)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([(255 - 122.771) / 68.501, (0 - 116.746) / 66.632,
                                                          (10 - 104.094) / 70.323]))


# ------------------------------------------------------------------------------------------- PAMR


def _pamr_by_convolution(guide: torch.Tensor, mask: torch.Tensor, steps: int, dilations) -> torch.Tensor:
    """PAMR organised as in SCLIP's pamr.py: fixed 3×3 kernels applied as dilated convolutions on
    replicate-padded inputs (difference kernels for affinities, copy kernels for the stencil and the
    propagation), std over the concatenated stencils, mean over channels, softmax over neighbours."""
    positions = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]
    diff_kernel = torch.zeros(8, 1, 3, 3)
    copy_kernel = torch.zeros(8, 1, 3, 3)
    for i, (r, c) in enumerate(positions):
        diff_kernel[i, 0, 1, 1] = 1
        diff_kernel[i, 0, r, c] = -1
        copy_kernel[i, 0, r, c] = 1
    stencil_kernel = torch.zeros(9, 1, 3, 3)
    for i in range(9):
        stencil_kernel[i, 0, i // 3, i % 3] = 1

    def apply(kernel, x):  # x: (B, K, H, W) -> (B, K, P·len(dilations), H, W)
        b, k, h, w = x.shape
        flat = x.reshape(b * k, 1, h, w)
        outs = [F.conv2d(F.pad(flat, [d] * 4, mode="replicate"), kernel, dilation=d) for d in dilations]
        return torch.cat(outs, 1).reshape(b, k, -1, h, w)

    x, m = guide[None], mask[None]
    m = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=True)  # same size: identity
    std = apply(stencil_kernel, x).std(2, keepdim=True)
    aff = -apply(diff_kernel, x).abs() / (1e-8 + 0.1 * std)
    aff = torch.softmax(aff.mean(1, keepdim=True), 2)
    for _ in range(steps):
        m = (apply(copy_kernel, m) * aff).sum(2)
    return m[0]


@pytest.mark.parametrize("size,dilations,steps", [((40, 50), (8, 16), 10), ((30, 20), (8, 16), 3),
                                                  ((12, 9), (8, 16), 2), ((25, 31), (1, 2, 4), 4)])
def test_pamr_equals_convolution_form(size, dilations, steps):
    g = torch.Generator().manual_seed(0)
    guide = torch.randn(3, *size, generator=g)
    logits = torch.randn(5, *size, generator=g)
    got = ref.reference_pamr(guide, logits, steps, dilations)
    expected = _pamr_by_convolution(guide, logits, steps, dilations)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_pamr_flat_guide_equals_convolution_form(blocks_image):
    """Flat colour areas upsampled then resized back leave rounding-level stds (affinities made of
    rounding noise); the shifted-copy form must still reproduce the convolution form exactly."""
    resized = ref.reference_normalise(ref.reference_resize(blocks_image, 224))
    guide = F.interpolate(resized[None], size=blocks_image.shape[:2], mode="bilinear", align_corners=False)[0]
    stencil = torch.stack([ref._shift(guide, dy * d, dx * d) for d in (8, 16) for dy, dx in ref._STENCIL])
    std = stencil.std(dim=0)
    assert int(((std > 0) & (std < 1e-5)).sum()) > 100  # the degenerate case is present
    logits = torch.randn(4, *blocks_image.shape[:2], generator=torch.Generator().manual_seed(3))
    got = ref.reference_pamr(guide, logits, 10, (8, 16))
    torch.testing.assert_close(got, _pamr_by_convolution(guide, logits, 10, (8, 16)), atol=1e-6, rtol=0)


def test_pamr_affinity_properties():
    guide = torch.randn(3, 20, 24)
    aff = ref.reference_pamr_affinity(guide, (8, 16))
    assert aff.shape == (16, 20, 24)
    torch.testing.assert_close(aff.sum(0), torch.ones(20, 24))
    # A constant guide: all 16 neighbours equally weighted (std 0, differences 0).
    flat = ref.reference_pamr_affinity(torch.ones(3, 10, 10), (8, 16))
    torch.testing.assert_close(flat, torch.full((16, 10, 10), 1 / 16))


# ----------------------------------------------------------------------------------- post-process


def test_postprocess_class_max_area_and_prob_thresholds():
    # 3 classes: class 0 with queries 0,1; class 1 with query 2; class 2 with query 3.
    logits = torch.zeros(4, 4, 5)
    logits[0, :, :] = 1.0   # background wins by default
    logits[2, 0:3, 0:3] = 2.0  # class 1: 9 pixels
    logits[3, 3, 4] = 2.0      # class 2: 1 pixel
    probs, labels = ref.reference_postprocess(logits, [0, 0, 1, 2], logit_scale=10, closing=False)
    p = torch.softmax(logits * 10, 0)
    np.testing.assert_allclose(probs[0], torch.maximum(p[0], p[1]).numpy(), atol=1e-7)
    assert labels[0, 0] == 1 and labels[3, 4] == 2 and labels[3, 0] == 0
    # area_thd 0.2: class 2 has 1 of 10 foreground pixels (not > 2) -> zeroed; class 1 kept.
    probs_a, labels_a = ref.reference_postprocess(logits, [0, 0, 1, 2], logit_scale=10, area_thd=0.2,
                                                  closing=False)
    assert (probs_a[2] == 0).all() and (probs_a[1] == probs[1]).all()
    assert labels_a[3, 4] == 0
    # prob_thd above every top probability: all background.
    _, labels_p = ref.reference_postprocess(logits, [0, 0, 1, 2], logit_scale=0.01, prob_thd=0.9,
                                            closing=False)
    assert (labels_p == 0).all()


def test_postprocess_closing_is_grey_level():
    import cv2

    logits = torch.zeros(3, 7, 7)
    logits[0] = 1
    logits[2, 1:6, 1:6] = 2
    logits[2, 3, 3] = 0
    logits[1, 3, 3] = 3  # a class-1 hole inside class 2
    _, open_labels = ref.reference_postprocess(logits, [0, 1, 2], closing=False)
    _, closed = ref.reference_postprocess(logits, [0, 1, 2], closing=True)
    assert open_labels[3, 3] == 1 and closed[3, 3] == 2  # grey closing fills the lower id
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    dil = cv2.dilate(open_labels.astype(np.uint8), kernel)
    np.testing.assert_array_equal(closed, cv2.erode(dil, kernel))


def test_reference_segment_smoke(tiny_state):
    img = make_smooth_image(50, 60, seed=9)
    probs, labels = ref.reference_segment(tiny_state, img, [("sky", "wall"), ("cat",), ("dog",)], True,
                                          short_side=224, stride=56, pamr_steps=2)
    assert probs.shape == (3, 50, 60) and probs.dtype == np.float32
    assert labels.shape == (50, 60)
    assert ((probs >= 0) & (probs <= 1)).all()
