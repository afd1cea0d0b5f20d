"""Offline dictionary backend: definitions and synonyms from WordNet 3.0's database files.

Why parse the files ourselves: WordNet's database format (``wndb(5WN)``) is plain text — one line
per lemma in ``index.noun`` (its synsets listed most frequent sense first) and one line per synset
in ``data.noun`` at a byte offset — and a few dozen lines read it. NLTK would add a large
dependency, and the PyPI ``wn`` package wants to download its own data (a WN-LMF XML file), which
this offline backend must not need. Debian's ``wordnet-base`` package (``apt-get install
wordnet-base``) puts the files in ``/usr/share/wordnet``; any WordNet 3.0 ``dict/`` directory works
(``--wordnet-dir`` or ``$WNSEARCHDIR``).

How a class gets its text:

1. Its names are tried in order (``"television monitor, tv monitor, monitor"``); the first one
   WordNet knows as a noun wins — exactly, after noun morphology (``skis`` → ``ski``), after
   splitting a joined name into known words (``pottedplant`` → ``potted plant``,
   ``trafficlight`` → ``traffic light``), written as one word (``wine glass`` → ``wineglass``) or
   as a near-spelling of a WordNet compound with the same head (``potted plant`` → ``pot plant``).
   Failing that, a multi-word name falls back to its head noun (``sports ball`` → ``ball``) and is
   reported as approximated.
2. Its sense is the most frequent noun sense (WordNet lists them by tagged frequency) among the
   senses that denote something one can see — lexicographer files such as noun.artifact,
   noun.animal, noun.object — so that ``table`` is furniture, not a table of data. A name with
   no such sense keeps its most frequent sense. Frequency is not context: a *sense hint* (a word
   of the wanted gloss, or a lexicographer file) picks another sense — ``cake=food``,
   ``mouse=computer`` (``--sense`` on the command line). Automatic disambiguation by the other
   classes of the vocabulary was tried and rejected: it fixed ``microwave`` (beside ``oven``) but
   turned ``horse`` into a sawhorse in Pascal Context.
3. Definition: that synset's gloss without the quoted example sentences, ending with a period.
   Synonym: the best other lemma of the synset (lower-case first, then the most often tagged in
   ``cntlist.rev``, then the shortest, spelling variants of the name last); when the synset has
   no other lemma, the best lemma of its first hypernym.
4. A class WordNet does not know gets its own name as text — which makes the blend
   ``(1-α)·t_name + α·t_aux`` a no-op for it — and is listed in :meth:`WordNetTextSource.warnings`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

from ..engine.errors import ItaclipError

DEFAULT_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/share/WordNet-3.0/dict")

#: Lexicographer files (``lexnames(5WN)``) of nouns that denote visible things: senses from these
#: files are preferred ...
VISUAL_LEXFILES = {
    3: "noun.Tops",  # person, animal, plant, ...
    5: "noun.animal",
    6: "noun.artifact",
    13: "noun.food",
    15: "noun.location",
    17: "noun.object",
    19: "noun.phenomenon",  # clouds, fire, light
    20: "noun.plant",
    27: "noun.substance",
}
#: ... then senses from these (collections of visible things, body parts, people, shapes), then
#: the rest (act, attribute, cognition, communication, event, state, ...).
HALF_VISUAL_LEXFILES = {8: "noun.body", 14: "noun.group", 18: "noun.person", 25: "noun.shape"}
#: Names of the noun lexicographer files (``lexnames(5WN)``), index = lex_filenum - 3.
NOUN_LEXFILES = ("Tops", "act", "animal", "artifact", "attribute", "body", "cognition", "communication",
                 "event", "feeling", "food", "group", "location", "motive", "object", "person",
                 "phenomenon", "plant", "possession", "process", "quantity", "relation", "shape",
                 "state", "substance", "time")

#: Photo-domain senses: lemma → hint (see :meth:`WordNet.choose_sense`) for nouns whose most
#: frequent visual sense is not what segmentation datasets label with them (a cake of soap, the
#: radiation called microwave, an industrial plant, the Internet, a post horse). Applied unless a
#: ``--sense NAME=HINT`` is given for the class. Each hint is checked by tests/test_auxtexts.py.
PHOTO_SENSES = {
    "banana": "fruit",  # not the banana tree
    "barrel": "cask",
    "base": "pedestal",
    "blind": "sight",  # window blind, not a hunter's hide
    "broccoli": "food",
    "bulletin_board": "announcements",
    "cake": "baked",
    "canopy": "shelter",
    "cloud": "altitude",
    "column": "architecture",
    "cushion": "padding",
    "drop": "liquid",
    "earth": "loose",  # soil, not the planet
    "glass": "drinking",
    "light": "illumination",  # a lamp, not radiation
    "microwave": "appliance",
    "mouse": "cursor",  # COCO and Pascal Context label the computer mouse
    "net": "fabric",
    "plant": "botany",
    "plate": "dish",
    "poster": "advertisement",
    "radiator": "heater",
    "runway": "planes",
    "sconce": "candles",
    "seat": "furniture",
    "sign": "message",  # a public display of a message (traffic and shop signs)
    "step": "stair",
    "tank": "storage",
    "toilet": "plumbing",  # the fixture, not the room
    "track": "rails",
    "van": "truck",
    "washer": "washing",
    "water": "ocean",  # a body of water, not the compound H2O
}

#: Hypernyms closer to the root than this ("entity" 0, "object" 2, "whole" 3), and the ones in
#: VAGUE_HYPERNYMS, are too vague to stand for a class as its synonym.
MIN_HYPERNYM_DEPTH = 4
VAGUE_HYPERNYMS = {"artifact", "natural_object"}

#: Second parts of COCO-Stuff names that say nothing about the thing (``sky-other``, ``desk-stuff``).
_VAGUE_SUFFIXES = ("other", "stuff", "merged")

# Noun detachment rules of WordNet's morphy (``morphy(7WN)``): suffix → replacement.
_NOUN_RULES = (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
               ("men", "man"), ("ies", "y"))


@dataclass(frozen=True)
class Synset:
    offset: int
    lexfile: int
    words: tuple[tuple[str, int], ...]
    """(lemma as spelled in the synset, lex_id) pairs, in synset order."""
    hypernyms: tuple[int, ...]
    gloss: str

    @property
    def definition(self) -> str:
        """The gloss without its quoted example sentences."""
        return strip_examples(self.gloss)


@dataclass(frozen=True)
class Resolution:
    """How a class name was found in WordNet."""

    name: str  # the class name as written
    lemma: str  # the WordNet lemma used (underscores for spaces)
    synset: Synset
    how: str  # "exact", "split", "compound" or "head"


def strip_examples(gloss: str) -> str:
    """``'a seat for one person; "he sat in the chair"'`` → ``'a seat for one person'``."""
    text = gloss.split('"', 1)[0] if '"' in gloss else gloss
    return text.strip().rstrip(";:,").strip()


def find_wordnet_dir(directory: Union[str, os.PathLike, None] = None) -> Path:
    """The WordNet database directory: ``directory``, ``$WNSEARCHDIR`` or a standard location."""
    candidates = [Path(directory)] if directory else []
    if not directory and os.environ.get("WNSEARCHDIR"):
        candidates.append(Path(os.environ["WNSEARCHDIR"]))
    if not directory:
        candidates += [Path(d) for d in DEFAULT_DIRS]
    for path in candidates:
        if (path / "index.noun").is_file() and (path / "data.noun").is_file():
            return path
    where = str(directory) if directory else ", ".join(str(p) for p in candidates)
    raise ItaclipError(
        f"WordNet 3.0 database not found in {where}: install it (Debian/Ubuntu: apt-get install "
        "wordnet-base) or pass --wordnet-dir DIR holding index.noun and data.noun"
    )


class WordNet:
    """Read-only access to the noun part of a WordNet 3.0 database directory."""

    def __init__(self, directory: Union[str, os.PathLike, None] = None) -> None:
        self.directory = find_wordnet_dir(directory)
        self._index = _read_index(self.directory / "index.noun")
        self._exceptions = _read_exceptions(self.directory / "noun.exc")
        self._counts = _read_counts(self.directory / "cntlist.rev")
        self._data_path = self.directory / "data.noun"
        self._synsets: dict[int, Synset] = {}
        self._depths: dict[int, int] = {}
        self._words: Optional[frozenset[str]] = None
        heads: dict[str, list[str]] = {}
        for lemma in self._index:
            if "_" in lemma:
                heads.setdefault(lemma.rsplit("_", 1)[1], []).append(lemma)
        self._compounds_by_head = heads

    # -------------------------------------------------------------- lookup
    def lemma(self, word: str) -> Optional[str]:
        """The noun lemma for ``word`` (any case, spaces or underscores), after morphology."""
        key = _normalise(word)
        if not key:
            return None
        if key in self._index:
            return key
        head, _, last = key.rpartition("_")
        for base in self._exceptions.get(last, ()):
            candidate = f"{head}_{base}" if head else base
            if candidate in self._index:
                return candidate
        for suffix, replacement in _NOUN_RULES:
            if last.endswith(suffix) and len(last) > len(suffix) + 1:
                candidate = last[: len(last) - len(suffix)] + replacement
                candidate = f"{head}_{candidate}" if head else candidate
                if candidate in self._index:
                    return candidate
        return None

    def senses(self, lemma: str) -> list[Synset]:
        """Noun synsets of ``lemma``, most frequent first."""
        return [self.synset(offset) for offset in self._index.get(lemma, ())]

    def synset(self, offset: int) -> Synset:
        if offset not in self._synsets:
            with open(self._data_path, "rb") as handle:
                handle.seek(offset)
                line = handle.readline().decode("utf-8")
            self._synsets[offset] = _parse_data_line(line)
        return self._synsets[offset]

    def count(self, word: str, synset: Synset, lex_id: int) -> int:
        """How often ``word`` was tagged in this sense (SemCor counts from ``cntlist.rev``)."""
        return self._counts.get(f"{word.lower()}%1:{synset.lexfile:02d}:{lex_id:02d}::", 0)

    @property
    def words(self) -> frozenset[str]:
        """Every single-word lemma of any part of speech (for splitting joined names)."""
        if self._words is None:
            words = set()
            for pos in ("noun", "verb", "adj", "adv"):
                path = self.directory / f"index.{pos}"
                if path.is_file():
                    words.update(w for w in _read_index(path) if "_" not in w and "-" not in w)
            self._words = frozenset(w for w in words if len(w) >= 2 and w.isalpha())
        return self._words

    # -------------------------------------------------------------- names → synsets
    def split_joined(self, name: str) -> Optional[str]:
        """``'pottedplant'`` → ``'potted plant'``: the split of a one-word name into known words
        (fewest parts first; a split that WordNet knows as a compound noun wins), or ``None``."""
        word = name.strip().lower()
        if not word.isalpha() or len(word) < 4:
            return None
        best: Optional[tuple] = None
        for parts in _splits(word, self._known_word, max_parts=3):
            if len(parts) < 2:
                continue
            compound = "_".join(parts)
            score = (len(parts), compound not in self._index, self.lemma(parts[-1]) is None,
                     -len(parts[-1]))
            if best is None or score < best[0]:
                best = (score, parts)
        return " ".join(best[1]) if best else None

    def _known_word(self, word: str) -> bool:
        """A word of any part of speech, or an inflected noun (``sports``), of 2+ letters."""
        return len(word) >= 2 and (word in self.words or (len(word) >= 4 and self.lemma(word) is not None))

    def near_compound(self, name: str) -> Optional[str]:
        """A WordNet compound with the same head noun and near-spelled modifiers:
        ``'potted plant'`` → ``'pot_plant'`` (each modifier and its match share a stem)."""
        words = _normalise(name).split("_")
        if len(words) < 2:
            return None
        head = self.lemma(words[-1])
        if head is None or "_" in head:
            return None
        matches = []
        for compound in self._compounds_by_head.get(head, ()):
            parts = compound.split("_")
            if len(parts) == len(words) and all(_same_stem(a, b) for a, b in zip(words[:-1], parts[:-1])):
                matches.append(compound)
        return min(matches, key=lambda c: (len(c), c)) if matches else None

    def choose_sense(self, lemma: str, hint: Optional[str] = None) -> Synset:
        """The sense of ``lemma`` to use: the most frequent visual sense (VISUAL_LEXFILES, else
        HALF_VISUAL_LEXFILES, else any), or the most frequent sense matching ``hint``.

        A hint is a word of the wanted sense's gloss or lemmas, or the name of its lexicographer
        file (``cake`` + ``food`` → baked goods, not a cake of soap; ``mouse`` + ``computer``).
        """
        senses = self.senses(lemma)
        if not hint and lemma in PHOTO_SENSES and any(_matches(s, PHOTO_SENSES[lemma]) for s in senses):
            hint = PHOTO_SENSES[lemma]
        if hint:
            matching = [s for s in senses if _matches(s, hint)]
            if not matching:
                listing = "; ".join(f"{_lexname(s)}: {s.definition[:60]}" for s in senses[:6])
                word = lemma.replace("_", " ")
                raise ItaclipError(f"no sense of {word!r} matches {hint!r} (senses: {listing})")
            senses = matching
        # min keeps WordNet's frequency order among equals; proper-noun senses ("Monitor") last
        return min(senses, key=lambda s: (_tier(s), _proper(s, lemma)))

    def spellings(self, name: str) -> Iterator[tuple[str, str]]:
        """``(spelling, how)`` pairs to look up for a class name, the name itself first (lazily:
        splitting a joined word needs the full word list, read only when it comes to that).

        ``traffic light`` → also ``trafficlight``; ``pottedplant`` → also ``potted plant``;
        COCO-Stuff's ``category-material`` names: ``window-blind`` → ``window blind``,
        ``blind window``, ``windowblind``; ``sky-other`` → ``sky``.
        """
        text = " ".join(name.strip().split())
        yield text, "exact"
        if "-" in text:
            parts = [p for p in text.split("-") if p]
            if len(parts) == 2 and parts[1].lower() in _VAGUE_SUFFIXES:
                yield parts[0], "category"
            elif len(parts) == 2:
                a, b = parts
                yield from ((f"{a} {b}", "split"), (f"{b} {a}", "split"), (a + b, "joined"))
        elif " " in text:
            yield text.replace(" ", ""), "joined"
        else:
            split = self.split_joined(text)
            if split:
                yield split, "split"

    def head(self, name: str) -> Optional[str]:
        """The noun a name is a kind of: the last word (``sports ball`` → ``ball``), or the first
        part of a COCO-Stuff ``category-material`` name (``wall-brick`` → ``wall``)."""
        text = " ".join(name.strip().split())
        if "-" in text and " " not in text:
            return text.split("-")[0] or None
        if " " not in text:
            text = self.split_joined(text) or text
        words = text.split(" ")
        return words[-1] if len(words) > 1 else None

    def find(self, names: Sequence[str]) -> Optional[tuple[str, str, str]]:
        """``(name, lemma, how)`` for the first of ``names`` WordNet knows: in one of its
        :meth:`spellings`, then as a near-spelled compound, then (last) by its :meth:`head` noun."""
        for name in names:
            for form, how in self.spellings(name):
                lemma = self.lemma(form)
                if lemma:
                    return name, lemma, how
        for name in names:
            for form, _ in self.spellings(name):
                compound = self.near_compound(form) if " " in form else None
                if compound:
                    return name, compound, "compound"
        for name in names:
            head = self.head(name)
            if head and self.lemma(head):
                return name, self.lemma(head), "head"
        return None

    def resolve(self, names: Sequence[str], hint: Optional[str] = None) -> Optional[Resolution]:
        """The class's name, lemma and sense (see :meth:`find` and :meth:`choose_sense`)."""
        found = self.find(names)
        if found is None:
            return None
        name, lemma, how = found
        return Resolution(name, lemma, self.choose_sense(lemma, hint), how)

    # -------------------------------------------------------------- texts
    def definition(self, synset: Synset) -> str:
        text = synset.definition
        return text if text.endswith((".", "!", "?")) else text + "."

    def depth(self, offset: int) -> int:
        """Links from the root ("entity") to the synset along its shortest hypernym path."""
        if offset not in self._depths:
            hypernyms = self.synset(offset).hypernyms
            self._depths[offset] = 1 + min(self.depth(h) for h in hypernyms) if hypernyms else 0
        return self._depths[offset]

    def synonym(self, synset: Synset, avoid: Sequence[str], taken: Sequence[str] = ()) -> Optional[str]:
        """The best lemma of ``synset`` that does not repeat the class name; when there is none,
        the best lemma of its nearest hypernym (up to 3 links up).

        ``avoid`` holds the class's own spellings: a lemma equal to one, containing one of their
        words (``railroad train`` for ``train``, ``moo-cow`` for ``cow``) or spelled like one
        (``airplane`` for ``aeroplane``) repeats it. Proper and Latin names (capitals) are never
        used, nor names of other classes of the vocabulary (``taken``) while another lemma is
        left. Among the rest: the lemma tagged most often in this sense, then the shortest, then
        synset order. If the whole chain only has repeats, the best repeat of the synset itself.
        """
        avoid_keys = {_compact(a) for a in avoid}
        avoid_words = {w for a in avoid for w in _words(a)}
        taken_keys = {_compact(t) for t in taken} - avoid_keys
        chain, current = [synset], synset
        for _ in range(3):
            if not current.hypernyms:
                break
            current = self.synset(current.hypernyms[0])
            if self.depth(current.offset) < MIN_HYPERNYM_DEPTH or current.words[0][0] in VAGUE_HYPERNYMS:
                break  # "artifact", "thing", "communication": too vague to stand for a class
            chain.append(current)

        def options(level: Synset, strict: bool) -> list[tuple]:
            found = []
            for position, (word, lex_id) in enumerate(level.words):
                if word != word.lower() or _compact(word) in avoid_keys:
                    continue
                repeats = bool(set(_words(word)) & avoid_words) or any(_near(word, a) for a in avoid)
                if strict and (repeats or _compact(word) in taken_keys):
                    continue
                rank = (repeats, _compact(word) in taken_keys, -self.count(word, level, lex_id),
                        len(_words(word)), position)
                found.append((rank, word))
            return found

        for level in chain:
            found = options(level, strict=True)
            if found:
                return min(found)[1].replace("_", " ")
        found = options(synset, strict=False)
        return min(found)[1].replace("_", " ") if found else None


