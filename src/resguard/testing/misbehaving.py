"""A server that misbehaves in one chosen way, for testing deadlines and size caps of an
HTTP client (resguard's Ollama and Docker support use it; so can yours).

It speaks just enough HTTP/1.1 on loopback to look like Ollama (or a Docker engine: the
mode decides, not the path) and then does what a broken or hostile server does:

``hang``          accept, read the request, never answer
``drip``          valid headers, then the body one byte every ``interval_s``
``drip_headers``  the status line, then the headers one byte every ``interval_s``
``http500``       ``500`` with Ollama's JSON error body
``drop``          close the connection without answering
``malformed``     ``200`` with a body that is not JSON
``wrong_shape``   ``200`` with JSON that is not the Ollama API
``deep``          ``200`` with JSON nested too deeply to parse
``huge``          ``200`` announcing and sending ``huge_bytes`` of a real /api/ps answer
``huge_chunked``  ``200`` chunked, real /api/ps entries without end

``requests`` counts the requests read. ``stop()`` closes every connection.
A unix socket path instead of a TCP port: ``MisbehavingServer(mode, unix_path=...)``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading

from resguard._errors import InvalidValue

__all__ = ["MODES", "MisbehavingServer"]

MODES = (
    "hang",
    "drip",
    "drip_headers",
    "http500",
    "drop",
    "malformed",
    "wrong_shape",
    "deep",
    "huge",
    "huge_chunked",
)

_ENTRY = json.dumps(
    {
        "name": "llama3.2:1b",
        "model": "llama3.2:1b",
        "size": 1514584145,
        "digest": "baf6a787fdffd633537aa2eb51cfd54cb93ff08e28040095462bb63daf552878",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "1.2B",
            "quantization_level": "Q8_0",
        },
        "expires_at": "2025-10-01T12:06:30.5+02:00",
        "size_vram": 0,
        "context_length": 4096,
    }
).encode()


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


class MisbehavingServer:
    """``with MisbehavingServer("drip") as server:`` then talk to ``server.host``."""

    def __init__(
        self,
        mode: str,
        *,
        interval_s: float = 0.3,
        huge_bytes: int = 50 * 2**20,
        unix_path: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise InvalidValue(f"mode {mode!r} is not one of {MODES}")
        self.mode = mode
        self.interval_s = interval_s
        self.huge_bytes = huge_bytes
        self.unix_path = unix_path
        self.requests = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> MisbehavingServer:
        if self.unix_path is not None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.unix_path)
        else:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        self._thread = threading.Thread(
            target=self._accept, name=f"misbehaving-{self.mode}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def __enter__(self) -> MisbehavingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        assert self._listener is not None, "start() the server first"
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    # ------------------------------------------------------------------ serving
    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _read_request(self, connection: socket.socket) -> bool:
        data = b""
        connection.settimeout(10)
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = connection.recv(65536)
            if not chunk:
                return False
            rest += chunk
        with self._lock:
            self.requests += 1
        return True

    def _serve(self, connection: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                if not self._read_request(connection):
                    return
                if not self._misbehave(connection):
                    return
        except OSError:
            return  # the client gave up: that is what the tests want
        finally:
            with contextlib.suppress(OSError):
                connection.close()

    def _drip(self, connection: socket.socket, data: bytes) -> None:
        for index in range(len(data)):
            if self._stop.wait(self.interval_s):
                return
            connection.sendall(data[index : index + 1])

    def _misbehave(self, connection: socket.socket) -> bool:
        """Answer one request; False when the connection is done with."""
        mode = self.mode
        if mode == "hang":
            self._stop.wait()
            return False
        if mode == "drop":
            connection.shutdown(socket.SHUT_RDWR)
            return False
        if mode == "drip":
            body = b" " * 100_000 + b'{"models":[]}'
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            self._drip(connection, body)
            return False
        if mode == "drip_headers":
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            self._drip(connection, b"X-Padding: " + b"a" * 10_000 + b"\r\n\r\n")
            return False
        if mode == "http500":
            connection.sendall(
                _response("500 Internal Server Error", b'{"error":"runner crashed"}')
            )
            return True
        if mode == "malformed":
            connection.sendall(_response("200 OK", b'{"models": [ {"name": '))
            return True
        if mode == "wrong_shape":
            connection.sendall(_response("200 OK", b'{"modelz": 1, "version": "0.12.3"}'))
            return True
        if mode == "deep":
            connection.sendall(_response("200 OK", b"[" * 200_000 + b"]" * 200_000))
            return True
        if mode == "huge":
            self._send_huge(connection)
            return False
        self._send_endless_chunks(connection)
        return False

    def _entries(self, size: int) -> bytes:
        count = max(1, size // (len(_ENTRY) + 1))
        return b",".join([_ENTRY] * count)

    def _send_huge(self, connection: socket.socket) -> None:
        inner = self._entries(self.huge_bytes - 20)
        body = b'{"models":[' + inner + b"]}"
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        view = memoryview(body)
        for start in range(0, len(body), 1 << 16):
            if self._stop.is_set():
                return
            connection.sendall(view[start : start + (1 << 16)])

    def _send_endless_chunks(self, connection: socket.socket) -> None:
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b'{"models":[' + self._entries(1 << 16)
        while not self._stop.is_set():
            connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            piece = b"," + self._entries(1 << 16)
