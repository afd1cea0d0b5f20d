"""The authors' auxiliary texts: fetched from a (local) server, checked, cached, refused when altered."""

from __future__ import annotations

import hashlib

import pytest

from helpers.servers import local_url, paper_like_texts, start_local_server, stop_server
from itaclip import ItaclipError
from itaclip.auxtexts import authors
from itaclip.engine.vocabulary import resolve_vocabulary


def _expected_texts() -> list[str]:
    return [line.split(">=", 1)[1] for line in paper_like_texts().decode().splitlines()]


def test_good_file_is_fetched_once_and_cached(mirror, tmp_path):
    vocab = resolve_vocabulary("voc21", aux_texts="authors")
    assert list(vocab.aux_texts) == _expected_texts()
    cached = tmp_path / "cache" / "authors-texts" / "voc21_definitions.txt"
    assert cached.read_bytes() == mirror.files["voc21_definitions.txt"]
    assert mirror.requests == ["/mirror/voc21_definitions.txt"]
    assert resolve_vocabulary(None, preset="voc21", aux_texts="authors").aux_texts == vocab.aux_texts
    assert len(mirror.requests) == 1  # the second use reads the cache


def test_tampered_file_is_refused_and_nothing_written(mirror, tmp_path):
    mirror.files["voc21_definitions.txt"] = mirror.files["voc21_definitions.txt"].replace(b"LLaMA", b"EVIL!")
    with pytest.raises(ItaclipError, match="SHA-256 .* not the authors'.*nothing written") as info:
        resolve_vocabulary("voc21", aux_texts="authors")
    message = str(info.value)
    assert "\n" not in message
    assert hashlib.sha256(mirror.files["voc21_definitions.txt"]).hexdigest() in message
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*"))


def test_offline_with_cache_works_and_a_damaged_copy_is_fetched_again(mirror, monkeypatch, tmp_path):
    first = resolve_vocabulary("voc21", aux_texts="authors")
    mirror.close()  # offline from here on
    monkeypatch.setenv(authors.URL_ENV, "http://127.0.0.1:9/unreachable")
    assert resolve_vocabulary("voc21", aux_texts="authors").aux_texts == first.aux_texts
    cached = tmp_path / "cache" / "authors-texts" / "voc21_definitions.txt"
    cached.write_bytes(cached.read_bytes() + b"x")  # a damaged copy is never used
    with pytest.raises(ItaclipError, match="cannot download the authors' voc21_definitions.txt"):
        resolve_vocabulary("voc21", aux_texts="authors")


def test_offline_without_cache_is_one_line(mirror, monkeypatch):
    monkeypatch.setenv(authors.URL_ENV, "http://127.0.0.1:9/unreachable")
    with pytest.raises(ItaclipError, match="cannot download .* not cached in .*--aux-texts FILE") as info:
        resolve_vocabulary("voc21", aux_texts="authors")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("classes, preset", [(None, "voc20"), ("ade20k", None), ("cat, dog", "voc21"),
                                             (None, "context59")])
def test_lists_without_authors_texts_are_refused(mirror, classes, preset):
    with pytest.raises(ItaclipError, match="exist for the presets voc21, context60, coco_object, coco_stuff, "
                                           "cityscapes only") as info:
        resolve_vocabulary(classes, preset=preset, aux_texts="authors")
    assert "\n" not in str(info.value)
    assert mirror.requests == []


