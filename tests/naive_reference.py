"""A naive, deliberately plain reference of ITACLIP (SPEC §1–4), used only by the tests.

Written independently of the engine in ``itaclip``: it reads the OpenAI-layout state dict
directly and computes everything one crop and one view at a time (batch 1), with explicit loops
where the method is defined by a loop (sliding windows, PAMR neighbours, views). It follows the
behaviour of the authors' published code (``itaclip_segmentor.py`` and their ``clip/model.py``,
PAMR as in SCLIP's ``pamr.py``); where that code differs from a literal reading of the paper, the
authors' behaviour wins and the place is marked with "authors:".

Tensors are fp32 on the CPU. Image tensors are ``(3, H, W)``; token tensors ``(N, D)`` (no batch
dimension: every call handles a single crop/view, which is the plainest form of batch 1).

The method zoo (vanilla CLIP, MaskCLIP, SCLIP, ClearCLIP, NACLIP) is written the same way from
SPEC-methods: each method's last block (``reference_method_tokens``), ClearCLIP's window padding
(``reference_padded_window_logits``) and whole-image inference (``crop=0``); the rest of the
pipeline is shared.

It relies only on PyTorch primitives the authors' code also calls (``F.interpolate``,
``F.layer_norm``, ``torch.softmax``, ``torch.std``), OpenCV for the 8-bit resize and the
morphological closing (as the authors' pipeline does), and open_clip's tokenizer and template
list; none of the engine's code is imported.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

#: CLIP's normalisation on the 0–255 scale, RGB order (SPEC §1).
CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)

# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def load_reference_state(source: Union[str, os.PathLike, dict]) -> dict[str, torch.Tensor]:
    """fp32 copies of every tensor of an OpenAI-layout CLIP state dict (a dict or a file).

    OpenAI's loader builds the model, converts it to fp16, loads the state dict and calls
    ``.float()`` on the CPU; the fp16-stored tensors are therefore exactly their fp16 values.
    """
    if not isinstance(source, dict):
        source = torch.load(os.fspath(source), map_location="cpu", weights_only=True)
    state = {}
    for key, value in source.items():
        if isinstance(value, torch.Tensor):
            # What fp16-convertible modules hold after convert_weights: the fp16 value.
            state[key] = value.detach().to(torch.float32).clone()
    return state


def _count_blocks(state: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state
                if k.startswith(prefix) and k.endswith("attn.in_proj_weight")})


def vision_dims(state: dict) -> dict:
    width, _, patch, _ = state["visual.conv1.weight"].shape
    n_pos = state["visual.positional_embedding"].shape[0] - 1
    return dict(
        width=width,
        patch=patch,
        heads=max(1, width // 64),
        layers=_count_blocks(state, "visual.transformer.resblocks."),
        grid=int(round(math.sqrt(n_pos))),
        embed_dim=state["visual.proj"].shape[1],
    )


def text_dims(state: dict) -> dict:
    width = state["ln_final.weight"].shape[0]
    return dict(
        width=width,
        heads=max(1, width // 64),
        layers=_count_blocks(state, "transformer.resblocks."),
        context=state["positional_embedding"].shape[0],
    )


# --------------------------------------------------------------------------------------------
# Transformer pieces, written out
# --------------------------------------------------------------------------------------------


def _layer_norm(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), state[prefix + ".weight"], state[prefix + ".bias"], eps=1e-5)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    y = x @ weight.t()
    return y if bias is None else y + bias


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(…, N, D) -> (…, heads, N, D/heads): head h takes columns h*hd … (h+1)*hd-1."""
    *lead, n, d = t.shape
    return t.reshape(*lead, n, heads, d // heads).transpose(-3, -2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(…, heads, N, hd) -> (…, N, heads*hd)."""
    *lead, h, n, hd = t.shape
    return t.transpose(-3, -2).reshape(*lead, n, h * hd)


def _qkv(x_ln: torch.Tensor, state: dict, prefix: str, heads: int):
    qkv = _linear(x_ln, state[prefix + ".attn.in_proj_weight"], state[prefix + ".attn.in_proj_bias"])
    q, k, v = qkv.chunk(3, dim=-1)
    return _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads)


