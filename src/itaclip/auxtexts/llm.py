"""Auxiliary texts from any chat model: prompting, answer checks and bounded retries.

A *chat model* is anything with ``complete(messages, *, temperature, top_p, max_tokens, seed)``
returning the assistant's text: :class:`~itaclip.auxtexts.openai_compat.OpenAICompatibleChat`
(vLLM, llama.cpp, Ollama, hosted APIs) and :class:`~itaclip.auxtexts.hf_local.TransformersChat`
(a local Hugging Face model) are provided; tests use fakes.
"""

from __future__ import annotations

import time
from typing import Optional, Protocol, Sequence

from ..engine.errors import ItaclipError
from .prompts import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    InvalidAnswer,
    build_messages,
    clean_answer,
)

#: Longest pause between two attempts after a server error, in seconds.
MAX_RETRY_DELAY = 30.0


class TransientBackendError(ItaclipError):
    """A failure worth another attempt: a timeout, HTTP 429 or 5xx, a dropped connection."""


class ChatModel(Protocol):
    def describe(self) -> str: ...

    def complete(
        self,
        messages: Sequence[dict],
        *,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: Optional[int],
    ) -> str: ...


class LLMTextSource:
    """One definition or synonym per class from a chat model, checked and retried.

    Each class is asked with the prompt of :func:`~itaclip.auxtexts.prompts.build_messages` (its
    first name, as the authors did). An answer that fails
    :func:`~itaclip.auxtexts.prompts.clean_answer` (empty, several lines, the name echoed back,
    too long) is asked again at once; a transient server failure is retried after
    ``retry_delay·2^k`` seconds (at most 30). After ``max_attempts`` attempts in all the class
    fails with an :class:`~itaclip.engine.errors.ItaclipError` that gives the last reason. A hard
    failure (wrong URL, refused key, missing model) stops at once.

    Args:
        chat: the chat model.
        temperature, top_p: sampling (the paper: 0.6 and 0.9).
        max_tokens: answer length limit.
        seed: base seed for servers that support one (attempt k uses ``seed + k``, so a retry
            does not repeat a rejected answer); ``None`` leaves sampling unseeded.
        max_attempts: attempts per class, ≥ 1.
        retry_delay: first pause after a transient failure, in seconds.
        system_prompt: replaces the built-in instruction and examples.
    """

    def __init__(
        self,
        chat: ChatModel,
        *,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        seed: Optional[int] = None,
        max_attempts: int = 5,
        retry_delay: float = 2.0,
        system_prompt: Optional[str] = None,
    ) -> None:
        if max_attempts < 1:
            raise ItaclipError(f"max attempts must be at least 1, got {max_attempts}")
        if not 0.0 <= temperature <= 2.0:
            raise ItaclipError(f"temperature must be in [0, 2], got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ItaclipError(f"top-p must be in (0, 1], got {top_p}")
        if max_tokens < 1:
            raise ItaclipError(f"max tokens must be at least 1, got {max_tokens}")
        self.chat = chat
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.seed = seed
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.system_prompt = system_prompt
        self.attempts = 0  # total requests made, for reports and tests

    def describe(self) -> str:
        return f"{self.chat.describe()}, temperature {self.temperature}, top-p {self.top_p}"

    def text(self, names: Sequence[str], kind: str) -> str:
        """The checked answer for the class named ``names`` (its first name is asked)."""
        name = names[0]
        messages = build_messages(name, kind, self.system_prompt)
        reason = ""
        for attempt in range(self.max_attempts):
            self.attempts += 1
            try:
                raw = self.chat.complete(
                    messages,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    max_tokens=self.max_tokens,
                    seed=None if self.seed is None else self.seed + attempt,
                )
                return clean_answer(raw, name, kind)
            except InvalidAnswer as exc:
                reason = f"unusable answer: {exc}"
            except TransientBackendError as exc:
                reason = str(exc)
                if attempt + 1 < self.max_attempts and self.retry_delay > 0:
                    time.sleep(min(self.retry_delay * 2**attempt, MAX_RETRY_DELAY))
        raise ItaclipError(
            f"no usable {kind} for {name!r} after {self.max_attempts} attempt(s); last: {reason}"
        )
