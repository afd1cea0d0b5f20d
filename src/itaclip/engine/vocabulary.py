"""Class vocabularies: names per class, the background set and auxiliary texts (SPEC §2).

File formats of this field:

* class names: one class per line, several names of one class separated by ``", "``; class index =
  line index. With a background set, line 0 holds its words.
* auxiliary texts (the authors' format): one line per non-background class, ``name >=text``; the
  text after ``>=`` is used verbatim and lines are matched to classes by order.

:func:`resolve_vocabulary` is the one place that turns what a user gives (a preset, typed classes, a
built-in list's name, background words, auxiliary texts) into a :class:`Vocabulary`; the CLI, the
evaluation, the demo, the benchmark and :meth:`itaclip.Segmenter.set_vocabulary` all call it.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

from .errors import ItaclipError
from .methods import METHODS, get_preset
from .methods.base import Preset

#: Background set of the authors' VOC21 class file (SPEC §2).
VOC_BACKGROUND = (
    "sky, wall, tree, wood, grass, road, mountain, sands, desk, bed, building, lamp, door, window, "
    "wardrobe, ceiling, shelf, curtain, stair, floor, fence, ground, water, railway, helmet, house, "
    "bridge, sign, keyboard, refrigerator, bench, sink, laptop, clock, blanket, branch, bush, cabinet, "
    "clouds, cupboard, pavement, platform, roof, sea"
)
#: Background set of COCO-Object (paper appendix A.1).
COCO_BACKGROUND = (
    "sky, wall, tree, wood, grass, road, sea, river, mountain, sands, desk, bed, building, cloud, lamp, "
    "door, window, wardrobe, ceiling, shelf, curtain, stair, floor, hill, rail, fence"
)

NAME_SEPARATOR = ", "


@dataclass(frozen=True)
class Vocabulary:
    """What to segment: ``classes[c]`` lists the names (queries) of class ``c``.

    With ``has_background`` class 0 is a background set: its queries are never blended with
    auxiliary texts and it is what ``prob_thd`` falls back to. ``aux_texts`` holds one text per
    non-background class, in class order.
    """

    classes: tuple[tuple[str, ...], ...]
    has_background: bool = False
    aux_texts: Optional[tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if not self.classes:
            raise ItaclipError("the class list is empty: give at least one class name")
        for index, names in enumerate(self.classes):
            if not names or any(not n.strip() for n in names):
                raise ItaclipError(f"class {index} has an empty name")
            for name in names:
                _check_text(name, f"class {index}")
                if "\n" in name or "\r" in name:  # a name is one line: in legends, exports and class files
                    raise ItaclipError(f"class {index} name {name!r} holds a line break: give one class per line "
                                       "in a class file, or separate classes with ', '")
        for index, text in enumerate(self.aux_texts or ()):
            _check_text(text, f"auxiliary text {index + 1}")
        if self.aux_texts is not None and len(self.aux_texts) != self.num_foreground:
            raise ItaclipError(
                f"{len(self.aux_texts)} auxiliary texts for {self.num_foreground} "
                f"{'non-background ' if self.has_background else ''}classes: give one line per class"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_foreground(self) -> int:
        return self.num_classes - int(self.has_background)

    @property
    def names(self) -> list[str]:
        """One display name per class (the first name; "background" for a background set)."""
        return [
            "background" if (c == 0 and self.has_background) else names[0]
            for c, names in enumerate(self.classes)
        ]

    @property
    def queries(self) -> list[str]:
        """Every name of every class, flattened in class order."""
        return [name for names in self.classes for name in names]

    @property
    def query_class(self) -> list[int]:
        """Class index of each query."""
        return [c for c, names in enumerate(self.classes) for _ in names]

    def with_aux_texts(self, aux_texts: Optional[Sequence[str]]) -> "Vocabulary":
        return Vocabulary(self.classes, self.has_background, tuple(aux_texts) if aux_texts else None)

    def with_background(self, words: Union[str, Sequence[str]]) -> "Vocabulary":
        """Class 0 becomes the background set ``words``: it replaces an existing background set, or
        is prepended; the aux texts, if any, still follow the foreground."""
        bg = tuple(_split_names(words) if isinstance(words, str) else (w.strip() for w in words))
        bg = tuple(w for w in bg if w)
        if not bg:
            raise ItaclipError("the background set is empty: give words such as 'sky, wall, floor'")
        foreground = self.classes[1:] if self.has_background else self.classes
        return Vocabulary((bg,) + foreground, True, self.aux_texts)


def _check_text(text: str, what: str) -> None:
    """Names and texts must be text: bytes that are not UTF-8 (surrogate escapes of a command line
    typed in another encoding) cannot be encoded, written to JSON or shown."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ItaclipError(f"{what} {text.encode('utf-8', 'backslashreplace').decode()!r} is not valid "
                           "UTF-8 text: type it in UTF-8") from None


