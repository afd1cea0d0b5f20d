"""Auxiliary-text generation: the OpenAI-compatible client against a real HTTP server on 127.0.0.1,
answer checks and retries, interruption and resume, the WordNet backend on real WordNet 3.0 data,
the transformers backend's glue (with a stand-in module), the CLI and the shipped text files."""

from __future__ import annotations

import json
import sys
import time
import types
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from helpers.servers import local_url, start_local_server, stop_server
from itaclip.auxtexts import (
    LLMTextSource,
    OpenAICompatibleChat,
    build_messages,
    clean_answer,
    generate_aux_texts,
    partial_paths,
)
from itaclip.auxtexts.prompts import InvalidAnswer
from itaclip.cli import main as cli_main
from itaclip.engine.errors import ItaclipError
from itaclip.engine.methods.itaclip import PRESETS
from itaclip.engine.vocabulary import builtin_path, load_aux_texts, load_classes

pytestmark = pytest.mark.timeout(60)

WORDNET_DIR = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(
    not (WORDNET_DIR / "index.noun").is_file(),
    reason="WordNet 3.0 is not installed in /usr/share/wordnet (apt-get install -y wordnet-base)",
)


# ----------------------------------------------------------------------------- a chat server
class ChatServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1, in a thread.

    ``reply(body) -> answer`` decides each POST: a string is the assistant's content; a tuple
    ``(status, payload)`` sends that HTTP status with ``payload`` (dict → JSON, bytes as is);
    ``("sleep", seconds, content)`` answers late. Requests are recorded in ``requests``.
    """

    def __init__(self, reply, models=("test-model",)):
        self.reply = reply
        self.models = list(models)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, status, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def do_GET(self):
                if self.path.endswith("/v1/models"):
                    self._send(
                        200, {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]}
                    )
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if not self.path.endswith("/v1/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                answer = server.reply(body)
                if isinstance(answer, tuple) and answer[0] == "sleep":
                    time.sleep(answer[1])
                    answer = answer[2]
                if isinstance(answer, tuple):
                    self._send(*answer)
                    return
                finish = "length" if answer == "<<length>>" else "stop"
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "model": body.get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": finish,
                                "message": {"role": "assistant", "content": answer},
                            }
                        ],
                    },
                )

        self.httpd = start_local_server(Handler, poll_interval=0.05)
        self.url = local_url(self.httpd, "/v1")

    def close(self):
        stop_server(self.httpd)

    @property
    def asked(self) -> list[str]:
        """The class names asked, in order."""
        return [r["body"]["messages"][-1]["content"].removesuffix(" >=") for r in self.requests]


@pytest.fixture
def serve():
    servers = []

    def start(reply, **kwargs):
        server = ChatServer(reply, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def definition_of(body):
    name = body["messages"][-1]["content"].removesuffix(" >=")
    return f"a thing called {name}, for testing."


def sequence(*answers):
    """A reply function giving ``answers`` in turn (the last one repeats)."""
    state = {"i": 0}

    def reply(body):
        answer = answers[min(state["i"], len(answers) - 1)]
        state["i"] += 1
        return answer(body) if callable(answer) else answer

    return reply


def llm(server, **kwargs):
    kwargs.setdefault("retry_delay", 0.0)
    timeout = kwargs.pop("timeout", 10.0)
    api_key = kwargs.pop("api_key", None)
    return LLMTextSource(
        OpenAICompatibleChat(server.url, "test-model", api_key=api_key, timeout=timeout), **kwargs
    )


VOCAB = load_classes(
    ["sky, wall, floor", "cat, feline", "dog", "pottedplant", "person, person in shirt"], has_background=True
)


# ----------------------------------------------------------------------------- protocol
def test_openai_backend_writes_authors_format(serve, tmp_path):
    server = serve(definition_of)
    out = tmp_path / "texts" / "defs.txt"
    texts = generate_aux_texts(VOCAB, "definition", llm(server, api_key="sk-test"), out, progress=False)
    assert out.read_text().splitlines() == [
        "cat >=a thing called cat, for testing.",
        "dog >=a thing called dog, for testing.",
        "pottedplant >=a thing called pottedplant, for testing.",
        "person >=a thing called person, for testing.",
    ]
    assert texts == load_aux_texts(out)
    assert VOCAB.with_aux_texts(load_aux_texts(out)).aux_texts == tuple(texts)  # plugs into --aux-texts
    assert server.asked == ["cat", "dog", "pottedplant", "person"]  # background skipped, first names
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "test-model" and body["temperature"] == 0.6 and body["top_p"] == 0.9
    assert body["max_tokens"] == 256 and body["stream"] is False and "seed" not in body
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"] == "cat >="
    assert "house >=" in body["messages"][0]["content"]  # in-context dictionary examples
    assert not partial_paths(out)[0].exists() and not partial_paths(out)[1].exists()


def test_synonym_prompt_seed_and_no_key(serve, tmp_path):
    server = serve(sequence("feline", "canine", "flowerpot", "human"))
    source = llm(server, seed=7)
    texts = generate_aux_texts(VOCAB, "synonym", source, tmp_path / "syn.txt", progress=False)
    assert texts == ["feline", "canine", "flowerpot", "human"]
    assert "automobile" in server.requests[0]["body"]["messages"][0]["content"]
    assert "Authorization" not in server.requests[0]["headers"]
    assert [r["body"]["seed"] for r in server.requests] == [7, 7, 7, 7]  # first attempt of each class


def test_model_name_from_the_server(serve):
    server = serve(definition_of, models=["only-one"])
    chat = OpenAICompatibleChat(server.url + "/")  # trailing slash tolerated
    assert chat.model == "only-one"
    server2 = serve(definition_of, models=["a", "b"])
    with pytest.raises(ItaclipError, match="serves 2 models; choose one with --model"):
        OpenAICompatibleChat(server2.url)
    # a full endpoint URL is accepted as base URL
    assert OpenAICompatibleChat(server.url + "/chat/completions", "m").base_url == server.url


def test_server_errors_are_retried_then_succeed(serve):
    server = serve(
        sequence((500, {"error": {"message": "boom"}}), (503, b"overloaded"), (429, {}), "a small cat.")
    )
    source = llm(server, max_attempts=5)
    assert source.text(("cat",), "definition") == "a small cat."
    assert source.attempts == 4


def test_persistent_server_error_is_one_clear_line(serve):
    server = serve(lambda body: (500, {"error": {"message": "CUDA out of memory"}}))
    source = llm(server, max_attempts=3)
    with pytest.raises(ItaclipError) as info:
        source.text(("cat",), "definition")
    message = str(info.value)
    assert "after 3 attempt(s)" in message and "HTTP 500" in message and "CUDA out of memory" in message
    assert "\n" not in message and len(server.requests) == 3


def test_retry_delay_backs_off(serve, monkeypatch):
    sleeps = []
    monkeypatch.setattr("itaclip.auxtexts.llm.time.sleep", sleeps.append)
    server = serve(sequence((502, {}), (502, {}), (502, {}), "ok text"))
    assert llm(server, retry_delay=1.5).text(("cat",), "definition") == "ok text"
    assert sleeps == [1.5, 3.0, 6.0]


def test_slow_server_times_out_with_clear_error(serve):
    server = serve(lambda body: ("sleep", 3.0, "too late"))
    source = llm(server, timeout=0.3, max_attempts=2)
    start = time.monotonic()
    with pytest.raises(ItaclipError, match=r"no answer from .* within 0.3 s \(--timeout\)") as info:
        source.text(("cat",), "definition")
    assert time.monotonic() - start < 2.5
    assert "after 2 attempt(s)" in str(info.value)


@pytest.mark.parametrize(
    "status, payload, expected",
    [
        (401, {"error": {"message": "invalid api key"}}, "API key was refused"),
        (404, {"error": {"message": "model 'x' not found"}}, "check --base-url"),
        (400, {"error": "bad request: top_p"}, "HTTP 400"),
        (200, b"<html>hello</html>", "did not answer with JSON"),
        (200, {"object": "weird"}, "without choices"),
    ],
)
def test_hard_errors_are_not_retried(serve, status, payload, expected):
    server = serve(lambda body: (status, payload))
    source = llm(server, max_attempts=5)
    with pytest.raises(ItaclipError, match=expected) as info:
        source.text(("cat",), "definition")
    assert len(server.requests) == 1 and "\n" not in str(info.value)


def test_connection_refused_and_bad_url():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ItaclipError, match="connection refused"):
        OpenAICompatibleChat(f"http://127.0.0.1:{port}/v1", "m").complete(
            build_messages("cat", "definition"), temperature=0.6, top_p=0.9, max_tokens=8
        )
    with pytest.raises(ItaclipError, match="must be an http"):
        OpenAICompatibleChat("localhost:8000", "m")


def test_bad_answers_are_retried(serve):
    server = serve(
        sequence("", "a cat.\nAlso a pet.", "Cat", "**cat**", "<<length>>", "cat >= a small feline.")
    )
    source = llm(server, max_attempts=6)
    assert source.text(("cat",), "definition") == "a small feline."
    assert source.attempts == 6


def test_bad_answers_until_the_limit(serve):
    server = serve(lambda body: "Cat.")
    with pytest.raises(
        ItaclipError,
        match=r"no usable synonym for 'cat' after 4 attempt\(s\); last: unusable "
        r"answer: the answer only repeats the class name",
    ):
        llm(server, max_attempts=4).text(("cat",), "synonym")
    assert len(server.requests) == 4


@pytest.mark.parametrize(
    "raw, kind, expected",
    [
        ("  a small animal.  ", "definition", "a small animal."),
        ("cat >= a small animal.", "definition", "a small animal."),
        (">=a small animal", "definition", "a small animal"),
        ('"feline"', "synonym", "feline"),
        ("Synonym: feline.", "synonym", "feline"),
        ("`kitty`", "synonym", "kitty"),
        ("Definition: a small animal.", "definition", "a small animal."),
    ],
)
def test_clean_answer_accepts(raw, kind, expected):
    assert clean_answer(raw, "cat", kind) == expected


@pytest.mark.parametrize(
    "raw, kind, reason",
    [
        ("", "definition", "empty"),
        (None, "definition", "empty"),
        ("   \n  ", "synonym", "empty"),
        ("a\nb", "definition", "several lines"),
        ("CAT", "synonym", "repeats"),
        ("cat.", "synonym", "repeats"),
        ("cat >= cat", "synonym", "repeats"),
        ("a small >= animal", "definition", "'>='"),
        ("a very long synonym with far too many words", "synonym", "words"),
        (" ".join(["word"] * 81), "definition", "words"),
    ],
)
def test_clean_answer_rejects(raw, kind, reason):
    with pytest.raises(InvalidAnswer, match=reason):
        clean_answer(raw, "cat", kind)


def test_joined_name_echo_is_rejected():
    with pytest.raises(InvalidAnswer, match="repeats"):
        clean_answer("potted plant", "pottedplant", "synonym")


# ----------------------------------------------------------------------------- resume
class InterruptAfter:
    """Wraps a source; raises KeyboardInterrupt when asked for the class with index ``n``."""

    def __init__(self, source, n):
        self.source, self.n, self.calls = source, n, 0

    def describe(self):
        return self.source.describe()

    def text(self, names, kind):
        if self.calls == self.n:
            raise KeyboardInterrupt
        self.calls += 1
        return self.source.text(names, kind)


def test_interrupted_run_resumes_without_losing_lines(serve, tmp_path):
    server = serve(definition_of)
    out = tmp_path / "defs.txt"
    partial, meta = partial_paths(out)
    with pytest.raises(KeyboardInterrupt):
        generate_aux_texts(VOCAB, "definition", InterruptAfter(llm(server), 2), out, progress=False)
    assert not out.exists()
    assert partial.read_text().splitlines() == [
        "cat >=a thing called cat, for testing.",
        "dog >=a thing called dog, for testing.",
    ]
    assert json.loads(meta.read_text())["kind"] == "definition"
    notes = []
    texts = generate_aux_texts(VOCAB, "definition", llm(server), out, progress=False, warn=notes.append)
    assert server.asked == ["cat", "dog", "pottedplant", "person"]  # nothing asked twice
    assert len(texts) == 4 and out.read_text().count("\n") == 4
    assert any("resuming: 2 of 4" in n for n in notes)
    assert not partial.exists() and not meta.exists()


def test_cut_off_last_line_is_redone_and_bad_tail_dropped(serve, tmp_path):
    server = serve(definition_of)
    out = tmp_path / "defs.txt"
    partial, _ = partial_paths(out)
    partial.write_text("cat >=kept text.\ndog >=half a li")  # killed while writing line 2
    texts = generate_aux_texts(VOCAB, "definition", llm(server), out, progress=False, warn=lambda m: None)
    assert texts[0] == "kept text." and server.asked == ["dog", "pottedplant", "person"]
    partial.write_text("cat >=kept.\nWRONG >=x\nperson >=y\n")
    out.unlink()
    server.requests.clear()
    generate_aux_texts(VOCAB, "definition", llm(server), out, progress=False, warn=lambda m: None)
    assert server.asked == ["dog", "pottedplant", "person"]


def test_partial_of_another_run_is_refused_unless_restart(serve, tmp_path):
    server = serve(lambda body: "feline thing")
    out = tmp_path / "t.txt"
    with pytest.raises(KeyboardInterrupt):
        generate_aux_texts(VOCAB, "synonym", InterruptAfter(llm(server), 1), out, progress=False)
    with pytest.raises(ItaclipError, match="--restart"):
        generate_aux_texts(VOCAB, "definition", llm(server), out, progress=False)
    server.requests.clear()
    generate_aux_texts(VOCAB, "definition", llm(server), out, restart=True, progress=False)
    assert len(server.requests) == 4


def test_failure_keeps_partial_and_says_how_to_resume(serve, tmp_path):
    server = serve(
        lambda body: (500, {}) if "pottedplant" in body["messages"][-1]["content"] else "fine text"
    )
    out = tmp_path / "t.txt"
    with pytest.raises(
        ItaclipError, match=r"2 of 4 texts kept in .*t\.txt\.partial; run the same command again"
    ):
        generate_aux_texts(VOCAB, "synonym", llm(server, max_attempts=2), out, progress=False)
    assert len(partial_paths(out)[0].read_text().splitlines()) == 2 and not out.exists()


def test_existing_output_needs_overwrite(serve, tmp_path):
    server = serve(definition_of)
    out = tmp_path / "t.txt"
    out.write_text("old\n")
    with pytest.raises(ItaclipError, match="--overwrite"):
        generate_aux_texts(VOCAB, "definition", llm(server), out, progress=False)
    assert not server.requests
    generate_aux_texts(VOCAB, "definition", llm(server), out, overwrite=True, progress=False)
    assert out.read_text().startswith("cat >=")


# ----------------------------------------------------------------------------- CLI
def run_texts(*args: str) -> int:
    return cli_main(["texts", "generate", *args])


def test_cli_openai(serve, tmp_path, monkeypatch, capsys):
    server = serve(definition_of, models=["served-llama"])
    monkeypatch.setenv("MY_KEY", "secret")
    classes = tmp_path / "classes.txt"
    classes.write_text("sky, wall\ncat, feline\ndog\n")
    out = tmp_path / "out.txt"
    common = ["--classes", str(classes), "--background-first", "--kind", "definition",
              "--base-url", server.url, "--no-progress", "--retry-delay", "0"]
    assert run_texts(*common, "--out", str(out), "--api-key-env", "MY_KEY") == 0
    assert out.read_text().splitlines() == [
        "cat >=a thing called cat, for testing.",
        "dog >=a thing called dog, for testing.",
    ]
    assert server.requests[0]["headers"]["Authorization"] == "Bearer secret"
    assert server.requests[0]["body"]["model"] == "served-llama"
    # OPENAI_API_KEY is never sent to a server it was not named for
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert run_texts(*common, "--out", str(tmp_path / "out2.txt")) == 0
    assert "Authorization" not in server.requests[-1]["headers"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--classes", "cat, dog", "--kind", "synonym"], "choose a backend"),
        (["--classes", "cat, dog", "--backend", "openai", "--kind", "synonym"], "needs --base-url"),
        (["--classes", "cat, dog", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--kind", "synonym",
          "--api-key-env", "ITACLIP_SURELY_UNSET"], "not set"),
        (["--classes", "cat, dog", "--backend", "wordnet"], "--kind"),
        (["--kind", "synonym", "--backend", "wordnet"], "--classes"),
        (["--classes", "no_such_file.txt", "--kind", "synonym", "--backend", "wordnet"], "does not exist"),
        (["--classes", "cat, dog", "--kind", "synonym", "--backend", "wordnet", "--sense", "cat"],
         "NAME=HINT"),
        (["--classes", "cat, dog", "--kind", "synonym", "--base-url", "http://x/v1", "--sense", "cat=x"],
         "wordnet only"),
    ],
)
def test_cli_user_errors(tmp_path, capsys, argv, message):
    rc = cli_main(["texts", "generate", *argv, "--out", str(tmp_path / "o.txt"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and message in err[-1] and err[-1].startswith("itaclip texts: error:")


def test_cli_transformers_missing_is_clear(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails like an absent package
    rc = run_texts("--classes", "cat, dog", "--kind", "synonym", "--backend", "transformers",
                   "--model", str(tmp_path), "--out", str(tmp_path / "o.txt"))
    assert rc == 2 and "pip install 'itaclip[llm]'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- transformers glue
def test_transformers_backend_with_a_stand_in(tmp_path, monkeypatch):
    """The glue (chat template, stop tokens, sampling arguments, decoding of the new tokens only)
    against a stand-in ``transformers`` module; the real library is an optional extra."""
    import torch

    calls = {}

    class Tokenizer:
        chat_template = "{{ messages }}"
        eos_token_id, unk_token_id, pad_token_id = 2, 0, None

        @classmethod
        def from_pretrained(cls, path, local_files_only):
            calls["tokenizer"] = (path, local_files_only)
            return cls()

        def convert_tokens_to_ids(self, token):
            return 9 if token == "<|eot_id|>" else 0

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            calls["template"] = (messages, tokenize, add_generation_prompt)
            return "PROMPT"

        def __call__(self, text, return_tensors, add_special_tokens):
            calls["encode"] = (text, add_special_tokens)

            class Batch(dict):
                def to(self, device):
                    return self

            return Batch(
                input_ids=torch.tensor([[5, 6, 7]]), attention_mask=torch.ones(1, 3, dtype=torch.long)
            )

        def decode(self, tokens, skip_special_tokens):
            return " ".join(str(int(t)) for t in tokens)

    class Model:
        @classmethod
        def from_pretrained(cls, path, torch_dtype, local_files_only):
            calls["model"] = (path, torch_dtype)
            return cls()

        def to(self, device):
            return self

        def eval(self):
            return self

        def generate(self, input_ids, attention_mask, **kwargs):
            calls["generate"] = kwargs
            return torch.cat([input_ids, torch.tensor([[41, 42]])], dim=1)

    fake = types.ModuleType("transformers")
    fake.AutoTokenizer, fake.AutoModelForCausalLM = Tokenizer, Model
    monkeypatch.setitem(sys.modules, "transformers", fake)
    from itaclip.auxtexts.hf_local import TransformersChat

    chat = TransformersChat(str(tmp_path), device="cpu")
    answer = chat.complete(
        build_messages("cat", "definition"), temperature=0.6, top_p=0.9, max_tokens=32, seed=3
    )
    assert answer == "41 42"  # only the new tokens
    assert calls["model"] == (str(tmp_path), torch.float32) and calls["tokenizer"][1] is True
    assert calls["template"][1:] == (False, True) and calls["encode"] == ("PROMPT", False)
    assert calls["generate"] == dict(
        max_new_tokens=32, eos_token_id=[2, 9], pad_token_id=2, do_sample=True, temperature=0.6, top_p=0.9
    )
    with pytest.raises(ItaclipError, match="does not exist"):
        TransformersChat(str(tmp_path / "missing"), device="cpu")


# ----------------------------------------------------------------------------- WordNet
@pytest.fixture(scope="module")
def wordnet():
    if not (WORDNET_DIR / "index.noun").is_file():
        pytest.skip("WordNet 3.0 is not installed in /usr/share/wordnet (apt-get install -y wordnet-base)")
    from itaclip.auxtexts.wordnet import WordNetTextSource

    return WordNetTextSource(WORDNET_DIR)


@needs_wordnet
@pytest.mark.parametrize(
    "names, expected",
    [
        (
            ("cat",),
            "feline mammal usually having thick soft fur and no ability to roar: domestic cats; wildcats.",
        ),
        (("table",), "a piece of furniture having a smooth flat top"),  # not "a set of data in rows"
        (("car",), "a motor vehicle with four wheels; usually propelled by an internal combustion engine."),
        (("pottedplant",), "a plant suitable for growing in a flowerpot"),  # joined, near compound
        (("trafficlight",), "a visual signal to control the flow of traffic"),  # joined → traffic light
        (("tvmonitor",), "monitor used in a studio"),  # joined → tv monitor
        (("wine glass",), "a glass that has a stem and in which wine is served."),  # written as one word
        (("skis",), "narrow wood or metal or plastic runners"),  # plural
        (("zzxq blorf", "dog"), "a member of the genus Canis"),  # first name WordNet knows
        (("sky-other",), "the atmosphere and outer space as viewed from the earth."),  # COCO-Stuff style
        (("window-blind",), "a blind for privacy or to keep out light."),
        (("cake",), "baked goods"),  # photo-domain sense, not a cake of soap
        (("monitor",), "display"),  # not the warship Monitor (a proper noun)
    ],
)
def test_wordnet_definitions(wordnet, names, expected):
    text = wordnet.text(names, "definition")
    assert text.startswith(expected) or expected in text
    assert text.endswith(".") and '"' not in text and "\n" not in text
    wordnet.warnings()


@needs_wordnet
def test_wordnet_strips_examples(wordnet):
    from itaclip.auxtexts.wordnet import strip_examples

    gloss = 'a seat for one person; "he sat in the chair"; "a chair"'
    assert strip_examples(gloss) == "a seat for one person"
    assert '"' not in wordnet.text(("car",), "definition")  # WordNet's gloss has an example sentence


@needs_wordnet
@pytest.mark.parametrize(
    "names, expected",
    [
        (("car",), "automobile"),
        (("bicycle",), "bike"),
        (("sofa",), "couch"),
        (("cat",), "feline"),  # "true cat" repeats the name: the hypernym instead
        (("chair", "seat"), "furniture"),  # the class's other names are not synonyms either
        (("aeroplane",), "plane"),  # "airplane" is only a spelling variant
        (("sky",), "atmosphere"),  # a one-lemma synset: its hypernym
        (("sports ball",), "ball"),  # approximated by its head noun
    ],
)
def test_wordnet_synonyms(wordnet, names, expected):
    assert wordnet.text(names, "synonym") == expected
    wordnet.warnings()


@needs_wordnet
def test_wordnet_unknown_names_fall_back_and_warn(wordnet):
    assert wordnet.text(("glorbnax",), "definition") == "glorbnax"
    assert wordnet.text(("stop sign",), "synonym") == "sign"
    messages = wordnet.warnings()
    assert any("does not know 1 class name(s)" in m and "glorbnax" in m for m in messages)
    assert any("stop sign → sign" in m for m in messages)
    assert wordnet.warnings() == []  # reported once


@needs_wordnet
def test_wordnet_sense_hints(tmp_path):
    from itaclip.auxtexts.wordnet import PHOTO_SENSES, WordNet, WordNetTextSource, _matches

    wn = WordNet(WORDNET_DIR)
    for lemma, hint in PHOTO_SENSES.items():  # every built-in hint picks a sense
        assert any(_matches(s, hint) for s in wn.senses(lemma)), (lemma, hint)
    source = WordNetTextSource(WORDNET_DIR, senses={"mouse": "animal", "plant": "artifact"})
    source.prepare([("mouse",), ("plant",)])
    assert "rodents" in source.text(("mouse",), "definition")  # the user's hint beats the built-in one
    assert "industrial" in source.text(("plant",), "definition")
    with pytest.raises(ItaclipError, match="no sense of 'mouse' matches 'vegetable'"):
        WordNetTextSource(WORDNET_DIR, senses={"mouse": "vegetable"}).text(("mouse",), "definition")
    with pytest.raises(ItaclipError, match="unknown class name"):
        WordNetTextSource(WORDNET_DIR, senses={"moose": "animal"}).prepare([("mouse",)])


def test_wordnet_missing_directory(tmp_path):
    from itaclip.auxtexts.wordnet import WordNetTextSource

    with pytest.raises(ItaclipError, match="apt-get install wordnet-base"):
        WordNetTextSource(tmp_path)


@needs_wordnet
def test_cli_wordnet_with_preset_and_builtin_name(tmp_path, capsys):
    out = tmp_path / "voc.txt"
    assert run_texts("--preset", "voc21", "--backend", "wordnet", "--out", str(out), "--no-progress") == 0
    lines = out.read_text().splitlines()
    voc = load_classes("voc21", has_background=True)
    assert len(lines) == voc.num_foreground and lines[0].startswith("aeroplane >=an aircraft")
    # a built-in list's name alone: its background line is known to be one
    out2 = tmp_path / "voc2.txt"
    rc = run_texts("--classes", "voc21", "--kind", "definition", "--backend", "wordnet", "--out", str(out2),
                   "--no-progress")
    assert rc == 0
    assert out2.read_text() == out.read_text()
    # --sense on the command line
    out3 = tmp_path / "s.txt"
    rc = run_texts("--classes", "mouse, cat", "--kind", "definition", "--backend", "wordnet",
                   "--sense", "mouse=rodent", "--out", str(out3), "--no-progress")
    assert rc == 0
    assert "rodents" in out3.read_text().splitlines()[0]


# ----------------------------------------------------------------------------- shipped texts
SHIPPED = {
    "voc21": "definition",
    "voc20": "definition",
    "context60": "definition",
    "context59": "definition",
    "coco_stuff": "definition",
    "ade20k": "definition",
    "coco_object": "synonym",
    "cityscapes": "synonym",
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_texts_match_their_class_files(name):
    path = builtin_path("texts", f"{name}_{SHIPPED[name]}s")
    assert path.is_file(), f"{path} is missing: regenerate it (docs/TEXTS.md)"
    preset = PRESETS[name]
    assert preset.aux_texts == path.stem
    vocab = load_classes(name, has_background=preset.has_background)
    texts = load_aux_texts(path.stem)
    assert len(texts) == vocab.num_foreground
    names = [line.split(" >=")[0] for line in path.read_text().splitlines()]
    assert names == [c[0] for c in vocab.classes[int(vocab.has_background) :]]


@needs_wordnet
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_texts_are_what_the_tool_writes(name, tmp_path):
    """The shipped files are exactly the output of ``itaclip texts generate --preset NAME
    --backend wordnet`` (docs/TEXTS.md): regenerate them when the class files change."""
    out = tmp_path / "t.txt"
    assert run_texts("--preset", name, "--backend", "wordnet", "--out", str(out), "--no-progress") == 0
    assert out.read_text() == builtin_path("texts", f"{name}_{SHIPPED[name]}s").read_text()