class WordNetTextSource:
    """Auxiliary texts from WordNet (see the module docstring); deterministic and offline.

    Args:
        directory: the WordNet database directory (default: ``$WNSEARCHDIR`` or a standard place).
        senses: ``class name → hint`` to pick a sense other than the most frequent visual one
            (``{"cake": "food", "mouse": "computer"}``; see :meth:`WordNet.choose_sense`).
    """

    def __init__(self, directory: Union[str, os.PathLike, None] = None,
                 senses: Optional[Mapping[str, str]] = None) -> None:
        self.wordnet = WordNet(directory)
        self.senses = {k.strip().lower(): v.strip() for k, v in (senses or {}).items()}
        self.unknown: list[str] = []
        self.no_synonym: list[str] = []
        self.approximated: list[str] = []
        self._names: list[str] = []

    def describe(self) -> str:
        return f"WordNet 3.0 dictionary in {self.wordnet.directory}"

    def prepare(self, classes: Sequence[Sequence[str]]) -> None:
        """Take note of the vocabulary (synonyms avoid other classes' names); check the hints."""
        self._names = [name for names in classes for name in names]
        known = {n.lower() for n in self._names}
        unused = sorted(k for k in self.senses if k not in known)
        if unused:
            raise ItaclipError(f"sense hint(s) for unknown class name(s): {', '.join(unused)}")
        for names in classes:  # a hint that matches no sense fails now, before any text is written
            if any(n.lower() in self.senses for n in names):
                self.resolve(names)

    def resolve(self, names: Sequence[str]) -> Optional[Resolution]:
        hint = next((self.senses[n.lower()] for n in names if n.lower() in self.senses), None)
        return self.wordnet.resolve(names, hint)

    def text(self, names: Sequence[str], kind: str) -> str:
        """The definition or synonym of the class named ``names`` (its first known name)."""
        names = [n.strip() for n in names if n.strip()]
        resolution = self.resolve(names)
        if resolution is None:
            # Neutral fallback: the class's own name makes (1-α)·t_name + α·t_aux equal t_name.
            self.unknown.append(names[0])
            return names[0]
        head = resolution.lemma.replace("_", " ")
        if resolution.how == "head":
            self.approximated.append(f"{resolution.name} → {head}")
        if kind == "definition":
            return self.wordnet.definition(resolution.synset)
        if resolution.how == "head":
            return head  # "sports ball" → "ball": the head noun is a fair synonym
        taken = [n for n in self._names if n not in names]
        synonym = self.wordnet.synonym(resolution.synset, [*names, head], taken)
        if synonym is None:
            self.no_synonym.append(names[0])
            return names[0]
        return synonym

    def warnings(self) -> list[str]:
        """Messages about the classes WordNet did not know, had no synonym for or only
        approximated, since the last call."""
        messages = []
        if self.unknown:
            messages.append(
                f"WordNet does not know {len(self.unknown)} class name(s); their text is the name "
                f"itself (no effect on the blend): {', '.join(self.unknown)}"
            )
        if self.no_synonym:
            messages.append(
                f"WordNet has no synonym for {len(self.no_synonym)} class name(s); their text is the "
                f"name itself (no effect on the blend): {', '.join(self.no_synonym)}"
            )
        if self.approximated:
            messages.append(
                f"{len(self.approximated)} class name(s) approximated by their head noun: "
                f"{'; '.join(self.approximated)}"
            )
        self.unknown, self.no_synonym, self.approximated = [], [], []
        return messages