def is_file(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` is a file; ``False`` for text that cannot be a path at all (too long a name,
    a NUL byte): an inline list of long class names is not a file, not an error."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def text_lines(text: str) -> list[str]:
    """Lines of a class or text file: split on ``\n`` only (``\r\n`` too), never on the other
    characters :meth:`str.splitlines` treats as line breaks (form feed, vertical tab, NEL, U+2028),
    which may be part of a name; a UTF-8 byte-order mark at the start is dropped."""
    return [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]


def read_lines(path: Union[str, os.PathLike], what: str) -> list[str]:
    """:func:`text_lines` of a UTF-8 file; unreadable files are a one-line error naming ``what``."""
    try:
        return text_lines(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ItaclipError(f"cannot read {what} {path}: {exc}") from None


def _split_names(line: str) -> list[str]:
    """Inline lists typed by people: any comma separates."""
    return [n.strip() for n in line.split(",")]


def parse_class_lines(lines: Sequence[str], source: str = "class list") -> list[tuple[str, ...]]:
    """Parse class-file lines; blank lines at the end are ignored, blank lines inside are errors."""
    lines = [line.rstrip("\r\n") for line in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    classes = []
    for number, line in enumerate(lines, 1):
        names = tuple(n for n in (part.strip() for part in line.split(NAME_SEPARATOR)) if n)
        if not names:
            raise ItaclipError(f"{source}: line {number} is empty (one class per line, names separated by ', ')")
        classes.append(names)
    if not classes:
        raise ItaclipError(f"{source}: no classes found")
    return classes


def builtin_path(kind: str, name: str) -> Path:
    """Path of a file shipped in ``itaclip/data/<kind>/<name>.txt``."""
    return Path(str(resources.files("itaclip") / "data" / kind / f"{name}.txt"))


def load_classes(spec: Union[str, os.PathLike, Sequence[str]], has_background: bool = False) -> Vocabulary:
    """A vocabulary from a class file, an inline list or a Python list.

    ``spec`` may be a path to a class file, the name of a built-in class file (``voc21``), an
    inline comma-separated list (``"cat, dog, sky"``: one name per class) or a list of strings
    (each may hold several names separated by ", "). With ``has_background`` the first class is
    the background set.
    """
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ItaclipError("the class list is empty: give at least one class name")
        classes = parse_class_lines([str(s) for s in spec])
    else:
        text = os.fspath(spec)
        path = Path(text)
        if not text.strip():
            raise ItaclipError("the class list is empty: give a class file or names like 'cat, dog'")
        if is_file(path):
            classes = parse_class_lines(read_lines(path, "class file"), str(path))
        elif is_file(builtin_path("classes", text)):
            classes = parse_class_lines(read_lines(builtin_path("classes", text), "class file"), text)
        elif path.suffix.lower() in (".txt", ".csv") or os.sep in text:
            raise ItaclipError(f"class file {text} does not exist")
        else:
            names = _split_names(text)
            if any(not n for n in names):
                raise ItaclipError(f"malformed class list {text!r}: empty name between commas")
            classes = [(n,) for n in names]
    if has_background and len(classes) < 2:
        raise ItaclipError("a vocabulary with a background set needs at least one more class")
    return Vocabulary(tuple(classes), has_background)


def parse_aux_lines(lines: Sequence[str], source: str = "auxiliary texts") -> list[str]:
    """Texts from ``name >=text`` lines, verbatim after the first ``>=`` (authors' format)."""
    lines = [line.rstrip("\r\n") for line in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    texts = []
    for number, line in enumerate(lines, 1):
        if ">=" not in line:
            raise ItaclipError(f"{source}: line {number} has no '>=' (expected 'name >=text')")
        text = line.split(">=")[1]
        if not text.strip():
            raise ItaclipError(f"{source}: line {number} has an empty text after '>='")
        texts.append(text)
    return texts


def load_aux_texts(spec: Union[str, os.PathLike]) -> list[str]:
    """Auxiliary texts from a file path or the name of a built-in file (``voc21_definitions``)."""
    path = Path(spec)
    if not is_file(path):
        builtin = builtin_path("texts", os.fspath(spec))
        if not is_file(builtin):
            raise ItaclipError(f"auxiliary-text file {spec} does not exist")
        path = builtin
    return parse_aux_lines(read_lines(path, "auxiliary-text file"), str(path))


# --------------------------------------------------------------------------------------------------
# resolution: what users give → a Vocabulary
# --------------------------------------------------------------------------------------------------

ClassesSpec = Union[None, "Vocabulary", str, os.PathLike, Sequence[str]]
AuxSpec = Union[None, str, os.PathLike, Sequence[str]]
#: A named source of auxiliary texts (``--aux-texts authors``): built-in list name (None for a typed
#: vocabulary) → a local file in the ``name >=text`` format, fetched if need be.
AuxSource = Callable[[Optional[str]], Path]
#: Entry-point group of the named sources; itaclip registers ``authors`` (the paper's texts, fetched
#: by :mod:`itaclip.auxtexts.authors`), so the engine itself never imports a downloader.
AUX_SOURCES_GROUP = "itaclip.aux_texts"


def aux_sources() -> dict[str, AuxSource]:
    """The named auxiliary-text sources installed (entry points of :data:`AUX_SOURCES_GROUP`)."""
    from importlib.metadata import entry_points

    return {entry.name: entry.load() for entry in entry_points(group=AUX_SOURCES_GROUP)}

#: Built-in class lists by name, each with the preset that uses it (its background policy and texts):
#: ITACLIP's lists, and the lists of the other methods' authors (sclip_voc21, clearclip_voc21, …).
BUILTIN_LISTS: dict[str, Preset] = {}
for _method in METHODS.values():  # ITACLIP first: its presets own the lists named after datasets
    for _preset in _method.presets.values():
        if _preset.classes:
            BUILTIN_LISTS.setdefault(_preset.classes, _preset)


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _list_name_typo(text: str) -> Optional[list[str]]:
    """Built-in list names a single typed word was probably meant to be (``coco-stuff``, ``voc_21``,
    ``ade``); ``None`` when it looks like an ordinary class name."""
    word = text.strip()
    if not word or "," in word or " " in word:
        return None
    squashed = _squash(word)
    names = sorted(BUILTIN_LISTS)
    exact = [n for n in names if _squash(n) == squashed]
    if exact:
        return exact
    prefix = [n for n in names if len(squashed) >= 3 and _squash(n).startswith(squashed)]
    if prefix:
        return prefix
    close = difflib.get_close_matches(squashed, [_squash(n) for n in names], n=2, cutoff=0.8)
    return [n for n in names if _squash(n) in close] or None


def builtin_list(name: str) -> Vocabulary:
    """A built-in class list exactly as its preset uses it: class 0 is the background set where the
    preset has one, and the preset's auxiliary texts are attached when they are shipped."""
    preset = BUILTIN_LISTS[name]
    vocab = load_classes(name, has_background=preset.has_background)
    if preset.aux_texts and builtin_path("texts", preset.aux_texts).is_file():
        vocab = vocab.with_aux_texts(load_aux_texts(preset.aux_texts))
    return vocab


def background_set(preset: Preset) -> tuple[str, ...]:
    """The background words of a preset with a background policy (line 0 of its class list)."""
    return load_classes(preset.classes, has_background=True).classes[0]


def _is_builtin_name(spec) -> bool:
    return isinstance(spec, str) and spec in BUILTIN_LISTS and not is_file(spec)


def resolve_vocabulary(classes: ClassesSpec = None, *, preset: Union[None, str, Preset] = None,
                       background: Union[None, str, Sequence[str]] = None, aux_texts: AuxSpec = None,
                       has_background: Optional[bool] = None,
                       sources: Optional[Mapping[str, AuxSource]] = None) -> Vocabulary:
    """The vocabulary for what a user gives, by the same rules everywhere:

    * ``classes`` typed (an inline ``"cat, dog"``, a class file, a list of strings) are all
      foreground classes; under a preset with a background set (voc21, context60, coco_object)
      that set is prepended as class 0, named "background";
    * a built-in list's name (``"voc21"``, ``"coco_stuff"``, …) means that list exactly as its preset
      uses it (class 0 = background where the preset has one; its auxiliary texts attached);
      ``None`` means the preset's own list;
    * ``background`` words set class 0: they replace a background set, or are prepended as one;
    * ``aux_texts``: a file (``name >=text`` lines), a built-in text file's name, or one string per
      foreground class; ``"none"`` drops a built-in list's texts; the name of a source of
      ``sources`` (default: the installed ones, :func:`aux_sources`) takes that source's texts for
      the built-in list in use — ``"authors"``: the paper's own LLaMA-3 texts, downloaded once;
    * ``has_background=True`` reads the first class of a typed list as its background set (the
      field's class-file format); ``False`` never adds one.

    Fewer than two classes, or a single word close to a built-in list's name, is an error.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    list_name = None  # the built-in list in use, if any (it decides the authors' texts)
    if isinstance(classes, Vocabulary):
        vocab = classes
    elif classes is None or _is_builtin_name(classes):
        list_name = classes if classes is not None else (preset.classes if preset else None)
        if list_name is None:
            raise ItaclipError("no classes given and the preset has no class list: give classes (--classes)")
        vocab = builtin_list(list_name)
    else:
        meant = _list_name_typo(classes) if isinstance(classes, str) and not is_file(classes) else None
        if meant:
            raise ItaclipError(f"{classes!r} is not a built-in class list: did you mean "
                               f"{' or '.join(repr(m) for m in meant)}? (lists: {', '.join(sorted(BUILTIN_LISTS))})")
        vocab = load_classes(classes, has_background=bool(has_background))
        if has_background is None and background is None and preset is not None and preset.has_background:
            vocab = vocab.with_background(background_set(preset))
    if background is not None:
        vocab = vocab.with_background(background)
    if aux_texts is not None:
        if isinstance(aux_texts, str) and aux_texts.strip().lower() == "none":
            vocab = vocab.with_aux_texts(None)
        else:
            source = _named_source(aux_texts, sources)
            if source is not None:
                aux_texts = source(list_name)
            texts = load_aux_texts(aux_texts) if isinstance(aux_texts, (str, os.PathLike)) else list(aux_texts)
            vocab = vocab.with_aux_texts(texts)
    check_vocabulary(vocab)
    return vocab


def _named_source(aux_texts: AuxSpec, sources: Optional[Mapping[str, AuxSource]]) -> Optional[AuxSource]:
    """The source ``aux_texts`` names (``"authors"``), or None (a file of that name wins)."""
    if not isinstance(aux_texts, str) or is_file(aux_texts):
        return None
    name = aux_texts.strip().lower()
    if not name.isidentifier():  # a path or inline texts, never a source's name
        return None
    return (aux_sources() if sources is None else sources).get(name)


def check_vocabulary(vocab: Vocabulary) -> None:
    """A segmentation needs at least two classes to choose between; a class that repeats an earlier
    one (same names and auxiliary text, so the same features) is never chosen: a warning."""
    if vocab.num_classes < 2:
        raise ItaclipError(f"the vocabulary has {vocab.num_classes} class ({vocab.names[0]!r}): give at least "
                           "two classes, or add a background set (--background 'sky, wall, floor')")
    first = {}
    for index, names in enumerate(vocab.classes):
        aux = index - vocab.has_background
        key = (names, vocab.aux_texts[aux] if vocab.aux_texts is not None and aux >= 0 else None)
        if key in first:
            warnings.warn(f"itaclip: class {index} ({', '.join(names)}) repeats class {first[key]}: it can never be "
                          "chosen (ties go to the first); give each class once", stacklevel=3)
        first.setdefault(key, index)
