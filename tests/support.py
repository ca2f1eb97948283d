"""Small helpers shared by several test modules (fixtures live in tests/plugins/)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from resguard.monitor import Monitor
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import Sampler, Snapshot
from resguard.testing import Roots


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_python(code: str) -> str:
    """Run *code* in a fresh interpreter (this one's) and return what it printed."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def wait_until(predicate: Callable[[], object], *, timeout_s: float = 10.0, what: str) -> None:
    """Poll *predicate* until it is true; fail the test with *what* after *timeout_s*.

    For waiting on another process or thread to reach a state (a real integration test);
    timing logic is tested with ``resguard.testing.ManualClock`` instead.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.005)


@contextlib.contextmanager
def fresh_fault_log() -> Iterator[None]:
    """Inside it, the sense layer's fault log starts empty: each test sees its own first
    warnings (the psutil calls' and files' names are the same in every test, and a source
    failing again within a minute is not logged again). Its own MonkeyPatch, so a test's
    ``monkeypatch.undo()`` leaves it in place."""
    from resguard._probes import reporting

    patch = pytest.MonkeyPatch()
    patch.setattr(reporting, "_logged_at", {})
    patch.setattr(reporting, "_quiet", set())
    patch.setattr(reporting.SENSING_FAULTS, "_failing", {})
    patch.setattr(reporting.SENSING_FAULTS, "_kinds", {})
    try:
        yield
    finally:
        patch.undo()


def warnings_about(
    caplog: pytest.LogCaptureFixture, source: str, text: str = "is failing"
) -> list[str]:
    """The sense layer's warnings (``resguard.snapshot``) about *source* that say *text*:
    ``"is failing"`` (the default) or ``"works again"``, or a kind such as
    ``"is failing: garbage"``."""
    import logging

    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "resguard.snapshot"
        and record.levelno == logging.WARNING
        and record.getMessage().startswith(source + " ")
        and text in record.getMessage()
    ]


def sample_beside_a_stalled_walk(
    sampler: Sampler,
    walk: Callable[[], object],
    walking: threading.Event,
    release: threading.Event,
) -> Snapshot | None:
    """Run *walk* (a sample that sums children) in a thread until it sets the event
    *walking* inside its children walk, then take ``sampler.sample(children=False)`` in
    another thread: that snapshot, or ``None`` when it still waited after 5 s (it was
    blocked behind the walk). Setting *release* lets the walk finish."""
    walker = threading.Thread(target=walk)
    walker.start()
    try:
        assert walking.wait(5), "the walk never reached the children"
        other: list[Snapshot] = []
        sampling = threading.Thread(target=lambda: other.append(sampler.sample(children=False)))
        sampling.start()
        sampling.join(5)
        return other[0] if other else None
    finally:
        release.set()
        walker.join(10)


def run_threads(
    count: int,
    target: Callable[[int], object],
    *,
    switch_interval_s: float | None = None,
    join_timeout_s: float = 120.0,
) -> None:
    """Run ``target(index)`` in *count* threads released together by a barrier, and fail the
    test when any raised or is still running after *join_timeout_s* (daemon threads: a hung
    one cannot hold the run open). With *switch_interval_s* the interpreter switches threads
    that often meanwhile (``sys.setswitchinterval``), so that their steps interleave."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    old_interval_s = sys.getswitchinterval()
    if switch_interval_s is not None:
        sys.setswitchinterval(switch_interval_s)
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + join_timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    finally:
        sys.setswitchinterval(old_interval_s)
    assert not any(thread.is_alive() for thread in threads), "threads hung"
    assert errors == []


def process_state(pid: int) -> str:
    """The process's state letter in /proc/PID/stat (``R``, ``S``, ``D``; ``T`` stopped)."""
    with open(f"/proc/{pid}/stat") as file:
        return file.read().rsplit(")", 1)[1].split()[0]


def process_cmdline(pid: int) -> bytes:
    """/proc/PID/cmdline as read now (empty when the process is gone): a child just forked
    still has its parent's, so tests wait for their marker in it before acting."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read()
    except OSError:
        return b""


# ------------------------------------------------------------------- a real uvicorn ---


class Uvicorn:
    """A uvicorn subprocess on loopback: its base *url*, its *process*, and its stderr
    *lines*, collected by a thread as they come (nothing it writes can fill a pipe)."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    def said(self, text: str) -> list[str]:
        """Its stderr lines so far that contain *text*."""
        return [line for line in list(self.lines) if text in line]

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, *, timeout_s: float = 30) -> None:
        """Wait until a line with *text* is on its stderr; fail at once if it exited."""

        def seen() -> bool:
            self.assert_running()
            return bool(self.said(text))

        wait_until(seen, timeout_s=timeout_s, what=f"{text!r} on uvicorn's stderr")

    def assert_running(self) -> None:
        if self.process.poll() is not None:
            self._reader.join(timeout=5)  # the rest of what it said before it exited
            raise AssertionError(f"uvicorn exited with {self.process.returncode}:\n{self.stderr()}")

    def answers(self, path: str) -> bool:
        """Whether GET *path* answers 200 now (``False`` while it cannot connect)."""
        self.assert_running()
        try:
            return httpx.get(self.url + path, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, *, timeout_s: float = 20) -> None:
        """SIGTERM, then SIGKILL when it has not exited within *timeout_s*."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=10)


def uvicorn_argv(args: Sequence[str], port: int) -> list[str]:
    """``python -m uvicorn *args`` on 127.0.0.1:*port*: a ``--host`` or ``--port`` in *args*
    (a deployment's own command) has its value replaced, a missing one is added."""
    argv = list(args)
    for option, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv[:0] = [option, value]
    return [sys.executable, "-m", "uvicorn", *argv]


@contextlib.contextmanager
def start_uvicorn(
    *args: str,
    ready: str | None = "/livez",
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    spawn: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
    timeout_s: float = 30,
) -> Iterator[Uvicorn]:
    """Run ``uvicorn *args`` (its options and its app) on a free loopback port, yield it once
    GET *ready* answers 200 (at once with ``ready=None``: several start together, then the
    caller waits for ``server.answers(path)``), and stop it on the way out (SIGTERM, then
    SIGKILL after a deadline). *env* is added to this process's environment; *spawn* starts
    the argv (``memory_cgroup.spawn`` runs it in a cgroup). If it exits or never answers,
    the test fails with its stderr."""
    port = free_port()
    process = spawn(
        uvicorn_argv(args, port),
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = Uvicorn(process, port)
    try:
        if ready is not None:
            path = ready
            try:
                wait_until(
                    lambda: server.answers(path),
                    timeout_s=timeout_s,
                    what=f"uvicorn to answer {path}",
                )
            except AssertionError as error:
                server.assert_running()  # exited: that error has its stderr
                raise AssertionError(f"{error}; its stderr:\n{server.stderr()}") from None
        yield server
    finally:
        server.stop()


# ------------------------------------------------- a fixture machine and ASGI calls ---

MiB = 2**20
GiB = 2**30


class Machine:
    """A fixture /proc whose memory the test sets; a Sampler reads it like the real one."""

    def __init__(self, root: Path, total_gib: float = 16) -> None:
        self.proc = root / "proc"
        (self.proc / "self").mkdir(parents=True)
        self.total_gib = total_gib
        statm = f"{GiB // 4096} {(256 * MiB) // 4096} 0 0 0 0 0\n"
        (self.proc / "self" / "statm").write_text(statm)
        self.set_used_percent(50)
        self.sampler = Sampler(Roots(proc=str(self.proc), cgroup=str(root / "no-cgroup")))

    def set_used_percent(self, percent: float) -> None:
        total_kib = int(self.total_gib * GiB / 1024)
        available_kib = int(total_kib * (100 - percent) / 100)
        # rewritten in place: the sampler keeps the descriptor open and re-reads it
        (self.proc / "meminfo").write_text(
            f"MemTotal: {total_kib} kB\nMemFree: {available_kib} kB\n"
            f"MemAvailable: {available_kib} kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
        )


def make_monitor(machine: Machine, **kwargs: Any) -> Monitor:
    """CRITICAL above 90 % used; no reclaiming (nothing to reclaim on a fixture)."""
    policy = Policy([Threshold("memory.percent", ">", 90, level=Level.CRITICAL)])
    return Monitor(
        policy=policy, sampler=machine.sampler, reclaim=False, psi_trigger=False, **kwargs
    )


class Recorder:
    """A bare ASGI app that answers 200 'ok' and records what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http", "this app does not speak lifespan"
        self.paths.append(scope["path"])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})


def http_scope(path: str, method: str = "GET", root_path: str = "") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


class Response:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        start = messages[0]
        assert start["type"] == "http.response.start"
        self.status: int = start["status"]
        self.headers = {name.decode(): value.decode() for name, value in start["headers"]}
        self.body = b"".join(m.get("body", b"") for m in messages[1:])

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: Any, path: str, method: str = "GET", backend: str = "asyncio", root_path: str = ""
) -> Response:
    """One request through *app* with real ASGI messages, in a fresh event loop."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    async def main() -> None:
        await app(http_scope(path, method, root_path), receive, send)

    anyio.run(main, backend=backend)
    return Response(messages)


async def hello_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that answers ``hello <path>`` to everything (what a wrapper passes on)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello " + scope["path"].encode()})


def asgi_get(app: Callable[..., Any], path: str, root_path: str = "") -> httpx.Response:
    """GET *path* from an ASGI *app* in this process (httpx's ASGI transport)."""

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            return await client.get(path)

    return anyio.run(main)


def sigint_counter(*, ready: str, exit_code: int) -> str:
    """A child program (``python -c``) that writes *ready* (an expression, e.g.
    ``os.getpid()``) to ``argv[1] + ".ready"``, then one ``INT`` line to ``argv[1]`` per
    SIGINT it gets within half a second of the first, and exits *exit_code*. SIGINT is
    blocked before it says it is ready and then waited for, so a signal sent the moment it
    is ready is never lost (a handler and pause() race: one between them left pause()
    waiting until the supervisor's stop timeout killed it, as seen under load)."""
    return f"""
import os, signal, sys
out = sys.argv[1]
signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT}})
with open(out + ".ready", "w") as f:
    f.write(str({ready}))
signal.sigwait({{signal.SIGINT}})
with open(out, "a") as f:
    f.write("INT\\n")
if signal.sigtimedwait({{signal.SIGINT}}, 0.5) is not None:  # a second SIGINT, were one sent
    with open(out, "a") as f:
        f.write("INT\\n")
sys.exit({exit_code})
"""
