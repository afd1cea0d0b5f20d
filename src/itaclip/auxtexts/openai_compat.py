"""A client for any OpenAI-compatible chat-completions server, on the standard library only.

Covers vLLM (``vllm serve MODEL`` → ``http://localhost:8000/v1``), llama.cpp's ``llama-server``
(``http://localhost:8080/v1``), Ollama (``http://localhost:11434/v1``), LM Studio, and hosted APIs.
It speaks ``POST {base_url}/chat/completions`` and ``GET {base_url}/models``; ``urllib`` is enough
for that, so the backend needs no extra package.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional, Sequence

from ..engine.errors import ItaclipError
from .llm import TransientBackendError
from .prompts import InvalidAnswer

#: HTTP statuses worth another attempt.
TRANSIENT_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAICompatibleChat:
    """Chat completions from an OpenAI-compatible server.

    Args:
        base_url: the API root, usually ending in ``/v1`` (``http://localhost:8000/v1``).
        model: the model name the server knows; ``None`` → the only model ``GET /models`` lists.
        api_key: sent as ``Authorization: Bearer``; ``None`` for local servers that need none.
        timeout: seconds to wait for a connection and for each answer.
    """

    def __init__(
        self,
        base_url: str,
        model: Optional[str] = None,
        *,
        api_key: Optional[str] = None,
        timeout: float = 120.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ItaclipError(
                f"--base-url must be an http(s) URL such as http://localhost:8000/v1, got {base_url!r}"
            )
        if timeout <= 0:
            raise ItaclipError(f"timeout must be > 0 seconds, got {timeout}")
        self.base_url = base_url.strip().rstrip("/").removesuffix("/chat/completions")
        self.api_key = api_key
        self.timeout = timeout
        # Requests to this machine never go through an HTTP proxy set in the environment.
        handlers = [urllib.request.ProxyHandler({})] if _is_local(parsed.hostname or "") else []
        self._opener = urllib.request.build_opener(*handlers)
        self.model = model or self._only_model()

    def describe(self) -> str:
        return f"model {self.model!r} at {self.base_url}"

    # ------------------------------------------------------------------ API
    def list_models(self) -> list[str]:
        """Model ids the server lists (``GET /models``)."""
        answer = self._request("GET", "/models")
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise ItaclipError(f"{self.base_url}/models did not return a model list; pass --model NAME")
        return [str(item.get("id")) for item in data if isinstance(item, dict) and item.get("id")]

    def complete(
        self,
        messages: Sequence[dict],
        *,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: Optional[int] = None,
    ) -> str:
        """The assistant's text for ``messages`` (one completion, no streaming)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "n": 1,
            "stream": False,
        }
        if seed is not None:
            body["seed"] = seed
        answer = self._request("POST", "/chat/completions", body)
        try:
            choice = answer["choices"][0]
            message = choice.get("message") or {}
            content = message.get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ItaclipError(
                f"{self.base_url}/chat/completions answered without choices[0].message: "
                f"{_shorten(json.dumps(answer))}"
            ) from None
        if choice.get("finish_reason") == "length":
            raise InvalidAnswer(f"the answer was cut off at {max_tokens} tokens")
        return content if isinstance(content, str) else ""

    # ------------------------------------------------------------------ HTTP
    def _only_model(self) -> str:
        models = self.list_models()
        if len(models) == 1:
            return models[0]
        if not models:
            raise ItaclipError(f"the server at {self.base_url} lists no models; pass --model NAME")
        raise ItaclipError(
            f"the server at {self.base_url} serves {len(models)} models; choose one with --model "
            f"({', '.join(models[:10])}{', ...' if len(models) > 10 else ''})"
        )

    def _request(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        url = self.base_url + path
        headers = {"Accept": "application/json", "User-Agent": "itaclip-texts"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        late = f"no answer from {url} within {self.timeout:g} s (--timeout)"
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(url, exc) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise TransientBackendError(late) from None
            if isinstance(reason, ConnectionRefusedError):
                raise ItaclipError(
                    f"cannot connect to {url}: connection refused (is the server running?)"
                ) from None
            if isinstance(reason, (ConnectionResetError, ConnectionAbortedError)):
                raise TransientBackendError(f"connection to {url} dropped: {reason}") from None
            raise ItaclipError(f"cannot reach {url}: {reason}") from None
        except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
            raise TransientBackendError(late) from None
        except (http.client.HTTPException, ConnectionError) as exc:
            raise TransientBackendError(
                f"connection to {url} failed: {exc.__class__.__name__} {exc}"
            ) from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ItaclipError(
                f"{url} did not answer with JSON (is --base-url the API root, e.g. http://host:8000/v1?): "
                f"{_shorten(raw.decode('utf-8', 'replace'))}"
            ) from None


def _http_error(url: str, exc: urllib.error.HTTPError) -> ItaclipError:
    try:
        detail = exc.read().decode("utf-8", "replace")
    except Exception:  # the body is only for the message
        detail = ""
    try:
        parsed = json.loads(detail)
        error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        if isinstance(error, dict):
            error = error.get("message") or error
        detail = str(error)
    except (json.JSONDecodeError, AttributeError):
        pass
    status = exc.code
    message = f"HTTP {status} from {url}" + (f": {_shorten(detail)}" if detail.strip() else "")
    if status in TRANSIENT_STATUSES:
        return TransientBackendError(f"server error, {message}")
    if status in (401, 403):
        return ItaclipError(
            f"{message} (the API key was refused or is missing: set it with --api-key-env VAR)"
        )
    if status == 404:
        return ItaclipError(f"{message} (check --base-url, usually ending in /v1, and --model)")
    return ItaclipError(message)


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shorten(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