# ---------------------------------------------------------------------------- file parsing
@lru_cache(maxsize=8)
def _read_index(path: Path) -> dict[str, tuple[int, ...]]:
    """``lemma → synset offsets`` (most frequent sense first) from an ``index.pos`` file."""
    index: dict[str, tuple[int, ...]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(" "):  # license header
                continue
            fields = line.split()
            synset_cnt, p_cnt = int(fields[2]), int(fields[3])
            start = 4 + p_cnt + 2  # skip pointer symbols, sense_cnt and tagsense_cnt
            index[fields[0]] = tuple(int(o) for o in fields[start : start + synset_cnt])
    return index


@lru_cache(maxsize=8)
def _read_exceptions(path: Path) -> dict[str, tuple[str, ...]]:
    """Irregular plurals: ``'mice' → ('mouse',)``."""
    exceptions: dict[str, tuple[str, ...]] = {}
    if path.is_file():
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 2:
                    exceptions[fields[0]] = tuple(fields[1:])
    return exceptions


@lru_cache(maxsize=8)
def _read_counts(path: Path) -> dict[str, int]:
    """Sense key → tag count from ``cntlist.rev`` (``sense_key sense_number tag_cnt``)."""
    counts: dict[str, int] = {}
    if path.is_file():
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) == 3:
                    counts[fields[0]] = int(fields[2])
    return counts


