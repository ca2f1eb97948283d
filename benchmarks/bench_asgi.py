"""Requests per second through uvicorn with and without GuardMiddleware.

The same trivial ASGI app runs under uvicorn (a child process) twice: bare, and behind
``GuardMiddleware`` with its default guard and a Monitor sampling every 50 ms (its thread's
CPU is part of the cost). A small keep-alive HTTP/1.1 client on raw asyncio streams drives
it over loopback with CONNECTIONS concurrent connections: it costs far less per request
than the server, so the server is the bottleneck and the middleware's cost shows (an httpx
client would be the bottleneck itself and hide it). Runs alternate bare/guarded; the best
run of each counts. Besides requests per second it reports the server process's CPU time
per request, which other load on a shared machine disturbs less than wall time.
Run: ``.venv/bin/python benchmarks/run.py asgi``.
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

import psutil

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Table, Target

HERE = Path(__file__).parent
CONNECTIONS = 16
REQUESTS = 16000  # about 1.6 s of server CPU per run: its 10 ms tick is under 1 % of it
WARMUP_REQUESTS = 400
ROUNDS = 5
_BODY = b"ok"


async def plain_app(scope: Any, receive: Any, send: Any) -> None:
    """A trivial handler: 200 'ok'. It ignores lifespan, like many bare ASGI apps."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(_BODY)).encode()),
            ],
        }
    )
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
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(HERE),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
            *target,
        ]
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
    await asyncio.gather(*(_connection(port, per_connection, statuses) for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - start
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses: {sorted(set(statuses))}")
    return len(statuses) / elapsed


def _measure(target: list[str]) -> tuple[float, float]:
    """(requests per second, the server's CPU seconds per request) for one server run."""
    server = _Server(target)
    try:
        process = psutil.Process(server.process.pid)
        asyncio.run(_drive(server.port, WARMUP_REQUESTS))
        before = process.cpu_times()
        requests_per_s = asyncio.run(_drive(server.port, REQUESTS))
        after = process.cpu_times()
        cpu_s = (after.user - before.user) + (after.system - before.system)
        return requests_per_s, cpu_s / (REQUESTS // CONNECTIONS * CONNECTIONS)
    finally:
        server.stop()


def _in_process_per_request_s(app: Any, requests: int = 50_000) -> float:
    """Seconds per request of *app* called directly with ASGI messages (no server)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
    }
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: Any) -> None:
        pass

    async def loop() -> float:
        start = time.perf_counter()
        for _ in range(requests):
            await app(scope, receive, send)
        return (time.perf_counter() - start) / requests

    return min(asyncio.run(loop()) for _ in range(5))


def run(table: Table) -> None:
    from resguard.asgi import GuardMiddleware
    from resguard.guard import Guard
    from resguard.monitor import Monitor

    with Monitor() as monitor:
        middleware = GuardMiddleware(plain_app, Guard(memory="90%", monitor=monitor))
        table.compare(
            "GuardMiddleware + trivial app, called directly (no server)",
            _in_process_per_request_s(middleware),
            "the trivial app alone",
            _in_process_per_request_s(plain_app),
            "(context: the added µs)",
        )
    bare, guarded = [], []
    for _ in range(ROUNDS):
        bare.append(_measure(["bench_asgi:plain_app"]))
        guarded.append(_measure(["--factory", "bench_asgi:guarded_app"]))
    bare_rps, guarded_rps = max(r for r, _ in bare), max(r for r, _ in guarded)
    table.compare(
        f"uvicorn request through GuardMiddleware ({guarded_rps:.0f} req/s, "
        f"{CONNECTIONS} connections)",
        1 / guarded_rps,
        f"the same app without it ({bare_rps:.0f} req/s)",
        1 / bare_rps,
        "(context: client and server share the cores)",
    )
    # CPU time of the server process is steadier than wall time on a shared machine
    table.compare(
        "uvicorn server CPU per request with GuardMiddleware (Monitor included)",
        min(c for _, c in guarded),
        "the same app without it",
        min(c for _, c in bare),
        Target.cost_at_most(1.03, text="≤ 3 % more than the bare app"),
    )