def _out_proj(heads_out: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return _linear(_merge_heads(heads_out), state[prefix + ".attn.out_proj.weight"],
                   state[prefix + ".attn.out_proj.bias"])


def _mlp(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    h = _linear(x, state[prefix + ".mlp.c_fc.weight"], state[prefix + ".mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return _linear(h, state[prefix + ".mlp.c_proj.weight"], state[prefix + ".mlp.c_proj.bias"])


def _standard_block(x: torch.Tensor, state: dict, prefix: str, heads: int,
                    mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x + attn(ln_1 x); x + mlp(ln_2 x) with ordinary softmax((q·s) kᵀ [+ mask]) attention."""
    q, k, v = _qkv(_layer_norm(x, state, prefix + ".ln_1"), state, prefix, heads)
    scale = q.shape[-1] ** -0.5
    scores = (q * scale) @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores + mask
    x = x + _out_proj(torch.softmax(scores, dim=-1) @ v, state, prefix)
    return x + _mlp(_layer_norm(x, state, prefix + ".ln_2"), state, prefix)


def parse_attention(attention: str) -> list[str]:
    terms = [t.strip() for t in attention.split("+")]
    for t in terms:
        if t not in ("q-k", "q-q", "k-k", "v-v"):
            raise ValueError(f"unknown attention term {t!r}")
    return terms


def reference_attention_map(x_ln: torch.Tensor, state: dict, prefix: str, heads: int,
                            attention: str) -> torch.Tensor:
    """The (heads, N, N) map of one block from its ``ln_1`` input: the sum of one softmax per term.

    q-k is softmax((q·s) kᵀ) (authors: scale applied to q first); a self term a-a is
    softmax((a aᵀ)·s); s = head_dim^-0.5.
    """
    q, k, v = _qkv(x_ln, state, prefix, heads)
    scale = q.shape[-1] ** -0.5
    tensors = {"q": q, "k": k, "v": v}
    total = None
    for term in parse_attention(attention):
        if term == "q-k":
            part = torch.softmax((q * scale) @ k.transpose(1, 2), dim=-1)
        else:
            a = tensors[term[0]]
            part = torch.softmax((a @ a.transpose(1, 2)) * scale, dim=-1)
        total = part if total is None else total + part
    return total


# --------------------------------------------------------------------------------------------
# Visual encoder (SPEC §1)
# --------------------------------------------------------------------------------------------


def reference_positional_embedding(state: dict, g_h: int, g_w: int) -> torch.Tensor:
    """(1 + g_h·g_w, width) positional table for a g_h×g_w patch grid.

    The checkpoint's table when the token count matches; otherwise the authors' "+0.1"
    resampling: ``F.interpolate(scale_factor=((g_h+0.1)/√N, (g_w+0.1)/√N), mode='bicubic')``.
    """
    table = state["visual.positional_embedding"]
    n = table.shape[0] - 1
    if g_h * g_w == n:
        return table
    side = int(math.sqrt(n))
    width = table.shape[1]
    grid = table[1:].reshape(1, side, side, width).permute(0, 3, 1, 2)
    resampled = F.interpolate(grid, scale_factor=((g_h + 0.1) / math.sqrt(n), (g_w + 0.1) / math.sqrt(n)),
                              mode="bicubic", align_corners=False)
    assert resampled.shape[-2:] == (g_h, g_w), resampled.shape
    patch_rows = resampled[0].permute(1, 2, 0).reshape(g_h * g_w, width)
    return torch.cat([table[:1], patch_rows], dim=0)


def reference_patch_embed(state: dict, image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (g_h·g_w, width): each non-overlapping patch flattened and multiplied by the
    flattened conv1 kernel (the leftover ``side mod patch`` pixels are dropped), row-major order."""
    weight = state["visual.conv1.weight"]
    width, _, p, _ = weight.shape
    _, h, w = image.shape
    g_h, g_w = h // p, w // p
    img = image[:, : g_h * p, : g_w * p]
    patches = img.reshape(3, g_h, p, g_w, p).permute(1, 3, 0, 2, 4).reshape(g_h * g_w, 3 * p * p)
    return patches @ weight.reshape(width, 3 * p * p).t()


def reference_encode_tokens(
    state: dict,
    image: torch.Tensor,
    *,
    attention: str = "q-q+k-k",
    remove_ffn: bool = True,
    intermediate_layers: Sequence[int] = (7, 8, 10),
) -> torch.Tensor:
    """Projected tokens ``ln_post(x) @ proj`` of one normalised (3, H, W) image, CLS first,
    *not* normalised: (1 + g_h·g_w, embed_dim)."""
    dims = vision_dims(state)
    heads, layers, p = dims["heads"], dims["layers"], dims["patch"]
    for layer in intermediate_layers:
        if not 1 <= layer <= layers - 1:
            raise ValueError(f"intermediate layer {layer} is not one of blocks 1..{layers - 1}")
    g_h, g_w = image.shape[1] // p, image.shape[2] // p
    x = reference_patch_embed(state, image)
    x = torch.cat([state["visual.class_embedding"][None, :], x], dim=0)
    x = x + reference_positional_embedding(state, g_h, g_w)
    x = _layer_norm(x, state, "visual.ln_pre")

    recorded = []
    for index in range(layers - 1):  # blocks 1 … L-1, unchanged
        prefix = f"visual.transformer.resblocks.{index}"
        if index + 1 in intermediate_layers:
            recorded.append(reference_attention_map(_layer_norm(x, state, prefix + ".ln_1"), state, prefix,
                                                    heads, attention))
        x = _standard_block(x, state, prefix, heads)

    prefix = f"visual.transformer.resblocks.{layers - 1}"
    x_ln = _layer_norm(x, state, prefix + ".ln_1")
    fused = reference_attention_map(x_ln, state, prefix, heads, attention)
    if recorded:
        mean_recorded = torch.stack(recorded).mean(dim=0)
        fused = 0.5 * fused + 0.5 * mean_recorded
    _, _, v = _qkv(x_ln, state, prefix, heads)
    x = x + _out_proj(fused @ v, state, prefix)
    if not remove_ffn:
        x = x + _mlp(_layer_norm(x, state, prefix + ".ln_2"), state, prefix)
    x = _layer_norm(x, state, "visual.ln_post")
    return x @ state["visual.proj"]


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def reference_encode_crop(state: dict, image: torch.Tensor, *, method: str = "itaclip", gaussian_std: float = 5.0,
                          **encoder_options) -> torch.Tensor:
    """L2-normalised patch features of one normalised (3, H, W) crop: (g_h·g_w, embed_dim), CLS dropped.

    ``method`` 'itaclip' takes ITACLIP's ``encoder_options``; the zoo's methods (below) ignore them.
    """
    if method == "itaclip":
        tokens = reference_encode_tokens(state, image, **encoder_options)
    else:
        tokens = reference_method_tokens(state, image, method, gaussian_std)
    return l2_normalise(tokens)[1:]


# --------------------------------------------------------------------------------------------
# The method zoo's last blocks (SPEC-methods §1.3–1.4, §2), one crop at a time
# --------------------------------------------------------------------------------------------

#: Methods whose windows are padded to a patch multiple (ClearCLIP's code base, SPEC-methods §3).
PADDED_METHODS = ("maskclip", "clearclip")


def reference_gaussian_window(n_h: int, n_w: int, std: float) -> torch.Tensor:
    """NACLIP's (2n_h-1, 2n_w-1) window: g = linspace(-(n-1)·c, (n-1)·c, 2n-1) per side in float32,
    c = 1/(σ√2); W[a, b] = exp(-(g_h[a]² + g_w[b]²)) — peak 1, not normalised."""
    c = 1 / (std * math.sqrt(2))
    g_h = torch.linspace(-(n_h - 1) * c, (n_h - 1) * c, 2 * n_h - 1, dtype=torch.float32)
    g_w = torch.linspace(-(n_w - 1) * c, (n_w - 1) * c, 2 * n_w - 1, dtype=torch.float32)
    window = torch.zeros(2 * n_h - 1, 2 * n_w - 1)
    for a in range(2 * n_h - 1):
        for b in range(2 * n_w - 1):
            window[a, b] = torch.exp(-(g_h[a] ** 2 + g_w[b] ** 2))
    return window


_OMEGA_CACHE: dict = {}


def reference_omega(n_h: int, n_w: int, std: float) -> torch.Tensor:
    """Ω (1+N, 1+N): Ω[1+t, 1+t'] = W[r-r'+n_h-1, c-c'+n_w-1] for patch tokens t = r·n_w + c, zero
    first row and column (class token). Written as the double loop the definition is."""
    key = (n_h, n_w, std)
    if key not in _OMEGA_CACHE:
        window = reference_gaussian_window(n_h, n_w, std)
        n = n_h * n_w
        omega = torch.zeros(1 + n, 1 + n)
        for t in range(n):
            r, c = divmod(t, n_w)
            for t2 in range(n):
                r2, c2 = divmod(t2, n_w)
                omega[1 + t, 1 + t2] = window[r - r2 + n_h - 1, c - c2 + n_w - 1]
        _OMEGA_CACHE[key] = omega
    return _OMEGA_CACHE[key]


def reference_method_tokens(state: dict, image: torch.Tensor, method: str, gaussian_std: float = 5.0) -> torch.Tensor:
    """Projected tokens ``ln_post(z) @ proj`` (1 + N, embed_dim) of one normalised (3, H, W) image for
    the zoo's ``method``: blocks 1 … L-1 unchanged, the last block as the method defines it."""
    dims = vision_dims(state)
    heads, layers, p = dims["heads"], dims["layers"], dims["patch"]
    g_h, g_w = image.shape[1] // p, image.shape[2] // p
    x = reference_patch_embed(state, image)
    x = torch.cat([state["visual.class_embedding"][None, :], x], dim=0)
    x = x + reference_positional_embedding(state, g_h, g_w)
    x = _layer_norm(x, state, "visual.ln_pre")
    for index in range(layers - 1):
        x = _standard_block(x, state, f"visual.transformer.resblocks.{index}", heads)

    prefix = f"visual.transformer.resblocks.{layers - 1}"
    if method not in LAST_BLOCKS:
        raise ValueError(f"unknown method {method!r}")
    z = LAST_BLOCKS[method](x, state, prefix, heads, (g_h, g_w), gaussian_std)
    return _layer_norm(z, state, "visual.ln_post") @ state["visual.proj"]


def _last_block_qkv(x: torch.Tensor, state: dict, prefix: str, heads: int):
    q, k, v = _qkv(_layer_norm(x, state, prefix + ".ln_1"), state, prefix, heads)
    return q, k, v, q.shape[-1] ** -0.5


def _clip_last_block(x, state, prefix, heads, grid, gaussian_std):
    """The block as CLIP has it."""
    return _standard_block(x, state, prefix, heads)


def _maskclip_last_block(x, state, prefix, heads, grid, gaussian_std):
    """A = I: every token its own value; residual and MLP kept."""
    _, _, v, _ = _last_block_qkv(x, state, prefix, heads)
    z = x + _out_proj(v, state, prefix)
    return z + _mlp(_layer_norm(z, state, prefix + ".ln_2"), state, prefix)


def _sclip_last_block(x, state, prefix, heads, grid, gaussian_std):
    """softmax(s q qᵀ) + softmax(s k kᵀ), rows sum to 2; residual and MLP kept."""
    q, k, v, s = _last_block_qkv(x, state, prefix, heads)
    attn = torch.softmax((q @ q.transpose(1, 2)) * s, dim=-1) + torch.softmax((k @ k.transpose(1, 2)) * s, dim=-1)
    z = x + _out_proj(attn @ v, state, prefix)
    return z + _mlp(_layer_norm(z, state, prefix + ".ln_2"), state, prefix)


def _clearclip_last_block(x, state, prefix, heads, grid, gaussian_std):
    """q-q attention; no residual, no MLP."""
    q, _, v, s = _last_block_qkv(x, state, prefix, heads)
    return _out_proj(torch.softmax((q @ q.transpose(1, 2)) * s, dim=-1) @ v, state, prefix)


def _naclip_last_block(x, state, prefix, heads, grid, gaussian_std):
    """k-k attention + Ω after the scaling; no residual, no MLP."""
    _, k, v, s = _last_block_qkv(x, state, prefix, heads)
    logits = (k @ k.transpose(1, 2)) * s + reference_omega(*grid, gaussian_std)
    return _out_proj(torch.softmax(logits, dim=-1) @ v, state, prefix)


#: The zoo's last blocks: method → (tokens x entering block L, state, block prefix, heads, (g_h, g_w), σ) → z.
LAST_BLOCKS = {
    "clip": _clip_last_block,
    "maskclip": _maskclip_last_block,
    "sclip": _sclip_last_block,
    "clearclip": _clearclip_last_block,
    "naclip": _naclip_last_block,
}
#: Every method this reference implements (ITACLIP: ``reference_encode_tokens``). A method of the
#: registry missing here fails ``test_methods_exact.test_every_method_has_a_naive_reference``.
REFERENCE_METHODS = ("itaclip", *LAST_BLOCKS)


# --------------------------------------------------------------------------------------------
# Text (SPEC §2)
# --------------------------------------------------------------------------------------------


def reference_tokenize(texts: Sequence[str]) -> torch.Tensor:
    from open_clip.tokenizer import tokenize

    return tokenize(list(texts), context_length=77)


def reference_encode_text_tokens(state: dict, tokens: torch.Tensor) -> torch.Tensor:
    """OpenAI ``encode_text`` written out: (B, 77) token ids -> (B, embed_dim).

    Token embedding + positional embedding, the causal transformer, ``ln_final``, the row of the
    EOT token (the largest id) times ``text_projection``.
    """
    dims = text_dims(state)
    n = dims["context"]
    mask = torch.full((n, n), float("-inf")).triu(1)
    x = state["token_embedding.weight"][tokens] + state["positional_embedding"]  # (B, n, width)
    for index in range(dims["layers"]):
        x = _standard_block(x, state, f"transformer.resblocks.{index}", dims["heads"], mask)
    x = _layer_norm(x, state, "ln_final")
    eot = tokens.argmax(dim=-1)
    return torch.stack([x[b, int(eot[b])] for b in range(len(tokens))]) @ state["text_projection"]


def imagenet_templates():
    import open_clip

    return list(open_clip.OPENAI_IMAGENET_TEMPLATES)


_PROMPT_CACHE: dict = {}


def reference_prompt_feature(state: dict, text: str) -> torch.Tensor:
    """One query: 80 templates, encode, L2-normalise each, average, L2-normalise: (embed_dim,).

    Cached per (state dict object, text); the cache keeps the state alive so ids are not reused.
    """
    key = (id(state), text)
    if key not in _PROMPT_CACHE:
        _PROMPT_CACHE[key] = (state, _prompt_feature(state, text))
    return _PROMPT_CACHE[key][1].clone()


def _prompt_feature(state: dict, text: str) -> torch.Tensor:
    tokens = reference_tokenize([template(text) for template in imagenet_templates()])
    features = l2_normalise(reference_encode_text_tokens(state, tokens))
    return l2_normalise(features.mean(dim=0))


def reference_text_features(
    state: dict,
    classes: Sequence[Sequence[str]],
    has_background: bool = False,
    aux_texts: Optional[Sequence[str]] = None,
    alpha: float = 0.0,
) -> tuple[torch.Tensor, list[int]]:
    """Query features (Q, embed_dim) in class order and the class index of each query.

    With ``aux_texts`` (one per non-background class) every query of class c becomes
    ``(1-α)·t_name + α·t_aux(c)`` without re-normalisation; background queries are left alone.
    """
    features, owner = [], []
    aux_cache: dict[int, torch.Tensor] = {}
    for c, names in enumerate(classes):
        for name in names:
            t = reference_prompt_feature(state, name)
            is_background = has_background and c == 0
            if aux_texts is not None and not is_background:
                aux_index = c - 1 if has_background else c
                if aux_index not in aux_cache:
                    aux_cache[aux_index] = reference_prompt_feature(state, aux_texts[aux_index])
                t = (1 - alpha) * t + alpha * aux_cache[aux_index]
            features.append(t)
            owner.append(c)
    return torch.stack(features), owner


# --------------------------------------------------------------------------------------------
# Image preparation and views (SPEC §3, §4.1)
# --------------------------------------------------------------------------------------------


def reference_read_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """An image file as the authors' loader sees it: cv2.imdecode(IMREAD_COLOR) (BGR, EXIF
    orientation applied, grey expanded to 3 channels), then reversed to RGB."""
    data = np.fromfile(os.fspath(path), dtype=np.uint8)
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


def reference_resize(image: np.ndarray, short_side: int, long_cap: int = 2048) -> np.ndarray:
    """mmcv's keep-ratio rescale: f = min(cap/long, S/short), size (int(w·f+.5), int(h·f+.5)),
    cv2 bilinear on the 8-bit image; untouched when the size does not change."""
    h, w = image.shape[:2]
    f = min(long_cap / max(h, w), short_side / min(h, w))
    new_w, new_h = int(w * float(f) + 0.5), int(h * float(f) + 0.5)
    if (new_w, new_h) == (w, h):
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def reference_normalise(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) fp32, (x - mean) / std per channel."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32).permute(2, 0, 1)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32)[:, None, None]
    return (x - mean) / std


def reference_grey(image: torch.Tensor) -> torch.Tensor:
    """Luma 0.2989 R + 0.587 G + 0.114 B of the normalised tensor, repeated to 3 channels."""
    luma = 0.2989 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    return luma[None].repeat(3, 1, 1)


def _reflect_index(i: np.ndarray, n: int) -> np.ndarray:
    """Index map of reflect padding (edge not repeated): -1 -> 1, n -> n-2."""
    i = np.abs(i)
    return np.where(i > n - 1, 2 * (n - 1) - i, i)


def reference_blur(image: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Gaussian blur as torchvision defines it: 1-D weights exp(-x²/2σ²) on linspace(-r, r, k),
    normalised; 2-D kernel = their outer product, applied here as a vertical then a horizontal
    weighted sum of shifted copies; reflect padding r (the edge row/column is not repeated)."""
    r = (kernel_size - 1) // 2
    xs = torch.linspace(-(kernel_size - 1) * 0.5, (kernel_size - 1) * 0.5, kernel_size)
    pdf = torch.exp(-0.5 * (xs / sigma).pow(2))
    k1 = pdf / pdf.sum()
    _, h, w = image.shape
    vertical = torch.zeros_like(image)
    for dy in range(-r, r + 1):
        rows = torch.from_numpy(_reflect_index(np.arange(h) + dy, h))
        vertical = vertical + k1[dy + r] * image[:, rows, :]
    out = torch.zeros_like(image)
    for dx in range(-r, r + 1):
        cols = torch.from_numpy(_reflect_index(np.arange(w) + dx, w))
        out = out + k1[dx + r] * vertical[:, :, cols]
    return out


def reference_windows(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """mmseg's slide grid: (y1, y2, x1, x2) per window, the last one pushed back inside."""
    h_grids = max(h - crop + stride - 1, 0) // stride + 1
    w_grids = max(w - crop + stride - 1, 0) // stride + 1
    windows = []
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * stride, wi * stride
            y2, x2 = min(y1 + crop, h), min(x1 + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            windows.append((y1, y2, x1, x2))
    return windows


def _bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (C, H, W), bilinear, align_corners=False (what the authors' F.interpolate does)."""
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def _patch_logits(features: torch.Tensor, text: torch.Tensor, g_h: int, g_w: int,
                  size: tuple[int, int]) -> torch.Tensor:
    """(g_h·g_w, E) features × (Q, E) text -> (Q, g_h, g_w) -> bilinear to ``size``."""
    logits = features @ text.t()
    return _bilinear(logits.t().reshape(text.shape[0], g_h, g_w), size)


def reference_crop_logits(
    state: dict,
    crop: torch.Tensor,
    text: torch.Tensor,
    *,
    image_engineering: bool = True,
    views: Sequence[str] = ("grey", "blur", "vflip", "hflip"),
    lam: float = 0.75,
    encoder: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    size: Optional[tuple[int, int]] = None,
    **encoder_options,
) -> torch.Tensor:
    """Logits (Q, h, w) of one normalised (3, h, w) crop (SPEC §3), one view at a time.

    ``encoder`` (image -> (g_h·g_w, E) normalised patch features) replaces ``reference_encode_crop``
    (tests/naive_frontier.py passes its methods' encoders); ``size`` up-samples the logits to another
    size than the crop's (SCLIP's whole-image branch goes straight to the original size).
    """
    p = vision_dims(state)["patch"]
    h, w = crop.shape[1:]
    g_h, g_w = h // p, w // p
    if encoder is None:
        encode = lambda img: reference_encode_crop(state, img, **encoder_options)  # noqa: E731
    else:
        encode = encoder
    h, w = size or (h, w)
    if not image_engineering:
        return _patch_logits(encode(crop), text, g_h, g_w, (h, w))

    spatial = [encode(crop)]
    if "grey" in views:
        spatial.append(encode(reference_grey(crop)))
    if "blur" in views:
        spatial.append(encode(reference_blur(crop)))
    l1 = _patch_logits(torch.stack(spatial).mean(dim=0), text, g_h, g_w, (h, w))

    flipped = []
    for view, dim in (("vflip", 1), ("hflip", 2)):  # authors: vertical first, then horizontal
        if view in views:
            logits = _patch_logits(encode(torch.flip(crop, dims=(dim,))), text, g_h, g_w, (h, w))
            flipped.append(torch.flip(logits, dims=(dim,)))
    if not flipped:
        return l1
    l2 = torch.stack(flipped).mean(dim=0)
    return lam * l1 + (1 - lam) * l2


def reference_padded_window_logits(state: dict, window: torch.Tensor, text: torch.Tensor,
                                   **crop_options) -> torch.Tensor:
    """ClearCLIP's handling of a window whose sides are not patch multiples: zero-pad the normalised
    window centred (left = ⌊extra/2⌋, right = the rest; same for top/bottom), take the logits of the
    padded window at its own size (its views are views of the padded window), cut the window's part."""
    p = vision_dims(state)["patch"]
    _, h, w = window.shape
    extra_h = (p - h % p) if h % p else 0
    extra_w = (p - w % p) if w % p else 0
    top, left = extra_h // 2, extra_w // 2
    padded = torch.zeros(3, h + extra_h, w + extra_w)
    padded[:, top:top + h, left:left + w] = window
    return reference_crop_logits(state, padded, text, **crop_options)[:, top:top + h, left:left + w]


def reference_slide(state: dict, image: torch.Tensor, text: torch.Tensor, *, crop: int = 224,
                    stride: int = 28, **crop_options) -> torch.Tensor:
    """Canvas of averaged window logits (Q, H, W) over a normalised (3, H, W) image; ``crop`` 0: the
    whole image is the only window (NACLIP's whole-image inference)."""
    _, h, w = image.shape
    pad = crop_options.get("method", "itaclip") in PADDED_METHODS
    window_logits = reference_padded_window_logits if pad else reference_crop_logits
    windows = [(0, h, 0, w)] if crop == 0 else reference_windows(h, w, crop, stride)
    canvas = torch.zeros(text.shape[0], h, w)
    count = torch.zeros(1, h, w)
    for y1, y2, x1, x2 in windows:
        canvas[:, y1:y2, x1:x2] += window_logits(state, image[:, y1:y2, x1:x2], text, **crop_options)
        count[:, y1:y2, x1:x2] += 1
    assert bool((count > 0).all())
    return canvas / count


# --------------------------------------------------------------------------------------------
# PAMR (SPEC §4.4), with explicit shifted copies
# --------------------------------------------------------------------------------------------

#: Neighbour order of one dilation (dy, dx), as the 3×3 stencil read row by row minus the centre.
_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
_STENCIL = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)]


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., i, j] = x[..., clamp(i+dy), clamp(j+dx)] (replicate padding)."""
    h, w = x.shape[-2:]
    rows = torch.clamp(torch.arange(h) + dy, 0, h - 1)
    cols = torch.clamp(torch.arange(w) + dx, 0, w - 1)
    return x[..., rows, :][..., :, cols]


def reference_pamr_affinity(guide: torch.Tensor, dilations: Sequence[int] = (8, 16)) -> torch.Tensor:
    """(K, H, W) guide -> (8·len(dilations), H, W) neighbour weights (softmax over neighbours)."""
    stencil = [_shift(guide, dy * d, dx * d) for d in dilations for dy, dx in _STENCIL]
    std = torch.stack(stencil).std(dim=0, unbiased=True)  # per channel and pixel, 9 per dilation
    affinities = []
    for d in dilations:
        for dy, dx in _NEIGHBOURS:
            diff = (guide - _shift(guide, dy * d, dx * d)).abs()
            affinities.append((-diff / (1e-8 + 0.1 * std)).mean(dim=0))  # mean over channels
    return torch.softmax(torch.stack(affinities), dim=0)


def reference_pamr(guide: torch.Tensor, logits: torch.Tensor, steps: int = 10,
                   dilations: Sequence[int] = (8, 16)) -> torch.Tensor:
    """Refine (Q, H, W) logits with the (K, H, W) guide: ``steps`` affinity-weighted averages."""
    aff = reference_pamr_affinity(guide, dilations)
    offsets = [(dy * d, dx * d) for d in dilations for dy, dx in _NEIGHBOURS]
    out = logits
    for _ in range(steps):
        new = torch.zeros_like(out)
        for n, (dy, dx) in enumerate(offsets):
            new = new + _shift(out, dy, dx) * aff[n]
        out = new
    return out


# --------------------------------------------------------------------------------------------
# Post-processing (SPEC §4.5–4.8) and the whole pipeline
# --------------------------------------------------------------------------------------------


def reference_postprocess(
    logits: torch.Tensor,
    query_class: Sequence[int],
    *,
    logit_scale: float = 40.0,
    prob_thd: float = 0.0,
    area_thd: Optional[float] = None,
    closing: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(Q, H, W) refined logits -> probs (C, H, W) float32 and labels (H, W) int64."""
    probs_q = torch.softmax(logits * logit_scale, dim=0)
    num_classes = max(query_class) + 1
    probs = torch.stack([
        probs_q[[q for q, c in enumerate(query_class) if c == cls]].max(dim=0).values
        for cls in range(num_classes)
    ])
    if area_thd is not None:
        # authors: classes 1… are the ones tested (index based), their areas compared with the sum
        # of the argmax areas of classes 1…
        winner = probs.argmax(dim=0)
        areas = torch.stack([(winner == c).sum() for c in range(num_classes)]).to(probs.dtype)
        total = areas[1:].sum()
        for c in range(1, num_classes):
            if not bool(areas[c] > area_thd * total):
                probs[c] = 0
    labels = probs.argmax(dim=0)
    labels[probs.max(dim=0).values < prob_thd] = 0
    labels = labels.numpy().astype(np.int64)
    if closing:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        labels = cv2.morphologyEx(labels.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(np.int64)
    return probs.numpy().astype(np.float32), labels


def reference_logits(
    state: dict,
    image_rgb_uint8: np.ndarray,
    text: torch.Tensor,
    *,
    short_side: int = 336,
    crop: int = 224,
    stride: int = 28,
    pamr_steps: int = 10,
    pamr_dilations: Sequence[int] = (8, 16),
    **crop_options,
) -> torch.Tensor:
    """Refined logits (Q, H, W) at the original size (SPEC §3, §4.1–4.4)."""
    h, w = image_rgb_uint8.shape[:2]
    resized = reference_normalise(reference_resize(image_rgb_uint8, short_side))
    canvas = reference_slide(state, resized, text, crop=crop, stride=stride, **crop_options)
    logits = _bilinear(canvas, (h, w))
    if pamr_steps > 0:
        guide = _bilinear(resized, (h, w))
        logits = reference_pamr(guide, logits, pamr_steps, pamr_dilations)
    return logits


def reference_segment(
    state_dict: Union[dict, str, os.PathLike],
    image_rgb_uint8: np.ndarray,
    classes: Sequence[Sequence[str]],
    has_background: bool,
    aux_texts: Optional[Sequence[str]] = None,
    *,
    alpha: float = 0.0,
    lam: float = 0.75,
    attention: str = "q-q+k-k",
    remove_ffn: bool = True,
    intermediate_layers: Sequence[int] = (7, 8, 10),
    image_engineering: bool = True,
    views: Sequence[str] = ("grey", "blur", "vflip", "hflip"),
    short_side: int = 336,
    crop: int = 224,
    stride: int = 28,
    pamr_steps: int = 10,
    pamr_dilations: Sequence[int] = (8, 16),
    logit_scale: float = 40.0,
    prob_thd: float = 0.0,
    area_thd: Optional[float] = None,
    closing: bool = True,
    method: str = "itaclip",
    gaussian_std: float = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole method on one (H, W, 3) uint8 RGB image -> (probs (C, H, W) float32, labels (H, W)).

    ``method``: 'itaclip' or one of the zoo's (clip, maskclip, sclip, clearclip, naclip); every other
    option is passed explicitly (the zoo's authors' settings are not defaults here)."""
    state = state_dict if _is_loaded(state_dict) else load_reference_state(state_dict)
    classes = [tuple(names) for names in classes]
    text, query_class = reference_text_features(state, classes, has_background, aux_texts, alpha)
    with torch.no_grad():
        logits = reference_logits(
            state, image_rgb_uint8, text,
            short_side=short_side, crop=crop, stride=stride,
            pamr_steps=pamr_steps, pamr_dilations=pamr_dilations,
            image_engineering=image_engineering, views=tuple(views), lam=lam,
            attention=attention, remove_ffn=remove_ffn, intermediate_layers=tuple(intermediate_layers),
            method=method, gaussian_std=gaussian_std,
        )
    return reference_postprocess(logits, query_class, logit_scale=logit_scale, prob_thd=prob_thd,
                                 area_thd=area_thd, closing=closing)


def _is_loaded(state) -> bool:
    return isinstance(state, dict) and all(
        not isinstance(v, torch.Tensor) or v.dtype == torch.float32 for v in state.values()
    )
