"""Requests per second through uvicorn with and without GuardMiddleware.

The same trivial ASGI app runs under uvicorn (a child process) twice: bare, and behind
``GuardMiddleware`` with its default guard and a Monitor sampling every 50 ms (its thread's
CPU is part of the cost). A small keep-alive HTTP/1.1 client on raw asyncio streams drives
it over loopback with CONNECTIONS concurrent connections: it costs far less per request
than the server, so the server is the bottleneck and the middleware's cost shows (an httpx
client would be the bottleneck itself and hide it). Runs alternate bare/guarded; the best
run of each counts. Run: ``.venv/bin/python benchmarks/run.py asgi``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Table

HERE = Path(__file__).parent
CONNECTIONS = 16
REQUESTS = 4000
WARMUP_REQUESTS = 400
ROUNDS = 3
_BODY = b"ok"


async def plain_app(scope: Any, receive: Any, send: Any) -> None:
    """A trivial handler: 200 'ok'. It ignores lifespan, like many bare ASGI apps."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(_BODY)).encode())]})
    await send({"type": "http.response.body", "body": _BODY})


def guarded_app() -> Any:
    """plain_app behind GuardMiddleware with its defaults (a factory for uvicorn)."""
    from resguard.asgi import GuardMiddleware

    return GuardMiddleware(plain_app)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    def __init__(self, target: list[str]) -> None:
        self.port = _free_port()
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "--host", "127.0.0.1",
                "--port", str(self.port), "--log-level", "warning", "--no-access-log", *target]
        self.process = subprocess.Popen(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("uvicorn did not start in 60 s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def _connection(port: int, count: int, statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            statuses.append(int(head[9:12]))
    finally:
        writer.close()


async def _drive(port: int, requests: int) -> float:
    """Requests per second for *requests* spread over CONNECTIONS keep-alive connections."""
    statuses: list[int] = []
    per_connection = requests // CONNECTIONS
    start = time.perf_counter()
    await asyncio.gather(*(_connection(port, per_connection, statuses)
                           for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - start
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses: {sorted(set(statuses))}")
    return len(statuses) / elapsed


def _requests_per_s(target: list[str]) -> float:
    server = _Server(target)
    try:
        asyncio.run(_drive(server.port, WARMUP_REQUESTS))
        return asyncio.run(_drive(server.port, REQUESTS))
    finally:
        server.stop()


def run(table: Table) -> None:
    bare, guarded = [], []
    for _ in range(ROUNDS):
        bare.append(_requests_per_s(["bench_asgi:plain_app"]))
        guarded.append(_requests_per_s(["--factory", "bench_asgi:guarded_app"]))
    table.compare(f"uvicorn request through GuardMiddleware ({max(guarded):.0f} req/s, "
                  f"{CONNECTIONS} connections)", 1 / max(guarded),
                  f"the same app without it ({max(bare):.0f} req/s)", 1 / max(bare),
                  "≥ 0.95× (≤ 5 % fewer req/s)")
