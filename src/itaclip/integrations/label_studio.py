"""Label Studio pre-annotation: tasks in, one ``brushlabels`` result per class present out.

:class:`LabelStudioPredictor` is what the ML backend (:mod:`itaclip.integrations.label_studio_server`)
calls for each ``/predict`` request; it needs no web framework, so it is usable (and tested) alone:

* the vocabulary follows the labelling config sent with the request when it has ``BrushLabels``:
  each label that is the first name of a class of the server's vocabulary gets that class (all its
  names, its auxiliary text); any other label becomes a class of its own (at most
  ``max_new_labels`` such labels over the backend's life); a background set (class 0) is kept and
  reported only if the config has a ``background`` label; without a config, the class file as it is;
* the results are Label Studio brush RLE of exactly the label map ``itaclip segment`` writes for
  the same image, vocabulary and options;
* images come from :class:`ImageFetcher`: http(s) URLs on allowed hosts, or Label Studio's
  ``/data/upload/…`` and ``/data/local-files/?d=…`` paths from the operator's ``LABEL_STUDIO_URL``
  (the only place the operator's token goes), each download bounded in bytes, time and pixels; a
  task whose image cannot be fetched or read gets an empty result with an ``error``, the others
  are kept.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..engine.downloads import DownloadError, download
from ..engine.errors import ItaclipError
from ..engine.images import check_pixels, decode_image, read_image
from ..engine.vocabulary import Vocabulary, check_vocabulary
from ..outputs.exports import labelstudio_prediction

logger = logging.getLogger(__name__)

BACKGROUND_LABEL = "background"


@dataclass(frozen=True)
class BrushTarget:
    """Where predictions go in a project: the ``BrushLabels`` tag, its image and the task field."""

    from_name: str = "tag"
    to_name: str = "image"
    value: str = "image"
    """Task data key of the image (``$image`` in the config → ``image``)."""
    labels: Optional[tuple[str, ...]] = None
    """The config's labels; ``None`` (no config): the server's vocabulary as it is."""


#: Longest label the backend takes from a labelling config (CLIP reads 77 tokens at most anyway).
MAX_LABEL_CHARS = 256


def brush_target(config: Optional[str]) -> BrushTarget:
    """Where predictions go in a labelling config (Label Studio's XML): its first ``BrushLabels``
    tag (``name``, the first of ``toName``, the labels of its ``Label`` children, ``alias`` before
    ``value`` as Label Studio reads them) and the data key of the object tag it names; the defaults
    without a config. Raises :class:`ItaclipError` for a config that is not XML or has no
    ``BrushLabels`` tag.

    Parsed with the standard library: expat (2.4.1 and newer) refuses entity expansion bombs, and
    ElementTree never fetches external entities, so a config from the network cannot reach a file
    or a URL.
    """
    if config is None or not config.strip():
        return BrushTarget()
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as exc:
        raise ItaclipError(f"the labelling config is not valid XML ({exc})") from None
    tags = list(root.iter())
    for tag in tags:
        if tag.tag.lower() != "brushlabels" or "name" not in tag.attrib or "toName" not in tag.attrib:
            continue
        to_name = tag.attrib["toName"].split(",")[0].strip()
        value = next((t.attrib.get("value", "") for t in tags if t.attrib.get("name") == to_name
                      and "toName" not in t.attrib), "")
        labels = tuple(label.attrib.get("alias") or label.attrib.get("value") or "" for label in tag.iter()
                       if label.tag == "Label")
        for label in labels:
            if len(label) > MAX_LABEL_CHARS:
                raise ItaclipError(f"label {label[:40]!r}... is longer than {MAX_LABEL_CHARS} characters")
        return BrushTarget(tag.attrib["name"], to_name, value.lstrip("$") or to_name,
                           tuple(label for label in labels if label.strip()) or None)
    raise ItaclipError("the labelling config has no BrushLabels tag (with name and toName): itaclip predicts "
                       "brush masks")


def vocabulary_for_labels(base: Vocabulary, labels: Optional[Sequence[str]]) -> tuple[Vocabulary, list[str], list[int]]:
    """The vocabulary for a config's labels, the label of each class, and the classes to report.

    A label equal (ignoring case) to a class's first name takes that class's names; a new label is
    a class named by itself; a label repeated in another case is dropped. The background set of ``base`` stays
    class 0 (the model needs it for
    the pixels no label covers) and is reported only when ``background`` is a label. Auxiliary
    texts are kept when every class has one.
    """
    if labels is None:
        return base, base.names, list(range(base.num_classes))
    first = int(base.has_background)
    known = {names[0].casefold(): c for c, names in enumerate(base.classes) if c >= first}
    classes, names, aux, report = list(base.classes[:first]), list(base.names[:first]), [], []
    seen = set()
    for label in (label.strip() for label in labels):
        if not label or label.casefold() in seen:  # one class per label, whatever its case
            continue
        seen.add(label.casefold())
        if base.has_background and label.casefold() == BACKGROUND_LABEL:
            names[0] = label
            report.append(0)
            continue
        c = known.get(label.casefold())
        classes.append(base.classes[c] if c is not None else (label,))
        aux.append(base.aux_texts[c - first] if c is not None and base.aux_texts else None)
        names.append(label)
        report.append(len(classes) - 1)
    vocab = Vocabulary(tuple(classes), base.has_background, tuple(aux) if aux and None not in aux else None)
    check_vocabulary(vocab)
    return vocab, names, report


def new_labels(base: Vocabulary, labels: Optional[Sequence[str]]) -> set[str]:
    """The labels that :func:`vocabulary_for_labels` turns into classes of their own: texts the
    class file does not have, which cost an encoding and a text-cache entry each (so ``Tree`` and
    ``tree`` are two)."""
    if labels is None:
        return set()
    first = int(base.has_background)
    known = {names[0].casefold() for names in base.classes[first:]}
    if base.has_background:
        known.add(BACKGROUND_LABEL)
    return {label.strip() for label in labels if label.strip() and label.strip().casefold() not in known}


#: Default bounds of one image download.
DEFAULT_MAX_IMAGE_BYTES = 50 << 20
DEFAULT_TIMEOUT_S = 30.0
FETCH_FAILED = "could not fetch the task's image (the backend's log says why)"


class ImageFetcher:
    """Where task images may come from, and the bounds of each download.

    Args:
        label_studio_url: Label Studio's address as the backend reaches it (the operator's
            ``LABEL_STUDIO_URL``): ``/data/upload/…`` and ``/data/local-files/?d=…`` paths are
            fetched from it, and it is the only place ``api_key`` is ever sent to.
        api_key: a Label Studio access token (``LABEL_STUDIO_API_KEY``), sent as
            ``Authorization: Token …`` to ``label_studio_url``'s scheme, host and port only, and
            never after a redirect.
        allow_hosts: the hosts whose http(s) URLs may be fetched besides Label Studio's: ``HOST``
            (its scheme's default port), ``HOST:PORT``, or ``*`` for any host. Redirects are
            followed only to allowed hosts.
        max_bytes, timeout: the size and the total time of one download.
        max_pixels: the pixel limit, checked on the image's header before decoding (default
            ``$ITACLIP_MAX_PIXELS`` or 100 megapixels).
        document_root: Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``: local-files paths are read
            from there when the file exists inside it (the backend runs beside Label Studio).

    A failed download is reported to the client with one message whatever happened (a refused
    connection, a 404, a timeout or a file that is not an image read alike, so a client cannot map
    the network through the backend); the reason goes to the operator's log.
    """

    def __init__(self, label_studio_url: str = "", api_key: str = "", allow_hosts: Sequence[str] = (), *,
                 max_bytes: int = DEFAULT_MAX_IMAGE_BYTES, timeout: float = DEFAULT_TIMEOUT_S,
                 max_pixels: Optional[int] = None, document_root: Optional[str] = None):
        self.label_studio_url = label_studio_url.strip().rstrip("/")
        self.api_key = api_key
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_pixels = max_pixels
        self.document_root = document_root or None
        self.any_host = False
        self.allowed: set[tuple[str, Optional[int]]] = set()
        self._origin = None
        if self.label_studio_url:
            self._origin = _origin(self.label_studio_url)
            if self._origin is None:
                raise ItaclipError(f"LABEL_STUDIO_URL must be Label Studio's http(s) address, such as "
                                   f"http://localhost:8080, got {label_studio_url!r}")
            self.allowed.add((self._origin[1], self._origin[2]))
        for entry in allow_hosts:
            entry = entry.strip()
            if entry == "*":
                self.any_host = True
                continue
            try:
                parts = urllib.parse.urlsplit("//" + entry)
                host, port = parts.hostname, parts.port
            except ValueError:
                host = None
            if not host or parts.path or parts.query or parts.username:
                raise ItaclipError(f"--allow-hosts takes HOST or HOST:PORT (or *), got {entry!r}")
            self.allowed.add((host, port))

    @classmethod
    def from_environment(cls, allow_hosts: Sequence[str] = (), **bounds) -> "ImageFetcher":
        """Label Studio's address, token and document root from the operator's environment
        (``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``, or the older ``LABEL_STUDIO_HOST`` /
        ``LABEL_STUDIO_ACCESS_TOKEN``; ``LOCAL_FILES_DOCUMENT_ROOT``)."""
        env = os.environ.get
        return cls(env("LABEL_STUDIO_URL", "") or env("LABEL_STUDIO_HOST", ""),
                   env("LABEL_STUDIO_API_KEY", "") or env("LABEL_STUDIO_ACCESS_TOKEN", ""), allow_hosts,
                   document_root=env("LOCAL_FILES_DOCUMENT_ROOT"), **bounds)

    def describe(self) -> str:
        """Where images may come from, in words (for the operator's log)."""
        if self.label_studio_url:
            parts = [f"Label Studio at {self.label_studio_url}"]
            others = self.allowed - {self._origin[1:]}
        else:
            parts = ["no Label Studio (LABEL_STUDIO_URL is not set: /data/ paths cannot be fetched)"]
            others = self.allowed
        if self.any_host:
            return ", ".join(parts + ["any host"])
        return ", ".join(parts + sorted(f"{host}:{port}" if port else host for host, port in others))

    def is_allowed(self, url: str) -> bool:
        """Whether ``url`` is http(s) on Label Studio's host and port or an allowed host."""
        origin = _origin(url)
        if origin is None:
            return False
        scheme, host, port = origin
        default = 443 if scheme == "https" else 80
        return self.any_host or (host, port) in self.allowed or (port == default and (host, None) in self.allowed)

    def fetch(self, url: Any) -> np.ndarray:
        """A task's image as (H, W, 3) uint8 RGB: an http(s) URL on an allowed host, or Label
        Studio's ``/data/upload/…`` / ``/data/local-files/?d=…`` paths."""
        if not isinstance(url, str) or not url.strip():
            raise ItaclipError("the task has no image URL")
        url = url.strip()
        if url.startswith(("upload/", "/upload/")):
            url = "/data/" + url.lstrip("/")
        if url.startswith("/data/"):
            local = self._local_file(url)
            if local is not None:
                return self._decoded(url, lambda: read_image(local, self.max_pixels))
            if not self.label_studio_url:
                raise ItaclipError(f"cannot fetch {url}: the backend was started without LABEL_STUDIO_URL (Label "
                                   "Studio's address)")
            url = self.label_studio_url + url
        elif urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
            raise ItaclipError(f"cannot fetch {url[:200]!r}: give an http(s) URL or a Label Studio /data/upload/ or "
                               "/data/local-files/ path")
        if not self.is_allowed(url):
            # decided before any connection: saying so tells a client nothing about the network
            raise ItaclipError(f"cannot fetch {url[:200]}: its host is not one this backend may fetch from (the "
                               "operator's --allow-hosts)")
        token = {"Authorization": f"Token {self.api_key}"} if self.api_key and _origin(url) == self._origin else None
        try:
            data = download(url, max_bytes=self.max_bytes, timeout=self.timeout,
                            headers={"User-Agent": "itaclip-label-studio"}, private_headers=token,
                            allow_redirect=self.is_allowed)
        except DownloadError as exc:
            hint = " (check LABEL_STUDIO_API_KEY)" if token and exc.status in (401, 403) else ""
            logger.warning("cannot fetch %s: %s%s", url, exc.reason, hint)
            raise ItaclipError(FETCH_FAILED) from None

        def decode():
            check_pixels(data, self.max_pixels, url)
            return decode_image(data, url)

        return self._decoded(url, decode)

    @staticmethod
    def _decoded(url: str, decode) -> np.ndarray:
        try:
            return decode()
        except ItaclipError as exc:
            logger.warning("cannot use the image of %s: %s", url, exc)
            raise ItaclipError(FETCH_FAILED) from None

    def _local_file(self, url: str) -> Optional[Path]:
        """The file a ``/data/local-files/?d=…`` path names under the document root, if it is there
        (and inside that folder); else ``None``."""
        parts = urllib.parse.urlsplit(url)
        if not self.document_root or not parts.path.rstrip("/").endswith("/local-files"):
            return None
        relative = urllib.parse.parse_qs(parts.query).get("d", [""])[0]
        root_path = Path(self.document_root).resolve()
        path = (root_path / relative).resolve()
        if not path.is_relative_to(root_path) or not path.is_file():
            return None
        return path


def _origin(url: str) -> Optional[tuple[str, str, int]]:
    """(scheme, host, port) of an http(s) URL, host lower-case and port explicit; ``None`` otherwise."""
    try:
        parts = urllib.parse.urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return None
    if scheme not in ("http", "https") or not host:
        return None
    return scheme, host, port or (443 if scheme == "https" else 80)


class LabelStudioPredictor:
    """One segmenter serving Label Studio tasks; text features are reused between calls.

    Args:
        segmenter: a loaded :class:`itaclip.Segmenter` (its options are the segment options).
        vocabulary: the server's vocabulary (``--classes``): used as it is without a labelling
            config, and for the names, synonyms and texts of the config's labels.
        model_version: reported with every prediction.
        fetcher: where images come from (default: :meth:`ImageFetcher.from_environment`).
        max_new_labels: how many labels outside the class file the backend takes over its life
            (each costs a text encoding and a text-cache entry); a config past that is refused.
    """

    def __init__(self, segmenter, vocabulary: Vocabulary, model_version: str = "itaclip",
                 fetcher: Optional[ImageFetcher] = None, max_new_labels: int = 256):
        self.segmenter = segmenter
        self.vocabulary = vocabulary
        self.model_version = model_version
        self.fetcher = fetcher if fetcher is not None else ImageFetcher.from_environment()
        self.max_new_labels = max_new_labels
        self._new_labels: set[str] = set()
        self._budget = threading.Lock()  # guards _new_labels: /setup checks it while a prediction runs
        self._lock = threading.Lock()  # one segmenter: requests take turns
        segmenter.set_vocabulary(vocabulary)  # the first request should not wait for the text encoder

    def check(self, target: BrushTarget, *, take: bool = False) -> tuple[Vocabulary, list[str], list[int]]:
        """The vocabulary for ``target``'s labels (see :func:`vocabulary_for_labels`); raises
        :class:`ItaclipError` if it is not usable or would pass the new-label budget. ``take``:
        count its new labels against the budget."""
        chosen = vocabulary_for_labels(self.vocabulary, target.labels)
        with self._budget:
            extra = new_labels(self.vocabulary, target.labels) - self._new_labels
            if len(self._new_labels) + len(extra) > self.max_new_labels:
                raise ItaclipError(f"the labelling config has {len(extra)} labels new to this backend, which has "
                                   f"already taken {len(self._new_labels)} of its {self.max_new_labels} "
                                   "(--max-new-labels): add them to the class file and restart it")
            if take:
                self._new_labels |= extra
        return chosen

    def predict(self, tasks: Sequence[Any], target: BrushTarget = BrushTarget()) -> list[dict]:
        """One prediction per task, in order: ``{"result": [...], "score", "model_version"}``, or
        ``{"result": [], "error": message, ...}`` for a task that failed."""
        with self._lock:
            vocab, names, report = self.check(target, take=True)
            self.segmenter.set_vocabulary(vocab)
            logger.info("text features of %d classes: %s", vocab.num_classes, self.segmenter.text_source)
            return [self._predict_one(task, target, names, report) for task in tasks]

    def _predict_one(self, task: Any, target: BrushTarget, names: list[str], report: list[int]) -> dict:
        task_id = task.get("id") if isinstance(task, dict) else None
        try:
            data = task.get("data") if isinstance(task, dict) else None
            if not isinstance(data, dict) or target.value not in data:
                raise ItaclipError(f"the task has no data.{target.value} (the config's image field)")
            rgb = self.fetcher.fetch(data[target.value])
            result = self.segmenter.segment(rgb)
            return labelstudio_prediction(result.labels, names, str(data[target.value]), result.probs,
                                          target.from_name, target.to_name, self.model_version, classes=report)
        except Exception as exc:  # one task's failure is reported with it; the others go on
            message = (str(exc) if isinstance(exc, ItaclipError)
                       else "internal error (the backend's log has the details)")
            logger.error("task %r: %s", task_id, exc, exc_info=not isinstance(exc, ItaclipError))
            return {"result": [], "score": 0.0, "model_version": self.model_version, "error": message}
