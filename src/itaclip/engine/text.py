"""Text features of a vocabulary, built once per vocabulary (SPEC §2).

Each query name (and each auxiliary text) is put into the 80 OpenAI ImageNet templates, encoded,
L2-normalised, averaged and normalised again. Auxiliary texts are blended without re-normalising:
t = (1-α)·t_name + α·t_aux; background queries are never blended.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .vocabulary import Vocabulary

#: Bump when the way features are computed changes, so cached entries are not reused.
TEXT_FEATURE_VERSION = 1


@functools.cache
def prompt_templates() -> tuple[Callable[[str], str], ...]:
    """open_clip's 80 OpenAI ImageNet templates, imported when first needed (open_clip's package
    import costs seconds; it is loaded with the weights anyway)."""
    from open_clip import OPENAI_IMAGENET_TEMPLATES

    return tuple(OPENAI_IMAGENET_TEMPLATES)


def __getattr__(name: str):
    """``TEMPLATES``: :func:`prompt_templates`, for code that reads the constant."""
    if name == "TEMPLATES":
        return prompt_templates()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def encode_tokens(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP text embeddings (N, E) of token ids (N, context), unnormalised.

    The sequence is cut after the longest row's end token: under the causal mask no position
    before it sees what follows, so the embedding taken at the end token is unchanged.
    """
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
    mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    x = model.transformer(x, attn_mask=mask)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    return x @ model.text_projection


def encode_texts(model: torch.nn.Module, tokenizer: Callable, texts: Sequence[str], batch_size: int = 256,
                 progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Embeddings (N, E) of ``texts``, batched by token length so little padding is computed."""
    device = model.token_embedding.weight.device
    tokens = tokenizer(list(texts)).to(device)
    _warn_if_cut(tokens, texts)
    order = torch.argsort(tokens.argmax(dim=-1), stable=True)
    out = torch.empty(len(texts), model.text_projection.shape[1], device=device)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            index = order[start:start + batch_size]
            out[index] = encode_tokens(model, tokens[index]).float()
            if progress is not None:
                progress(min(start + batch_size, len(texts)), len(texts))
    return out


def _warn_if_cut(tokens: torch.Tensor, texts: Sequence[str]) -> None:
    """Texts longer than CLIP's context are cut by the tokenizer (the end token replaces the last
    one kept), for class names as for auxiliary texts; say so once per call. The end token has the
    largest id, so its position is the argmax; in the last position the text filled the context."""
    full = (tokens.argmax(dim=-1) == tokens.shape[1] - 1).nonzero().flatten().tolist()
    if full:
        example = texts[full[0]]
        shown = example if len(example) <= 60 else example[:57] + "..."
        warnings.warn(f"itaclip: {len(full)} text(s) fill CLIP's {tokens.shape[1]}-token context and are cut "
                      f"at its end, e.g. {shown!r}", stacklevel=3)


def template_features(model: torch.nn.Module, tokenizer: Callable, names: Sequence[str],
                      templates: Optional[Sequence[Callable[[str], str]]] = None,
                      progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """(len(names), E): per name, the normalised mean of its normalised template embeddings
    (``templates``: :func:`prompt_templates` when ``None``)."""
    templates = prompt_templates() if templates is None else templates
    prompts = [template(name) for name in names for template in templates]
    features = F.normalize(encode_texts(model, tokenizer, prompts, progress=progress), dim=-1)
    features = features.view(len(names), len(templates), -1).mean(dim=1)
    return F.normalize(features, dim=-1)


def blend_aux(name_features: torch.Tensor, aux_features: torch.Tensor, vocabulary: Vocabulary,
              alpha: float) -> torch.Tensor:
    """t = (1-α)·t_name + α·t_aux for every foreground query; aux_features: one row per foreground class."""
    first_fg = int(vocabulary.has_background)
    query_class = torch.tensor(vocabulary.query_class, device=name_features.device)
    foreground = query_class >= first_fg
    blended = name_features.clone()
    aux_rows = aux_features[query_class[foreground] - first_fg]
    blended[foreground] = (1 - alpha) * name_features[foreground] + alpha * aux_rows
    return blended
