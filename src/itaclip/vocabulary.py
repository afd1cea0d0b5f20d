"""Class vocabularies: names per class, the background set and auxiliary texts (SPEC §2).

File formats of this field:

* class names: one class per line, several names of one class separated by ``", "``; class index =
  line index. With a background set, line 0 holds its words.
* auxiliary texts (the authors' format): one line per non-background class, ``name >=text``; the
  text after ``>=`` is used verbatim and lines are matched to classes by order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence, Union

from .errors import ItaclipError

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
        """Prepend a background set (class 0); the aux texts, if any, still follow the foreground."""
        bg = tuple(_split_names(words) if isinstance(words, str) else (w.strip() for w in words))
        bg = tuple(w for w in bg if w)
        if not bg:
            raise ItaclipError("the background set is empty: give words such as 'sky, wall, floor'")
        if self.has_background:
            raise ItaclipError("this vocabulary already has a background set (class 0)")
        return Vocabulary((bg,) + self.classes, True, self.aux_texts)


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
        if path.is_file():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ItaclipError(f"cannot read class file {path}: {exc}") from None
            classes = parse_class_lines(lines, str(path))
        elif builtin_path("classes", text).is_file():
            lines = builtin_path("classes", text).read_text(encoding="utf-8").splitlines()
            classes = parse_class_lines(lines, text)
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
    if not path.is_file():
        builtin = builtin_path("texts", os.fspath(spec))
        if not builtin.is_file():
            raise ItaclipError(f"auxiliary-text file {spec} does not exist")
        path = builtin
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ItaclipError(f"cannot read auxiliary-text file {path}: {exc}") from None
    return parse_aux_lines(lines, str(path))
