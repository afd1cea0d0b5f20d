"""On-disk cache of computed tensors (text features), keyed by a digest of what produced them.

Encoding a vocabulary (every name × 80 templates, plus auxiliary texts) takes minutes on a CPU for
large vocabularies; the result depends only on the text encoder's weights, the texts, the templates
and the code that combines them. :class:`FeatureCache` stores such a tensor under a key made from
exactly those parts, so the second run with the same vocabulary loads it in milliseconds::

    cache = FeatureCache()                        # ($ITACLIP_CACHE or ~/.cache/itaclip)/text
    key = cache.key(model=fingerprint, texts=texts, templates=templates, version=3)
    features = cache.get_or_compute(key, lambda: encode(texts))

Entry format (one file ``<key>.pt`` per entry; in the subfolder ``<key[:2]>/`` when sharded)::

    magic (12 bytes) | payload length (8 bytes, little endian) | SHA-256 of payload (32 bytes) | payload

where the payload is the tensor's raw bytes after a JSON ``{"dtype", "shape"}`` (magic
``ITACLIP-FR1``; float and integer dtypes), or ``torch.save`` of the tensor (magic ``ITACLIP-FC1``;
any other dtype). A file that is truncated, has a wrong checksum
or does not hold a tensor is never trusted: it is recomputed and overwritten. Files are written to a
temporary name in the same directory and moved into place with :func:`os.replace`, so concurrent
writers (several processes of a ``torchrun`` job) and readers only ever see complete entries; when
two processes compute the same entry at once both results are identical and the last rename wins.
An unusable cache directory (read-only, not a directory) only disables caching, with one warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import warnings
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from .files import atomic_write_bytes

__all__ = ["FeatureCache", "cache_root", "default_cache_dir"]

_MAGIC = b"ITACLIP-FC1\n"  # 12 bytes; change the digit when the layout changes
_MAGIC_RAW = b"ITACLIP-FR1\n"  # the same layout with a raw payload (below)
_HEADER = struct.Struct("<Q32s")  # payload length, SHA-256 of the payload
_KEY_VERSION = 1  # part of every key: bump to invalidate all entries written by older layouts
_SUFFIX = ".pt"


def cache_root() -> Path:
    """itaclip's cache folder: ``$ITACLIP_CACHE`` if set, else ``~/.cache/itaclip`` (text features
    in ``text/``, the authors' auxiliary texts in ``authors-texts/``, generated region maps in
    ``regions/``)."""
    env = os.environ.get("ITACLIP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "itaclip"


def default_cache_dir() -> Path:
    """Where text features are cached: ``text/`` in :func:`cache_root`."""
    return cache_root() / "text"


class FeatureCache:
    """A directory of tensors addressed by :meth:`key` digests.

    Args:
        directory: where entries live; ``None`` → :func:`default_cache_dir`. Created on the first
            write. If it cannot be created or written, caching is disabled (one warning) and
            :meth:`get_or_compute` simply computes.
        sharded: entries in 256 subfolders named by the key's first two hex digits (for caches
            of many small entries).
        durable: flush each entry to the disk before it replaces the old one; without it a
            crash can leave a torn entry, which the checksum rejects (it is recomputed).
    """

    def __init__(self, directory: Union[str, os.PathLike, None] = None, *, sharded: bool = False,
                 durable: bool = True) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.sharded = sharded
        self.durable = durable
        self._write_warned = False

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.directory)!r})"

    # ------------------------------------------------------------------ keys
    def key(self, **parts) -> str:
        """A stable hex digest (SHA-256, 64 characters) of JSON-serialisable ``parts``.

        Keyword order does not matter; list order does. Tuples count as lists. Typical parts: the
        model fingerprint, the templates, the texts, the context length and a code version.

        Raises:
            TypeError: a part is not JSON-serialisable (e.g. a tensor: pass its digest instead).
        """
        try:
            blob = json.dumps(
                {"_key_version": _KEY_VERSION, **parts},
                sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
            )
        except (TypeError, ValueError) as exc:
            raise TypeError(f"FeatureCache.key: parts must be JSON-serialisable ({exc})") from None
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        """File of the entry ``key``."""
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"FeatureCache: malformed key {key!r} (use FeatureCache.key(...))")
        folder = self.directory / key[:2] if self.sharded else self.directory
        return folder / f"{key}{_SUFFIX}"

    # ------------------------------------------------------------------ access
    def get(self, key: str) -> Optional[torch.Tensor]:
        """The stored tensor (on the CPU), or ``None`` when absent, unreadable or corrupt."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return None
        tensor = _decode(data)
        if tensor is None:
            warnings.warn(f"itaclip: cache entry {path} is corrupt; recomputing it", stacklevel=3)
        return tensor

    def put(self, key: str, tensor: torch.Tensor) -> bool:
        """Store ``tensor`` (a CPU copy) atomically; ``False`` (and one warning) if the directory
        cannot be written."""
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"FeatureCache stores tensors, got {type(tensor).__name__}")
        try:
            atomic_write_bytes(self.path(key), _encode(tensor), durable=self.durable)
            return True
        except OSError as exc:
            if not self._write_warned:
                self._write_warned = True
                warnings.warn(
                    f"itaclip: cannot write the feature cache in {self.directory} ({exc.strerror or exc}); "
                    "continuing without caching (set ITACLIP_CACHE to a writable directory)",
                    stacklevel=3,
                )
            return False

    def get_or_compute(
        self,
        key: str,
        compute: Callable[[], torch.Tensor],
        *,
        device: Union[str, torch.device, None] = None,
    ) -> torch.Tensor:
        """The tensor stored under ``key``; on a miss (or a corrupt entry) ``compute()`` is called,
        its result stored and returned.

        Args:
            key: from :meth:`key`.
            compute: returns the tensor (any dtype, any device); called at most once.
            device: move the result there. ``None``: a hit is returned on the CPU, a miss as
                ``compute`` returned it.

        Returns:
            The tensor, bit-identical to what ``compute`` returned when it was stored.
        """
        tensor = self.get(key)
        if tensor is None:
            tensor = compute()
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"FeatureCache: compute() must return a tensor, got {type(tensor).__name__}")
            self.put(key, tensor)
        return tensor if device is None else tensor.to(device)