def _parse_data_line(line: str) -> Synset:
    """One ``data.noun`` line: offset lex_filenum ss_type w_cnt (word lex_id)… p_cnt (ptr)… | gloss."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    offset, lexfile, w_cnt = int(fields[0]), int(fields[1]), int(fields[3], 16)
    words = tuple((fields[4 + 2 * i], int(fields[5 + 2 * i], 16)) for i in range(w_cnt))
    position = 4 + 2 * w_cnt
    p_cnt = int(fields[position])
    hypernyms = []
    for i in range(p_cnt):
        symbol, target, pos = fields[position + 1 + 4 * i : position + 4 + 4 * i]
        if symbol in ("@", "@i") and pos == "n":
            hypernyms.append(int(target))
    return Synset(offset, lexfile, words, tuple(hypernyms), gloss.strip())


def _lexname(synset: Synset) -> str:
    index = synset.lexfile - 3
    return f"noun.{NOUN_LEXFILES[index]}" if 0 <= index < len(NOUN_LEXFILES) else "noun"


def _matches(synset: Synset, hint: str) -> bool:
    """``hint`` names the synset's lexicographer file or is a word of its lemmas or gloss."""
    hint = hint.strip().lower()
    if hint in (_lexname(synset).lower(), _lexname(synset).lower()[5:]):
        return True
    words = " ".join(w for w, _ in synset.words).replace("_", " ").lower() + " " + synset.definition.lower()
    return re.search(rf"\b{re.escape(hint)}(s|es)?\b", words) is not None