def test_cli_checksum_error_is_the_last_line(mirror, tiny_ckpt, tmp_path, capsys):
    from PIL import Image

    from helpers.images import make_smooth_image
    from itaclip.cli import main

    Image.fromarray(make_smooth_image(40, 48)).save(tmp_path / "photo.png")
    common = ["segment", str(tmp_path / "photo.png"), "--preset", "voc21", "--aux-texts", "authors",
              "--weights", str(tiny_ckpt), "--device", "cpu", "--stride", "112", "--pamr-steps", "0"]
    assert main(common + ["--out", str(tmp_path / "good")]) == 0
    assert (tmp_path / "good" / "photo.png").is_file()
    capsys.readouterr()

    (tmp_path / "cache" / "authors-texts" / "voc21_definitions.txt").unlink()
    mirror.files["voc21_definitions.txt"] += b"extra\n"
    assert main(common + ["--out", str(tmp_path / "bad")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("itaclip segment: error: ") and "SHA-256" in last


def test_texts_for_paper_says_which_texts(mirror, monkeypatch):
    choice, said = authors.texts_for_paper("voc21")
    assert choice == "authors" and "authors' LLaMA-3 texts voc21_definitions.txt" in said
    assert authors.texts_for_paper("voc20")[0] is None
    mirror.files.clear()
    monkeypatch.setitem(authors.FILES, "cityscapes", authors.AuthorsFile("cityscapes_synonyms.txt", "0" * 64))
    choice, said = authors.texts_for_paper("cityscapes")
    assert choice is None and "NOT the paper's" in said and "cannot download" in said


def test_python_api_and_demo_take_authors(mirror, tiny_ckpt, tmp_path):
    from PIL import Image

    from helpers.images import make_smooth_image
    from itaclip import Segmenter
    from itaclip.demo import DemoEngine

    seg = Segmenter(tiny_ckpt, preset="voc21", device="cpu", pamr_steps=0, image_engineering=False, stride=112,
                    short_side=224, text_cache=False)
    assert list(seg.set_vocabulary(aux_texts="authors").aux_texts) == _expected_texts()
    Image.fromarray(make_smooth_image(40, 48)).save(tmp_path / "photo.png")
    engine = DemoEngine(segmenter=seg, preset="voc21", work_dir=tmp_path / "demo")
    mirror.requests.clear()
    (tmp_path / "cache" / "authors-texts" / "voc21_definitions.txt").unlink()  # the demo fetches it again
    engine.segment(tmp_path / "photo.png", "", aux_texts="authors", preset="voc21")
    assert mirror.requests == ["/mirror/voc21_definitions.txt"]
    used = [s.vocabulary for s in engine._segmenters.values()]
    assert used and all(list(v.aux_texts) == _expected_texts() for v in used)
    with pytest.raises(ItaclipError, match="not for a custom vocabulary"):
        engine.segment(tmp_path / "photo.png", "cat, dog", aux_texts="authors", preset="voc21")


# ------------------------------------------------------------------ hostile or broken mirrors


class HostileMirror:
    """A server whose one file is cut off, too large, or dripped out slowly (``mode``)."""

    def __init__(self, mode: str):
        import socketserver
        import time

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.rfile.readline()
                if mode == "truncated":  # promises 1000 bytes, sends 10 and closes
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
                elif mode == "large":  # no Content-Length: only counting the bytes can stop it
                    self.wfile.write(b"HTTP/1.0 200 OK\r\n\r\n")
                    try:
                        for _ in range(64):
                            self.wfile.write(b"y" * (1 << 20))
                    except OSError:
                        pass  # the client hung up, as it should
                elif mode == "drip":  # one byte every 0.2 s: no single read ever times out
                    self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    try:
                        for _ in range(200):
                            self.wfile.write(b"z")
                            self.wfile.flush()
                            time.sleep(0.2)
                    except OSError:
                        pass

        self.server = start_local_server(Handler, socketserver.ThreadingTCPServer)
        self.url = local_url(self.server, "/mirror")

    def close(self):
        stop_server(self.server)


@pytest.fixture
def hostile(monkeypatch, tmp_path):
    monkeypatch.setenv("ITACLIP_CACHE", str(tmp_path / "cache"))
    servers = []

    def start(mode):
        servers.append(HostileMirror(mode))
        monkeypatch.setenv(authors.URL_ENV, servers[-1].url)
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode, limits, message", [
    ("truncated", {}, r"connection closed after 10 of 1000 bytes"),
    ("large", {"MAX_BYTES": 2 << 20}, r"more than the limit of 2097152 bytes"),
    ("drip", {"TIMEOUT_S": 1.5}, r"no complete answer within 1.5 s"),
])
def test_a_broken_mirror_is_one_line_bounded_in_time_and_size(hostile, monkeypatch, tmp_path, mode, limits,
                                                              message):
    import time

    for name, value in limits.items():
        monkeypatch.setattr(authors, name, value, raising=False)
    hostile(mode)
    start = time.monotonic()
    with pytest.raises(ItaclipError, match=message) as info:
        resolve_vocabulary("voc21", aux_texts="authors")
    assert time.monotonic() - start < 10  # the drip alone would take 40 s
    assert "\n" not in str(info.value) and "cannot download the authors' voc21_definitions.txt" in str(info.value)
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*.txt"))
