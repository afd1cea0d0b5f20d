"""Label Studio pre-annotation: tasks in, one ``brushlabels`` result per class present out.

:class:`LabelStudioPredictor` is what the ML backend (:mod:`itaclip.integrations.label_studio_server`)
calls for each ``/predict`` request; it needs no web framework, so it is usable (and tested) alone:

* the vocabulary follows the project's labelling config when it has ``BrushLabels``: each label
  that is the first name of a class of the server's vocabulary gets that class (all its names,
  its auxiliary text); any other label becomes a class of its own; a background set (class 0) is
  kept and reported only if the config has a ``background`` label;
* the results are Label Studio brush RLE of exactly the label map ``itaclip segment`` writes for
  the same image, vocabulary and options;
* images come from http(s) URLs or Label Studio's ``/data/upload/…`` and
  ``/data/local-files/?d=…`` paths (``LABEL_STUDIO_URL`` + ``LABEL_STUDIO_API_KEY``); a task whose
  image cannot be fetched or read gets an empty result with an ``error``, the others are kept.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..engine.errors import ItaclipError
from ..engine.images import decode_image
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


def brush_target(parsed_config: dict[str, Any]) -> BrushTarget:
    """The first ``BrushLabels`` tag of a labelling config parsed by Label Studio's
    ``parse_config`` (``{name: {"type", "to_name", "inputs", "labels"}}``); defaults without one."""
    for from_name, tag in (parsed_config or {}).items():
        if tag.get("type", "").lower() != "brushlabels":
            continue
        inputs = tag.get("inputs") or [{}]
        to_name = (tag.get("to_name") or ["image"])[0]
        return BrushTarget(from_name, to_name, inputs[0].get("value", to_name),
                           tuple(tag.get("labels") or ()) or None)
    return BrushTarget()


def vocabulary_for_labels(base: Vocabulary, labels: Optional[Sequence[str]]) -> tuple[Vocabulary, list[str], list[int]]:
    """The vocabulary for a config's labels, the label of each class, and the classes to report.

    A label equal (ignoring case) to a class's first name takes that class's names; a new label is
    a class named by itself; a label repeated in another case is dropped. The background set of ``base`` stays class 0 (the model needs it for
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


def fetch_image(url: str, *, hostname: str = "", access_token: str = "", timeout: float = 30.0) -> np.ndarray:
    """A task's image as (H, W, 3) uint8 RGB.

    ``url``: http(s), or Label Studio's ``/data/upload/…`` / ``/data/local-files/?d=…`` paths, which
    are read from ``LOCAL_FILES_DOCUMENT_ROOT`` when the file is there (Label Studio's own setting;
    the backend runs beside Label Studio) and otherwise fetched from ``hostname`` (default
    ``LABEL_STUDIO_URL``) with ``Authorization: Token <access_token>`` (default
    ``LABEL_STUDIO_API_KEY``). Hand-written rather than Label Studio's ``get_local_path``: that one
    has no timeout (one dead host blocks the backend) and copies every image into a cache folder
    for good.
    """
    hostname = hostname or os.environ.get("LABEL_STUDIO_URL", "") or os.environ.get("LABEL_STUDIO_HOST", "")
    access_token = (access_token or os.environ.get("LABEL_STUDIO_API_KEY", "")
                    or os.environ.get("LABEL_STUDIO_ACCESS_TOKEN", ""))
    if not isinstance(url, str) or not url.strip():
        raise ItaclipError("the task has no image URL")
    if url.startswith(("upload/", "/upload/")):
        url = "/data/" + url.lstrip("/")
    if url.startswith("/data/"):
        local = _local_storage_file(url)
        if local is not None:
            return decode_image(local.read_bytes(), str(local))
        if not hostname:
            raise ItaclipError(f"cannot fetch {url}: set LABEL_STUDIO_URL to Label Studio's address "
                               "(and LABEL_STUDIO_API_KEY to an access token)")
        url = hostname.rstrip("/") + url
    elif urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ItaclipError(f"cannot fetch {url!r}: give an http(s) URL or a Label Studio /data/upload/ or "
                           "/data/local-files/ path")
    request = urllib.request.Request(url, headers={"User-Agent": "itaclip-label-studio"})
    if access_token and hostname and urllib.parse.urlsplit(url).netloc == urllib.parse.urlsplit(hostname).netloc:
        request.add_header("Authorization", f"Token {access_token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()
    except urllib.error.HTTPError as exc:
        hint = " (check LABEL_STUDIO_API_KEY)" if exc.code in (401, 403) else ""
        raise ItaclipError(f"cannot fetch {url}: HTTP {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ItaclipError(f"cannot fetch {url}: {getattr(exc, 'reason', None) or exc}") from None
    return decode_image(data, url)


def _local_storage_file(url: str) -> Optional[Path]:
    """The file a ``/data/local-files/?d=…`` path names under ``LOCAL_FILES_DOCUMENT_ROOT``, if it is
    there (and inside that folder); else ``None``."""
    root = os.environ.get("LOCAL_FILES_DOCUMENT_ROOT")
    parts = urllib.parse.urlsplit(url)
    if not root or not parts.path.rstrip("/").endswith("/local-files"):
        return None
    relative = urllib.parse.parse_qs(parts.query).get("d", [""])[0]
    root_path = Path(root).resolve()
    path = (root_path / relative).resolve()
    if not path.is_relative_to(root_path) or not path.is_file():
        return None
    return path


class LabelStudioPredictor:
    """One segmenter serving Label Studio tasks; text features are reused between calls.

    Args:
        segmenter: a loaded :class:`itaclip.Segmenter` (its options are the segment options).
        vocabulary: the server's vocabulary (``--classes``): used as it is without a labelling
            config, and for the names, synonyms and texts of the config's labels.
        model_version: reported with every prediction.
        timeout: seconds to fetch one image.
    """

    def __init__(self, segmenter, vocabulary: Vocabulary, model_version: str = "itaclip", timeout: float = 30.0):
        self.segmenter = segmenter
        self.vocabulary = vocabulary
        self.model_version = model_version
        self.timeout = timeout
        self._lock = threading.Lock()  # one segmenter: requests take turns
        segmenter.set_vocabulary(vocabulary)  # the first request should not wait for the text encoder

    def predict(self, tasks: Sequence[dict], target: BrushTarget = BrushTarget(), *, hostname: str = "",
                access_token: str = "") -> list[dict]:
        """One prediction per task, in order: ``{"result": [...], "score", "model_version"}``, or
        ``{"result": [], "error": message, ...}`` for a task whose image failed."""
        vocab, names, report = vocabulary_for_labels(self.vocabulary, target.labels)
        with self._lock:
            self.segmenter.set_vocabulary(vocab)
            logger.info("text features of %d classes: %s", vocab.num_classes, self.segmenter.text_source)
            return [self._predict_one(task, target, names, report, hostname, access_token) for task in tasks]

    def _predict_one(self, task: dict, target: BrushTarget, names: list[str], report: list[int], hostname: str,
                     access_token: str) -> dict:
        task_id = task.get("id") if isinstance(task, dict) else None
        try:
            data = task.get("data") if isinstance(task, dict) else None
            if not isinstance(data, dict) or target.value not in data:
                raise ItaclipError(f"the task has no data.{target.value} (the config's image field)")
            rgb = fetch_image(data[target.value], hostname=hostname, access_token=access_token,
                              timeout=self.timeout)
            result = self.segmenter.segment(rgb)
            return labelstudio_prediction(result.labels, names, str(data[target.value]), result.probs,
                                          target.from_name, target.to_name, self.model_version, classes=report)
        except Exception as exc:  # one task's failure is reported with it; the others go on
            message = str(exc) if isinstance(exc, ItaclipError) else f"{type(exc).__name__}: {exc}"
            logger.error("task %s: %s", task_id, message, exc_info=not isinstance(exc, ItaclipError))
            return {"result": [], "score": 0.0, "model_version": self.model_version, "error": message}
