"""Bounded HTTP(S) downloads: a size cap, one deadline for the whole download, redirects only where allowed.

Used for the authors' texts (:mod:`itaclip.auxtexts.authors`) and the Label Studio backend's task
images (:mod:`itaclip.integrations.label_studio`), both of which read a URL they do not control.

urllib does the HTTP (proxies from the environment, TLS with the system's certificates). What it
lacks is added here by hand, because no maintained client bounds the *total* time of a download:
urllib, urllib3, requests and httpx all bound each socket operation, so a server that sends one
byte per timeout holds the caller for as long as it likes. Here a timer shuts the connection's
socket down when the deadline passes, whatever the download is doing then (connecting, the TLS
handshake, the headers or the body). The size is checked against ``Content-Length`` first and
then counted as the bytes arrive, so an oversized body is never held in memory.
"""

from __future__ import annotations

import functools
import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Optional

from .errors import ItaclipError

CHUNK_BYTES = 1 << 16
MAX_REDIRECTS = 5


class DownloadError(ItaclipError):
    """A download that failed: ``reason`` says why in a few words (for logs), ``status`` is the HTTP
    status when the server answered with an error."""

    def __init__(self, url: str, reason: str, status: Optional[int] = None):
        super().__init__(f"cannot download {url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


class _Deadline:
    """The sockets of one download, and a timer that shuts them down at the deadline."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.expired = False
        self._connections: list[http.client.HTTPConnection] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.001, self.end - time.monotonic())

    def connecting(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)

    def connected(self, sock: socket.socket) -> None:
        """Keep the socket: urllib drops the connection's reference to it once the headers are read."""
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            # connection.sock is set as soon as the TCP connection exists (before TLS); the kept
            # sockets cover the body, read after urllib let go of the connection
            for sock in [c.sock for c in self._connections] + self._sockets:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: Optional[socket.socket]) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv or send at once
        except OSError:
            pass


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, deadline: _Deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self):
        self.timeout = self._deadline.remaining()  # a connection attempt never outlives the deadline
        self._deadline.connecting(self)
        super().connect()
        self._deadline.connected(self.sock)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, deadline: _Deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self):
        self.timeout = self._deadline.remaining()
        self._deadline.connecting(self)
        super().connect()
        self._deadline.connected(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(functools.partial(_HTTPConnection, deadline=self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        self._tls = ssl.create_default_context()
        super().__init__(context=self._tls)
        self._deadline = deadline

    def https_open(self, req):
        return self.do_open(functools.partial(_HTTPSConnection, deadline=self._deadline), req, context=self._tls)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL ``allow`` accepts (every redirect when ``allow`` is None).
    Headers added as unredirected (a token) are never sent to the new URL: urllib copies only the
    ordinary ones."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, allow: Optional[Callable[[str], bool]]):
        super().__init__()
        self._allow = allow

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not _is_http(newurl) or (self._allow is not None and not self._allow(newurl)):
            fp.close()
            raise DownloadError(req.full_url, f"redirected to {newurl}, which is not allowed", code)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _is_http(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme.lower() in ("http", "https")


def download(url: str, *, max_bytes: int, timeout: float, headers: Optional[dict[str, str]] = None,
             private_headers: Optional[dict[str, str]] = None,
             allow_redirect: Optional[Callable[[str], bool]] = None) -> bytes:
    """The body of ``GET url``, at most ``max_bytes`` long, all of it within ``timeout`` seconds.

    ``private_headers`` (credentials) go to ``url`` only, never to a URL it redirects to;
    ``allow_redirect(new_url)`` decides whether a redirect is followed (default: any, at most
    :data:`MAX_REDIRECTS`). Raises :class:`DownloadError` for every failure. Only http(s) URLs
    are fetched (urllib would also read ``file:`` and ``ftp:`` ones), redirects included.
    """
    if not _is_http(url):
        raise DownloadError(url, "not an http(s) URL")
    request = urllib.request.Request(url, headers=dict(headers or {}))
    for name, value in (private_headers or {}).items():
        request.add_unredirected_header(name, value)
    deadline = _Deadline(timeout)
    opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline),
                                         _RedirectHandler(allow_redirect))
    late = f"no complete answer within {timeout:g} s"
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
                raise DownloadError(url, f"{int(declared)} bytes, more than the limit of {max_bytes}")
            parts, size = [], 0
            while True:
                chunk = response.read(CHUNK_BYTES)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(url, f"more than the limit of {max_bytes} bytes")
                parts.append(chunk)
            if deadline.expired:  # the socket was shut down: what arrived is a cut-off body
                raise DownloadError(url, late)
            if declared is not None and declared.strip().isdigit() and size != int(declared):
                raise DownloadError(url, f"the connection closed after {size} of {int(declared)} bytes")
            return b"".join(parts)
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DownloadError(url, f"HTTP {exc.code} {exc.reason}", exc.code) from None
    except http.client.IncompleteRead as exc:
        raise DownloadError(url, late if deadline.expired else
                            f"the connection closed after {len(exc.partial)} bytes, before the end") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        if deadline.expired:
            raise DownloadError(url, late) from None
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise DownloadError(url, late) from None
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise DownloadError(url, text or type(reason).__name__) from None
    finally:
        deadline.cancel()
