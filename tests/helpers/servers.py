"""Local HTTP servers for the tests (tests never touch the network): one way to start and stop
one, and a file server for download tests."""

from __future__ import annotations

import http.server
import threading

from itaclip.engine.vocabulary import builtin_path


def start_local_server(handler, server_class=http.server.ThreadingHTTPServer, poll_interval: float = 0.5):
    """``handler`` served on 127.0.0.1 at a free port (``server.server_address[1]``) from a daemon
    thread, each request in a daemon thread of its own; :func:`stop_server` ends it."""
    server = server_class(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True).start()
    return server


def local_url(server, path: str = "") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def stop_server(server) -> None:
    server.shutdown()
    server.server_close()


class FileServer:
    """A plain HTTP server on 127.0.0.1 serving ``files`` (name → bytes) and counting requests."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                data = server.files.get(self.path.rsplit("/", 1)[-1])
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = start_local_server(Handler)
        self.url = local_url(self.httpd, "/mirror")

    def close(self):
        stop_server(self.httpd)

def paper_like_texts() -> bytes:
    """A stand-in for the authors' voc21 file: our file's class names with other texts."""
    lines = builtin_path("texts", "voc21_definitions").read_text(encoding="utf-8").splitlines()
    return "".join(f"{line.split('>=')[0]}>=LLaMA says {i}: {line.split('>=')[0].strip()}\n"
                   for i, line in enumerate(lines) if line.strip()).encode()