def _proper(synset: Synset, lemma: str) -> bool:
    """The synset spells ``lemma`` with capitals only (a proper noun: "Monitor", the warship)."""
    spellings = [w for w, _ in synset.words if w.lower() == lemma]
    return bool(spellings) and all(w != w.lower() for w in spellings)


def _tier(synset: Synset) -> int:
    if synset.lexfile in VISUAL_LEXFILES:
        return 0
    return 1 if synset.lexfile in HALF_VISUAL_LEXFILES else 2


# ---------------------------------------------------------------------------- string helpers
def _normalise(word: str) -> str:
    return re.sub(r"[\s]+", "_", word.strip().lower())


def _compact(word: str) -> str:
    """Spelling-insensitive form for echo checks: letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", word.lower())


_STOPWORDS = {"a", "an", "and", "in", "of", "on", "the", "with"}


def _words(text: str) -> list[str]:
    """Content words of a name or lemma: ``'pair_of_scissors'`` → ``['pair', 'scissors']``."""
    return [w for w in re.split(r"[\s_\-]+", text.lower()) if w and w not in _STOPWORDS]


def _same_stem(a: str, b: str) -> bool:
    """``potted``/``pot``: the shorter word (at least 3 letters) starts the longer one."""
    short, long_ = sorted((a, b), key=len)
    return len(short) >= 3 and long_.startswith(short) and len(long_) - len(short) <= 3


def _near(word: str, name: str) -> bool:
    """Spelling variants (``aeroplane``/``airplane``, ``ski``/``skis``): edit distance ≤ 2."""
    a, b = _compact(word), _compact(name)
    if abs(len(a) - len(b)) > 2:
        return False
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1] <= 2


def _splits(word: str, known: Callable[[str], bool], max_parts: int) -> list[tuple[str, ...]]:
    """All ways to write ``word`` as at most ``max_parts`` words for which ``known`` is true."""
    results: list[tuple[str, ...]] = []

    def walk(start: int, parts: tuple[str, ...]) -> None:
        if start == len(word):
            results.append(parts)
            return
        if len(parts) == max_parts:
            return
        for end in range(start + 2, len(word) + 1):
            if known(word[start:end]):
                walk(end, parts + (word[start:end],))

    walk(0, ())
    return results
