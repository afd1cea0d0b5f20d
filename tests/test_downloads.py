"""itaclip.engine.downloads: what the bounded download refuses (the authors' texts and the Label Studio
backend's tests cover truncation, size, deadline, redirects and credentials through their users)."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

import pytest

from helpers.servers import local_url, start_local_server, stop_server
from itaclip.engine.downloads import DownloadError, download


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/huge":  # claims 10 GB, then waits: only the header can refuse it in time
            self.send_response(200)
            self.send_header("Content-Length", str(10 << 30))
            self.end_headers()
            time.sleep(5)
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = start_local_server(Handler)
    yield local_url(httpd)
    stop_server(httpd)


@pytest.mark.timeout(60)
def test_only_http_is_fetched_and_sizes_are_refused_from_the_header(server):
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "data:,secret"):
        with pytest.raises(DownloadError, match="not an http"):
            download(url, max_bytes=100, timeout=5)
    with pytest.raises(DownloadError, match="file:///etc/passwd.* is not allowed"):
        download(server + "/to-file", max_bytes=100, timeout=5)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=f"{10 << 30} bytes, more than the limit of 1000"):
        download(server + "/huge", max_bytes=1000, timeout=5)
    assert time.monotonic() - start < 2
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download(server + "/missing", max_bytes=1000, timeout=5)
    assert info.value.status == 404
