"""Prompts for LLM-written auxiliary texts, and the check every answer must pass.

The structure follows the paper (§3.4, appendix A.1, Fig. 4) and the authors' generation scripts:
a system message states the task and gives dictionary-style in-context examples written as
``word >= text``; the user message is the class name followed by ``>=``; the model answers with the
text alone; sampling uses temperature 0.6 and top-p 0.9. The wording and the example texts here
are our own.
"""

from __future__ import annotations

import re
from typing import Literal, Optional

Kind = Literal["definition", "synonym"]
KINDS: tuple[str, ...] = ("definition", "synonym")

DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.9
DEFAULT_MAX_TOKENS = 256

SYSTEM_PROMPTS: dict[str, str] = {
    "definition": (
        "You are a dictionary. For the word or phrase written before '>=', give one short definition "
        "of the thing it names, in the plain style of a learner's dictionary, like these examples: "
        "house >= a building where people, usually one family, live; "
        "car >= a road vehicle with an engine, four wheels and seats for a few people. "
        "Answer with the definition only, on one line, in at most 50 words, without repeating the word."
    ),
    "synonym": (
        "You are a thesaurus. For the word or phrase written before '>=', give one synonym; if it has "
        "none, give the word closest in meaning, like these examples: "
        "house >= home; car >= automobile. "
        "Answer with that one word (or very short phrase) only, on one line."
    ),
}

#: Longest answer accepted, in words.
MAX_WORDS = {"definition": 80, "synonym": 5}


class InvalidAnswer(ValueError):
    """The model's answer cannot be used as an auxiliary text (the reason is the message)."""


def build_messages(name: str, kind: str, system_prompt: Optional[str] = None) -> list[dict[str, str]]:
    """Chat messages asking for the ``kind`` of class ``name``."""
    if kind not in SYSTEM_PROMPTS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return [
        {"role": "system", "content": system_prompt or SYSTEM_PROMPTS[kind]},
        {"role": "user", "content": f"{name} >="},
    ]


_LABEL = re.compile(r"^(definition|synonym|answer)\s*:\s*", re.IGNORECASE)
_WRAPPERS = "\"'`*“”‘’"


def clean_answer(raw: Optional[str], name: str, kind: str) -> str:
    """The usable text in a model's answer, or :class:`InvalidAnswer`.

    Accepted: one non-empty line that is not the class name itself, without ``>=`` (the file
    separator), at most ``MAX_WORDS[kind]`` words. Removed first: surrounding white space, quotes
    and emphasis, an echoed ``name >=`` prefix or a ``Definition:`` label; a synonym also loses a
    final period. Definitions keep theirs (as in the authors' files, the text is used verbatim).
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidAnswer("empty answer")
    if "\n" in text:
        raise InvalidAnswer(f"several lines ({text.count(chr(10)) + 1}) instead of one")
    text = _strip_echo(text, name)
    text = _LABEL.sub("", text).strip().strip(_WRAPPERS).strip()
    if kind == "synonym":
        text = text.rstrip(".").strip()
    if not text:
        raise InvalidAnswer("empty answer")
    if ">=" in text:
        raise InvalidAnswer("the answer contains '>='")
    if _compact(text) == _compact(name):
        raise InvalidAnswer(f"the answer only repeats the class name {name!r}")
    words = len(text.split())
    if words > MAX_WORDS[kind]:
        raise InvalidAnswer(f"{words} words, more than the {MAX_WORDS[kind]} a {kind} may have")
    return text


def _strip_echo(text: str, name: str) -> str:
    """``'cat >= a small animal'`` or ``'>= a small animal'`` → ``'a small animal'``."""
    for separator in (">=", "≥"):
        head, found, tail = text.partition(separator)
        if found and (not head.strip() or _compact(head) == _compact(name)):
            return tail.strip()
    return text


def _compact(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())
