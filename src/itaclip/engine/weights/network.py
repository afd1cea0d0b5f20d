"""Whether a download can happen at all, decided once per host and process by a short probe.

Without a network, huggingface_hub retries every request for about 25 s (printing each attempt)
before it falls back to its cache, and urllib may wait for a DNS or TCP timeout; asking three
files of a repository then takes over a minute. The loaders ask :func:`reachable` first and, when
the host cannot be reached, go straight to their caches (files already there load at once) or
say in one line what to do. ``HF_HUB_OFFLINE=1`` skips the probe for the Hugging Face Hub.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request
from typing import Optional

from ..errors import ItaclipError

#: How long a probe waits for the name lookup and the TCP connection together.
PROBE_SECONDS = 3.0

_probed: dict[tuple[str, int], bool] = {}
_lock = threading.Lock()


def _endpoint(url: str) -> Optional[tuple[str, int]]:
    """The (host, port) a request for ``url`` connects to: its proxy's when one is configured
    (``https_proxy`` and the like, as urllib and huggingface_hub read them), else its own."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return None
    scheme = parts.scheme or "https"
    proxy = urllib.request.getproxies().get(scheme) or urllib.request.getproxies().get("all")
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxied.hostname:
            return proxied.hostname, proxied.port or (443 if proxied.scheme == "https" else 80)
    return parts.hostname, parts.port or (443 if scheme == "https" else 80)


def _connects(host: str, port: int, seconds: float) -> bool:
    """A TCP connection opens within ``seconds``, name lookup included (``getaddrinfo`` has no
    timeout of its own, so the attempt runs in a daemon thread that is abandoned if it hangs)."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=seconds):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, name="itaclip-network-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(result and result[0])


def reachable(url: str) -> bool:
    """Whether ``url``'s host (or its proxy) accepts a connection; probed once per process."""
    endpoint = _endpoint(url)
    if endpoint is None:
        return False
    with _lock:
        if endpoint not in _probed:
            _probed[endpoint] = _connects(*endpoint, PROBE_SECONDS)
        return _probed[endpoint]


def hub_endpoint() -> str:
    """The Hugging Face Hub's address (``HF_ENDPOINT`` or huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_offline() -> bool:
    """No Hub requests should be made: ``HF_HUB_OFFLINE=1``, or the Hub cannot be reached."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or not reachable(constants.ENDPOINT)


def cannot_download(what: str, url: str, cache: str, local_form: str, hub: bool = False) -> ItaclipError:
    """The one-line refusal when ``what`` is not cached and cannot be downloaded from ``url`` (the
    Hugging Face Hub when ``hub``): where the cache is, and the two ways on (connect once, or pass a
    local copy)."""
    if hub:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return ItaclipError(f"cannot load {what}: HF_HUB_OFFLINE=1 is set and the Hugging Face cache ({cache}) "
                                f"has no copy; unset it and connect once to download it, or pass a local copy: "
                                f"--weights {local_form}")
    host = urllib.parse.urlsplit(url).hostname or url
    later = " (then HF_HUB_OFFLINE=1 uses the cache without trying the network)" if hub else ""
    return ItaclipError(f"cannot download {what}: {host} cannot be reached and the cache ({cache}) has no copy; "
                        f"connect once to download it{later}, or pass a local copy: --weights {local_form}")
