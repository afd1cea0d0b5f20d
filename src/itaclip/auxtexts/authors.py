"""The paper's own auxiliary texts: the authors' LLaMA-3 files, fetched, pinned and cached.

The built-in texts shipped with itaclip are ours (written offline from WordNet); the paper's numbers
use the LLaMA-3-8B-Instruct texts the authors published. Their repository has no licence, so the
files are not shipped: ``--aux-texts authors`` downloads the file of the vocabulary's list once from
the authors' repository at a pinned commit, checks its SHA-256 before anything is written, and
caches it in ``authors-texts/`` of itaclip's cache folder (``$ITACLIP_CACHE`` or ``~/.cache/itaclip``).
Offline, a cached copy is used (its checksum is checked again on every read).

``ITACLIP_AUTHORS_TEXTS_URL`` replaces the base URL (files are fetched as ``GET $URL/<name>``), for
mirrors and tests.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple, Optional

from ..engine.errors import ItaclipError

#: The request for the authors' texts in the CLI, the demo and the Python API.
AUTHORS = "authors"
REPOSITORY = "github.com/m-arda-aydn/ITACLIP"
COMMIT = "521a33c4f10760cd9a3a48beb432e92fac7838ab"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/m-arda-aydn/ITACLIP/{COMMIT}/llama_generated_texts"
URL_ENV = "ITACLIP_AUTHORS_TEXTS_URL"
#: The whole download (not each read) must end within this many seconds.
TIMEOUT_S = 30
#: The authors' files are a few kilobytes each: a far larger answer is not theirs and is not read in.
MAX_BYTES = 4 << 20


class AuthorsFile(NamedTuple):
    name: str
    sha256: str


#: Built-in class list → the authors' file for it (folder ``llama_generated_texts/`` at COMMIT).
FILES: dict[str, AuthorsFile] = {
    "voc21": AuthorsFile("voc21_definitions.txt", "d8f8413f656b849852e06ead43a8d28b23905585f97a0d075cfc7f0576ce5e83"),
    "context60": AuthorsFile("context60_definitions.txt",
                             "8084d97548ab40e78a472250970056288748aff024093899193b28fdb119abc3"),
    "coco_object": AuthorsFile("coco_object_synonyms.txt",
                               "4814fb858fa19ef5b71cd87d3984e2607d02a0149c53f1b97e1752084a152cab"),
    "coco_stuff": AuthorsFile("coco_stuff_definitions.txt",
                              "b5ec8b2a597ae079623c348438401e11b626b4e22a41353cb9e4a42cc2a521d8"),
    "cityscapes": AuthorsFile("cityscapes_synonyms.txt",
                              "be2a6a10b6b570f2e2b2f212b252e59fedfe83742129e79253c4c5153d0c0a3a"),
}


def cache_dir() -> Path:
    from ..engine.feature_cache import cache_root

    return cache_root() / "authors-texts"


def base_url() -> str:
    return os.environ.get(URL_ENV, "").strip().rstrip("/") or DEFAULT_BASE_URL


def authors_texts_file(list_name: Optional[str]) -> Path:
    """The verified local copy of the authors' texts for a built-in list (``None``: a custom
    vocabulary), downloading it once.

    Raises :class:`ItaclipError` (one line) for a list without an authors' file, a download that
    fails with no cached copy, or a file whose SHA-256 differs from the pinned one (then nothing
    is written).
    """
    entry = FILES.get(list_name) if list_name else None
    if entry is None:
        what = f"the {list_name} list" if list_name else "a custom vocabulary"
        raise ItaclipError(f"the authors' auxiliary texts exist for the presets {', '.join(FILES)} only, not for "
                           f"{what}: use the built-in texts or --aux-texts FILE")
    path = cache_dir() / entry.name
    try:
        if hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256:
            return path
    except OSError:
        pass  # not cached (or unreadable): fetch it
    url = f"{base_url()}/{entry.name}"
    data = _download(url, entry.name, path)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ItaclipError(f"{url} has SHA-256 {digest}, not the authors' {entry.sha256} (commit {COMMIT[:12]}): "
                           f"refused, nothing written; check {URL_ENV} or the mirror")
    from ..engine.files import atomic_write_bytes

    try:
        atomic_write_bytes(path, data, durable=True)
    except OSError as exc:
        raise ItaclipError(f"cannot cache the authors' texts in {path.parent} ({exc.strerror or exc}); set "
                           "ITACLIP_CACHE to a writable folder") from None
    return path


def _download(url: str, name: str, target: Path) -> bytes:
    from ..engine.downloads import DownloadError, download

    try:
        return download(url, max_bytes=MAX_BYTES, timeout=TIMEOUT_S)
    except DownloadError as exc:
        raise ItaclipError(f"cannot download the authors' {name} from {url} ({exc.reason}) and it is not cached "
                           f"in {target.parent}: connect once, or give --aux-texts FILE") from None


def texts_for_paper(list_name: Optional[str]) -> tuple[Optional[str], str]:
    """The auxiliary texts a run reproducing the paper should use for a built-in list, and a
    sentence saying which they are: ``("authors", ...)`` when the authors' file is cached or can
    be downloaded, else ``(None, ...)`` (the list's built-in texts) with the reason."""
    if list_name not in FILES:
        return None, f"the built-in texts (the authors published none for {list_name or 'this vocabulary'})"
    try:
        path = authors_texts_file(list_name)
    except ItaclipError as exc:
        return None, f"our built-in WordNet texts, NOT the paper's: the authors' are unavailable ({exc})"
    return AUTHORS, f"the authors' LLaMA-3 texts {path.name} (sha256 {FILES[list_name].sha256[:12]}…), as in the paper"