#: dtypes stored as their raw bytes (magic ``_MAGIC_RAW``): loading ``torch.save``'s zip archive
#: costs about a millisecond per entry, which adds up for caches of many small tensors.
_RAW_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.float64: "float64",
               torch.int64: "int64", torch.int32: "int32", torch.uint8: "uint8"}
_META = struct.Struct("<I")  # length of the JSON {"dtype", "shape"} that starts a raw payload


def _encode(tensor: torch.Tensor) -> bytes:
    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.dtype in _RAW_DTYPES:
        meta = json.dumps({"dtype": _RAW_DTYPES[tensor.dtype], "shape": list(tensor.shape)}).encode()
        magic, payload = _MAGIC_RAW, _META.pack(len(meta)) + meta + tensor.numpy().tobytes()
    else:
        buffer = io.BytesIO()
        torch.save(tensor.clone(), buffer)
        magic, payload = _MAGIC, buffer.getvalue()
    return magic + _HEADER.pack(len(payload), hashlib.sha256(payload).digest()) + payload


def _decode(data: bytes) -> Optional[torch.Tensor]:
    """The tensor in ``data``, or ``None`` if anything about the entry is wrong."""
    start = len(_MAGIC) + _HEADER.size
    if len(data) < start or not data.startswith((_MAGIC, _MAGIC_RAW)):
        return None
    length, digest = _HEADER.unpack_from(data, len(_MAGIC))
    payload = data[start:]
    if len(payload) != length or hashlib.sha256(payload).digest() != digest:
        return None
    try:
        if data.startswith(_MAGIC_RAW):
            return _decode_raw(payload)
        tensor = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception:  # a payload with a valid checksum but unloadable: treat as corrupt
        return None
    return tensor if isinstance(tensor, torch.Tensor) else None


def _decode_raw(payload: bytes) -> Optional[torch.Tensor]:
    (meta_length,) = _META.unpack_from(payload)
    meta = json.loads(payload[_META.size:_META.size + meta_length])
    dtype = next(d for d, name in _RAW_DTYPES.items() if name == meta["dtype"])
    shape = [int(n) for n in meta["shape"]]
    array = np.frombuffer(payload, dtype=meta["dtype"], offset=_META.size + meta_length)
    if array.size != int(np.prod(shape)):
        return None
    return torch.from_numpy(array.reshape(shape).copy()).to(dtype)
