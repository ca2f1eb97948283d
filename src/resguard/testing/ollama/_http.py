"""The stand-in's HTTP side: Ollama's endpoints, status codes and JSON shapes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from resguard.testing.ollama._catalogue import (
    VERSION,
    BadRequest,
    HTTPError,
    parse_keep_alive,
    timestamp,
)

if TYPE_CHECKING:
    from resguard.testing.ollama._server import OllamaStandIn

__all__ = ["Handler", "Server"]


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # dropped connections and clients that went away are expected in tests


class _Dropped(Exception):
    """The test asked to drop the connection."""


class Handler(BaseHTTPRequestHandler):
    standin: OllamaStandIn
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes
    server_version = "ollama-standin"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # ----------------------------------------------------------------- plumbing
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(
            status,
            json.dumps(payload, separators=(",", ":")).encode(),
            "application/json; charset=utf-8",
        )

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _stream(self, objects: Iterator[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for obj in objects:
            line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            raise HTTPError(400, "missing request body")
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as error:
            if error.msg.startswith("Expecting value") and error.pos >= len(raw.strip()):
                raise HTTPError(400, "unexpected EOF") from None
            char = raw[error.pos : error.pos + 1].decode(errors="replace")
            raise HTTPError(
                400, f"invalid character '{char}' looking for beginning of value"
            ) from None
        if not isinstance(body, dict):
            raise HTTPError(400, "json: cannot unmarshal into Go value of type api.Request")
        self.standin.requests.append((self.command, self.path, body))
        model = body.get("model", body.get("name"))
        if model is not None and not isinstance(model, str):
            raise HTTPError(
                400,
                "json: cannot unmarshal number into Go struct field "
                "GenerateRequest.model of type string",
            )
        return body

    def _dispatch(self, method: str) -> None:
        standin = self.standin
        path = self.path.split("?", 1)[0]
        if standin.drop_connections or standin.stopped:  # a stopped server answers nothing
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        if standin.delay_s:
            standin.pause(standin.delay_s)
        standin.tick()
        routes: dict[str, dict[str, Callable[[], None]]] = {
            "/": {"GET": self._root, "HEAD": self._root},
            "/api/version": {"GET": self._version, "HEAD": self._version},
            "/api/tags": {"GET": self._tags, "HEAD": self._tags},
            "/api/ps": {"GET": self._ps},
            "/api/show": {"POST": self._show},
            "/api/generate": {"POST": lambda: self._generate(chat=False)},
            "/api/chat": {"POST": lambda: self._generate(chat=True)},
            "/api/embed": {"POST": self._embed},
        }
        if path not in routes:
            self._text(404, "404 page not found")
            return
        if method not in routes[path]:
            self._text(405, "405 method not allowed")
            return
        fault = standin.take_fault(path)
        if fault is not None:
            self._json(fault.status, {"error": fault.message})
            return
        try:
            routes[path][method]()
        except HTTPError as error:
            self._json(error.status, {"error": error.message})
        except BadRequest as error:
            self._json(400, {"error": str(error)})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ----------------------------------------------------------------- endpoints
    def _root(self) -> None:
        self._text(200, "Ollama is running")

    def _version(self) -> None:
        self._json(200, {"version": VERSION})

    def _tags(self) -> None:
        self._json(200, self.standin.tags())

    def _ps(self) -> None:
        self._json(200, self.standin.ps())

    def _show(self) -> None:
        body = self._body()
        name = body.get("model") or body.get("name")
        if not name:
            raise HTTPError(400, "model is required")
        model = self.standin.resolve(name)
        if model is None:
            raise HTTPError(404, f"model '{name}' not found")
        self._json(
            200,
            {
                "license": "",
                "modelfile": f"FROM {model.name}\n",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": model.details(),
                "model_info": {
                    "general.architecture": model.family,
                    f"{model.family}.context_length": 131072,
                },
                "capabilities": list(model.capabilities),
                "modified_at": timestamp(self.standin.clock() - 86400),
            },
        )

    def _generate(self, *, chat: bool) -> None:
        standin = self.standin
        body = self._body()
        sent = body.get("model")
        if not sent:
            raise HTTPError(
                400 if chat else 404, "model is required" if chat else "model '' not found"
            )
        model = standin.resolve(sent)
        if model is None:
            raise HTTPError(404, f"model '{sent}' not found")
        keep_alive_s = parse_keep_alive(body.get("keep_alive"))
        text = _prompt_text(body, chat=chat)
        created = timestamp(standin.clock(), utc=True)

        def reply(done_reason: str, response: str = "", **extra: Any) -> dict[str, Any]:
            obj: dict[str, Any] = {"model": sent, "created_at": created}
            if chat:
                obj["message"] = {"role": "assistant", "content": response}
            else:
                obj["response"] = response
            obj.update(done=True, done_reason=done_reason, **extra)
            return obj

        if not text and keep_alive_s == 0 and "keep_alive" in body:
            standin.request_unload(model)
            self._json(200, reply("unload"))
            return
        runner = standin.acquire(model, keep_alive_s)
        try:
            if not text:
                self._json(200, reply("load"))
                return
            pieces = [f"{word} " for word in text.split()][::-1] or ["ok"]
            answer = "".join(pieces).strip()
            if body.get("stream", True):

                def chunks() -> Iterator[dict[str, Any]]:
                    for piece in pieces:
                        obj: dict[str, Any] = {"model": sent, "created_at": created, "done": False}
                        if chat:
                            obj["message"] = {"role": "assistant", "content": piece}
                        else:
                            obj["response"] = piece
                        yield obj
                    yield reply("stop", "", eval_count=len(pieces), total_duration=1000)

                self._stream(chunks())
            else:
                self._json(200, reply("stop", answer, eval_count=len(pieces), total_duration=1000))
        finally:
            standin.release(runner)

    def _embed(self) -> None:
        standin = self.standin
        body = self._body()
        sent = body.get("model")
        model = standin.resolve(sent)
        if model is None:
            raise HTTPError(404, f'model "{sent}" not found, try pulling it first')
        keep_alive_s = parse_keep_alive(body.get("keep_alive"))
        items = body.get("input") or []
        if isinstance(items, str):
            items = [items] if items else []
        if not all(isinstance(item, str) for item in items):
            raise HTTPError(400, "invalid input type")
        runner = standin.acquire(model, keep_alive_s)
        try:
            vectors = [[float(len(item)), 1.0] for item in items]
            self._json(200, {"model": sent, "embeddings": vectors})
        finally:
            standin.release(runner)


def _prompt_text(body: dict[str, Any], *, chat: bool) -> str:
    if chat:
        messages = body.get("messages") or []
        return " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""
