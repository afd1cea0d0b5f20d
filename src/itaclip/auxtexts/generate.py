"""Write an auxiliary-text file for a vocabulary, one class at a time, resumably.

Output: the authors' format, one line per non-background class in class order,
``<first name of the class> >=<text>`` — what ``--aux-texts`` and
:func:`itaclip.engine.vocabulary.load_aux_texts` read.

Nothing generated is lost: every line is appended (and flushed to disk) to ``<out>.partial`` as
soon as it exists; ``<out>.partial.json`` records what the partial file is for. Running the same
command again resumes after the last complete line; when every class is done the partial file is
renamed onto ``<out>`` in one atomic step, so ``<out>`` is never half-written.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence, Union

from tqdm import tqdm

from ..engine.errors import ItaclipError
from ..engine.vocabulary import Vocabulary
from .prompts import KINDS

SEPARATOR = " >="


class TextSource(Protocol):
    """Anything that writes one text per class (an LLM, a dictionary)."""

    def describe(self) -> str: ...

    def text(self, names: Sequence[str], kind: str) -> str:
        """The text for the class whose names are ``names`` (first = main name)."""
        ...


def partial_paths(out: Union[str, os.PathLike]) -> tuple[Path, Path]:
    """``(<out>.partial, <out>.partial.json)``."""
    out = Path(out)
    return out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")


def generate_aux_texts(
    vocabulary: Vocabulary,
    kind: str,
    source: TextSource,
    out: Union[str, os.PathLike],
    *,
    overwrite: bool = False,
    restart: bool = False,
    progress: bool = True,
    warn: Optional[Callable[[str], None]] = None,
) -> list[str]:
    """Generate one ``kind`` text per non-background class of ``vocabulary`` into ``out``.

    Args:
        vocabulary: the classes; with ``has_background`` class 0 (the background set) is skipped.
        kind: ``"definition"`` or ``"synonym"``.
        source: where texts come from (:class:`~itaclip.auxtexts.llm.LLMTextSource`,
            :class:`~itaclip.auxtexts.wordnet.WordNetTextSource`, ...). If it has
            ``prepare(classes)`` it is called first with the classes to generate; if it has
            ``warnings()`` its messages are passed to ``warn`` at the end.
        out: the text file to write. Its parent directory is created.
        overwrite: replace an existing ``out`` (only once all texts exist).
        restart: discard a partial file of an earlier run instead of resuming it.
        progress: show a tqdm bar on stderr.
        warn: receives warning messages (default: :func:`warnings.warn`).

    Returns:
        The texts, one per non-background class, in class order.

    Raises:
        ItaclipError: ``out`` exists (without ``overwrite``), the partial file belongs to another
            run, or the source fails; the lines written so far stay in the partial file.
    """
    if kind not in KINDS:
        raise ItaclipError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    out = Path(out)
    classes = list(vocabulary.classes[int(vocabulary.has_background):])
    names = [c[0] for c in classes]
    for name in names:
        if ">=" in name or "\n" in name:
            raise ItaclipError(f"class name {name!r} contains '>=' or a line break; it cannot be written")
    if out.exists() and not overwrite:
        raise ItaclipError(f"{out} already exists: pass --overwrite to replace it")
    if out.is_dir():
        raise ItaclipError(f"{out} is a directory: give a file name for --out")
    partial, meta_path = partial_paths(out)
    meta = {"format": 1, "kind": kind, "classes": names}
    texts = [] if restart else _resume(partial, meta_path, meta, source, warn)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not texts:
            partial.write_text("", encoding="utf-8")
        meta_path.write_text(json.dumps({**meta, "source": source.describe()}, indent=1), encoding="utf-8")
    except OSError as exc:
        raise ItaclipError(f"cannot write next to {out}: {exc.strerror or exc}") from None

    if hasattr(source, "prepare"):
        source.prepare(classes)
    bar = tqdm(total=len(classes), initial=len(texts), desc=f"{kind}s", unit="class", disable=not progress,
               dynamic_ncols=True)
    try:
        with open(partial, "a", encoding="utf-8") as handle:
            for index in range(len(texts), len(classes)):
                try:
                    text = source.text(classes[index], kind)
                except ItaclipError as exc:
                    raise ItaclipError(
                        f"{exc} ({len(texts)} of {len(classes)} texts kept in {partial}; run the same "
                        "command again to resume)"
                    ) from None
                _check_text(text, names[index])
                handle.write(f"{names[index]}{SEPARATOR}{text}\n")
                handle.flush()
                os.fsync(handle.fileno())
                texts.append(text)
                bar.update(1)
    finally:
        bar.close()
    if hasattr(source, "warnings"):
        for message in source.warnings():
            warn(message)
    os.replace(partial, out)
    meta_path.unlink(missing_ok=True)
    return texts


def _resume(partial: Path, meta_path: Path, meta: dict, source: TextSource,
            warn: Callable[[str], None]) -> list[str]:
    """Texts of complete, matching lines of an earlier run's partial file ([] if none)."""
    if not partial.exists():
        return []
    try:
        saved = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else None
        content = partial.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ItaclipError(
            f"cannot read the partial file {partial} ({exc}); pass --restart to discard it"
        ) from None
    if saved is not None and (saved.get("kind") != meta["kind"] or saved.get("classes") != meta["classes"]):
        raise ItaclipError(
            f"{partial} holds {saved.get('kind')}s for other classes or of another kind than this run; "
            "pass --restart to discard it (or choose another --out)"
        )
    lines = content.split("\n")[:-1]  # a last line without its newline was cut off: redo it
    texts = []
    for name, line in zip(meta["classes"], lines):
        prefix = f"{name}{SEPARATOR}"
        if not line.startswith(prefix) or not line[len(prefix):].strip():
            break
        texts.append(line[len(prefix):])
    if len(texts) != len(lines):  # drop anything after the first bad line
        kept = "".join(f"{n}{SEPARATOR}{t}\n" for n, t in zip(meta["classes"], texts))
        partial.write_text(kept, encoding="utf-8")
    if texts:
        previous = saved.get("source") if saved else None
        note = f" (they came from {previous})" if previous and previous != source.describe() else ""
        warn(f"resuming: {len(texts)} of {len(meta['classes'])} texts already in {partial}{note}")
    return texts


def _check_text(text: object, name: str) -> None:
    if not isinstance(text, str) or not text.strip() or "\n" in text or "\r" in text or ">=" in text:
        raise ItaclipError(f"the text source returned an unusable text for {name!r}: {text!r}")
