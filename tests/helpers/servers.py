"""A local HTTP file server for download tests (tests never touch the network)."""

from __future__ import annotations

import http.server
import threading

from itaclip.engine.vocabulary import builtin_path


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

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

def paper_like_texts() -> bytes:
    """A stand-in for the authors' voc21 file: our file's class names with other texts."""
    lines = builtin_path("texts", "voc21_definitions").read_text(encoding="utf-8").splitlines()
    return "".join(f"{line.split('>=')[0]}>=LLaMA says {i}: {line.split('>=')[0].strip()}\n"
                   for i, line in enumerate(lines) if line.strip()).encode()
