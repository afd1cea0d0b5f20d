"""Text features per text, kept in memory and on disk, so a vocabulary costs only its new texts.

Labelling projects add and rename classes all the time, and the demo and the Label Studio backend
see a new vocabulary per request. A text's template-ensembled feature depends only on the text,
the text tower's weights, the templates, the context length and the code version, not on the
other texts of the vocabulary; so each text is stored on its own and a vocabulary with one new
class encodes that class's prompts only. The texts still missing are encoded in one batch (sorted
by token length, as before), so the first encoding of a whole vocabulary is not slower; the rows
equal a one-text-at-a-time encoding within float rounding (tests/test_text_store.py).

Disk layout: one checksummed :class:`~itaclip.engine.feature_cache.FeatureCache` entry per text under
``<cache>/texts/<2 hex digits>/<key>.pt`` (256 shards keep folders small for tens of thousands
of texts).
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Optional, Sequence, Union

import torch

#: ``encode(texts, progress)`` → (len(texts), E) features of ``texts``.
Encoder = Callable[[list[str], Optional[Callable[[int, int], None]]], torch.Tensor]


class TextFeatureStore:
    """Per-text features of one text tower with fixed templates.

    Args:
        encode: encodes a list of texts in one batch (template ensembling included).
        identity: returns the JSON-serialisable parts that, with a text, determine its feature
            (text-tower fingerprint, templates, context length, version); called once, on the
            first disk access, because a fingerprint costs a pass over the weights.
        disk: ``True`` (the default cache folder), a folder, or ``False`` (memory only).
    """

    def __init__(self, encode: Encoder, identity: Callable[[], dict], disk: Union[bool, str, os.PathLike] = True):
        self._encode = encode
        self._identity = identity
        self._disk = disk
        self._cache = None
        self._identity_key: Optional[str] = None
        self._memory: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()
        self.last_source = "not encoded yet"
        """How the last :meth:`features` call was served (memory / disk / encoded): for logs."""

    def features(self, texts: Sequence[str], progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
        """(len(texts), E) CPU features of ``texts`` in order; only texts never seen are encoded."""
        texts = list(texts)
        if not texts:
            raise ValueError("TextFeatureStore.features: no texts")
        unique = list(dict.fromkeys(texts))
        with self._lock:
            missing = [t for t in unique if t not in self._memory]
            from_disk = self._read_disk(missing)
            to_encode = [t for t in missing if t not in from_disk]
            self._memory.update(from_disk)
            if to_encode:
                encoded = self._encode(to_encode, progress).detach().float().cpu()
                fresh = dict(zip(to_encode, encoded))
                self._memory.update(fresh)
                self._write_disk(fresh)
            self.last_source = self._describe(len(unique), len(unique) - len(missing), len(from_disk), len(to_encode))
            return torch.stack([self._memory[t] for t in texts])

    # ------------------------------------------------------------------ disk
    def _disk_cache(self):
        if self._disk is False:
            return None
        if self._cache is None:
            from .feature_cache import FeatureCache, default_cache_dir

            base = default_cache_dir() if self._disk is True else self._disk
            # Entries are written without fsync: the checksum rejects one torn by a crash, and it
            # is recomputed; an fsync per text would slow the first encoding of a vocabulary.
            self._cache = FeatureCache(os.path.join(os.fspath(base), "texts"), sharded=True, durable=False)
            self._identity_key = self._cache.key(**self._identity())
        return self._cache

    def _key(self, text: str) -> str:
        return self._cache.key(identity=self._identity_key, text=text)

    def _read_disk(self, texts: list[str]) -> dict[str, torch.Tensor]:
        cache = self._disk_cache() if texts else None
        if cache is None:
            return {}
        found = {}
        for text in texts:
            row = cache.get(self._key(text))
            if row is not None and row.dim() == 1:
                found[text] = row.float()
        return found

    def _write_disk(self, rows: dict[str, torch.Tensor]) -> None:
        cache = self._disk_cache()
        if cache is None:
            return
        for text, row in rows.items():
            if not cache.put(self._key(text), row):
                return  # unwritable: FeatureCache warned once; do not retry every row

    def _describe(self, total: int, in_memory: int, from_disk: int, encoded: int) -> str:
        if in_memory == total:
            return f"{total} texts already in memory"
        parts = [f"{n} {what}" for n, what in ((in_memory, "already in memory"), (from_disk, "from the disk cache"),
                                                (encoded, "encoded")) if n]
        where = "disk cache off" if self._cache is None else f"cache in {self._cache.directory}"
        return f"{total} texts: {', '.join(parts)} ({where})"
