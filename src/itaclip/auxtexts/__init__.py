"""Auxiliary texts (paper §3.4): one definition or synonym per class, blended with the class names.

Sources:

* :class:`LLMTextSource` over a chat model — :class:`OpenAICompatibleChat` (any OpenAI-compatible
  server: vLLM, llama.cpp, Ollama, hosted APIs) or :class:`~itaclip.auxtexts.hf_local.TransformersChat`
  (a local Hugging Face model; optional extra ``llm``);
* :class:`WordNetTextSource` — offline, deterministic, from WordNet 3.0's database files.

:func:`generate_aux_texts` writes the authors' ``name >=text`` file, resumably::

    from itaclip.engine.vocabulary import load_classes
    from itaclip.auxtexts import WordNetTextSource, generate_aux_texts

    vocab = load_classes("voc21", has_background=True)
    generate_aux_texts(vocab, "definition", WordNetTextSource(), "voc21_definitions.txt")
"""

from .generate import TextSource, generate_aux_texts, partial_paths
from .llm import ChatModel, LLMTextSource, TransientBackendError
from .openai_compat import OpenAICompatibleChat
from .prompts import KINDS, SYSTEM_PROMPTS, InvalidAnswer, build_messages, clean_answer
from .wordnet import WordNet, WordNetTextSource, find_wordnet_dir

__all__ = [
    "KINDS",
    "SYSTEM_PROMPTS",
    "ChatModel",
    "InvalidAnswer",
    "LLMTextSource",
    "OpenAICompatibleChat",
    "TextSource",
    "TransientBackendError",
    "WordNet",
    "WordNetTextSource",
    "build_messages",
    "clean_answer",
    "find_wordnet_dir",
    "generate_aux_texts",
    "partial_paths",
]
