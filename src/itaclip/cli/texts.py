"""``itaclip texts generate``: auxiliary texts (definitions or synonyms) for a vocabulary.

Examples::

    # offline, from WordNet 3.0 (apt-get install wordnet-base)
    itaclip texts generate --preset voc21 --backend wordnet --out voc21_definitions.txt
    # any OpenAI-compatible server (vLLM, llama.cpp, Ollama, a hosted API)
    itaclip texts generate --classes my_classes.txt --kind synonym --out my_synonyms.txt \\
        --base-url http://localhost:8000/v1 --model meta-llama/Meta-Llama-3-8B-Instruct
    # a local Hugging Face model (pip install 'itaclip[llm]')
    itaclip texts generate --classes coco_object --kind synonym --out syn.txt \\
        --backend transformers --model /models/Meta-Llama-3-8B-Instruct
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from pathlib import Path

from ..engine.errors import ItaclipError
from ..engine.methods import get_preset, list_presets
from ..engine.methods.itaclip import PRESETS

BACKENDS = ("openai", "transformers", "wordnet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="texts_command", metavar="ACTION")
    gen = sub.add_parser(
        "generate",
        help="write one definition or synonym per class ('name >=text' lines, for --aux-texts)",
        description="Write one definition or synonym per non-background class, in the 'name >=text' "
        "format that --aux-texts reads. Interrupted runs resume from OUT.partial.",
    )
    what = gen.add_argument_group("what to generate")
    what.add_argument("--classes", metavar="FILE_OR_NAME",
                      help="class file (one class per line, names separated by ', '), a built-in list "
                      "(voc21, coco_object, ...) or 'cat, dog' (default: the --preset's list)")
    what.add_argument("--preset", choices=list_presets(), metavar="NAME",
                      help="take the class list, background set and text kind of a preset "
                      f"({', '.join(n for n in list_presets() if PRESETS[n].classes)})")
    what.add_argument("--background-first", action=argparse.BooleanOptionalAction, default=None,
                      help="the first line of the class file is a background set (skipped); built-in lists "
                      "know their own")
    what.add_argument("--kind", choices=("definition", "synonym"),
                      help="text kind (default: the preset's; the paper uses definitions for VOC, "
                      "Context, COCO-Stuff and synonyms for COCO-Object, Cityscapes)")
    what.add_argument("--out", required=True, metavar="FILE", help="text file to write")
    what.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    what.add_argument("--restart", action="store_true", help="discard OUT.partial of an interrupted run")
    what.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    backend = gen.add_argument_group("backend")
    backend.add_argument("--backend", choices=BACKENDS,
                         help="openai: an OpenAI-compatible server; transformers: a local Hugging Face "
                         "model; wordnet: the offline dictionary (default: openai when --base-url is given)")
    backend.add_argument("--base-url", metavar="URL",
                         help="API root of an OpenAI-compatible server, e.g. http://localhost:8000/v1 "
                         "(vLLM), http://localhost:8080/v1 (llama.cpp), http://localhost:11434/v1 (Ollama)")
    backend.add_argument("--model", metavar="NAME_OR_PATH",
                         help="openai: the served model's name (default: the only one the server lists); "
                         "transformers: a local model directory")
    backend.add_argument("--api-key-env", metavar="VAR",
                         help="environment variable holding the API key, sent as a Bearer token (default: "
                         "none; OPENAI_API_KEY for api.openai.com). Local servers need none")
    backend.add_argument("--timeout", type=float, default=120.0, metavar="S",
                         help="seconds to wait for each answer (default: %(default)s)")
    backend.add_argument("--device", help="transformers: cpu, cuda or cuda:N (default: cuda if available)")
    backend.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                         help="transformers: weight dtype (default: bfloat16 on GPU, float32 on CPU)")
    backend.add_argument("--wordnet-dir", metavar="DIR",
                         help="wordnet: WordNet 3.0 database directory "
                         "(default: $WNSEARCHDIR or /usr/share/wordnet)")
    backend.add_argument("--sense", action="append", default=[], metavar="NAME=HINT",
                         help="wordnet: pick the sense of class NAME whose gloss or lemmas contain HINT, "
                         "or whose lexicographer file is HINT (e.g. mouse=cursor, cake=food); repeatable")

    llm = gen.add_argument_group("LLM sampling (openai, transformers)")
    llm.add_argument("--temperature", type=float, default=0.6, help="(paper: %(default)s)")
    llm.add_argument("--top-p", type=float, default=0.9, help="(paper: %(default)s)")
    llm.add_argument("--max-tokens", type=int, default=256, metavar="N",
                     help="answer length limit (%(default)s)")
    llm.add_argument("--seed", type=int, help="sampling seed, where the backend supports one")
    llm.add_argument("--max-attempts", type=int, default=5, metavar="N",
                     help="attempts per class before giving up (default: %(default)s)")
    llm.add_argument("--retry-delay", type=float, default=2.0, metavar="S",
                     help="first pause after a server error; doubles each time (default: %(default)s)")
    llm.add_argument("--system-prompt", metavar="TEXT_OR_@FILE",
                     help="replace the built-in instruction and in-context examples (@FILE reads a file)")


def run(args: argparse.Namespace) -> int:
    if args.texts_command != "generate":
        print("usage: itaclip texts generate --classes FILE --kind definition|synonym --out FILE ...",
              file=sys.stderr)
        return 2
    return generate(args)


def generate(args: argparse.Namespace) -> int:
    from ..auxtexts import generate_aux_texts
    from ..auxtexts.generate import partial_paths

    vocabulary, kind = _vocabulary_and_kind(args)
    source = _source(args)
    partial = partial_paths(args.out)[0]

    def warn(message: str) -> None:
        print(f"itaclip texts: {message}", file=sys.stderr)

    print(f"itaclip texts: {vocabulary.num_foreground} {kind}s from {source.describe()}", file=sys.stderr)
    try:
        generate_aux_texts(vocabulary, kind, source, args.out, overwrite=args.overwrite, restart=args.restart,
                           progress=args.progress, warn=warn)
    except KeyboardInterrupt:
        print(f"itaclip texts: interrupted; the texts so far are kept in {partial}: run the same command "
              "again to resume", file=sys.stderr)
        raise
    print(f"itaclip texts: wrote {args.out}", file=sys.stderr)
    return 0


def _vocabulary_and_kind(args: argparse.Namespace):
    from ..engine.vocabulary import BUILTIN_LISTS, resolve_vocabulary

    preset = get_preset(args.preset) if args.preset else None
    if args.classes is None and (preset is None or not preset.classes):
        raise ItaclipError("give --classes FILE (or --preset NAME with a built-in class list)")
    # Texts are written for foreground classes only: a typed list gets no background set prepended
    # (has_background=False), a built-in list keeps its own.
    vocabulary = resolve_vocabulary(args.classes, preset=preset, has_background=bool(args.background_first),
                                    aux_texts="none")
    kind = args.kind
    if kind is None:
        source = BUILTIN_LISTS.get(args.classes) or preset
        if source is None or not source.aux_kind:
            raise ItaclipError("give --kind definition or --kind synonym")
        kind = source.aux_kind
    return vocabulary, kind


def _source(args: argparse.Namespace):
    backend = args.backend or ("openai" if args.base_url else None)
    if backend is None:
        raise ItaclipError(
            "choose a backend: --base-url URL (an OpenAI-compatible server), --backend transformers "
            "--model PATH (a local model) or --backend wordnet (offline dictionary)"
        )
    if backend != "wordnet" and args.sense:
        raise ItaclipError("--sense applies to --backend wordnet only")
    if backend == "wordnet":
        from ..auxtexts.wordnet import WordNetTextSource

        return WordNetTextSource(args.wordnet_dir, senses=_senses(args.sense))
    if backend == "openai":
        from ..auxtexts.openai_compat import OpenAICompatibleChat

        if not args.base_url:
            raise ItaclipError("--backend openai needs --base-url, e.g. http://localhost:8000/v1")
        api_key = _api_key(args.api_key_env, args.base_url)
        chat = OpenAICompatibleChat(args.base_url, args.model, api_key=api_key, timeout=args.timeout)
    else:
        from ..auxtexts.hf_local import TransformersChat

        if not args.model:
            raise ItaclipError("--backend transformers needs --model PATH (a local instruct model directory)")
        chat = TransformersChat(args.model, device=args.device, dtype=args.dtype)
    from ..auxtexts.llm import LLMTextSource

    return LLMTextSource(
        chat, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed,
        max_attempts=args.max_attempts, retry_delay=args.retry_delay,
        system_prompt=_system_prompt(args.system_prompt),
    )


def _api_key(variable, base_url):
    if variable is None:
        # A key is never sent to a server the user did not name it for, except OpenAI's own key to
        # OpenAI's API.
        if urllib.parse.urlsplit(base_url).hostname == "api.openai.com":
            return os.environ.get("OPENAI_API_KEY") or None
        return None
    value = os.environ.get(variable)
    if not value:
        raise ItaclipError(f"--api-key-env {variable}: that environment variable is not set")
    return value


def _senses(items: list[str]) -> dict[str, str]:
    senses = {}
    for item in items:
        name, found, hint = item.partition("=")
        if not found or not name.strip() or not hint.strip():
            raise ItaclipError(f"--sense expects NAME=HINT (e.g. mouse=cursor), got {item!r}")
        senses[name.strip()] = hint.strip()
    return senses


def _system_prompt(value):
    if value and value.startswith("@"):
        try:
            value = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ItaclipError(
                f"cannot read the system prompt file {value[1:]}: {exc.strerror or exc}"
            ) from None
    if value is not None and not value.strip():
        raise ItaclipError("--system-prompt is empty")
    return value
