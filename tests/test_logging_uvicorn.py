"""Under ``uvicorn app:app`` with its default logging, resguard's lines are in the server's
stderr: the level change with its rule, the reclaim climb; readiness explains itself and
liveness stays 200 under pressure (issue 16, items 1 and 2).

One real uvicorn subprocess serves tests/apps/logged_app.py on a fixture /proc the test
writes; nothing sleeps: each step waits (with a deadline) for what it expects to appear.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from test_asgi import Machine

from support import free_port, wait_until

TESTS = Path(__file__).parent


class Server:
    """uvicorn serving apps.logged_app:app; its stderr lines collected by a thread."""

    def __init__(self, machine: Machine, *options: str) -> None:
        self.machine = machine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(TESTS),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *options,
            "apps.logged_app:app",
        ]  # without options: uvicorn's default logging, as an operator runs it
        env = {**os.environ, "RESGUARD_TEST_PROC": str(machine.proc), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> list[str]:
        return [line for line in list(self.lines) if text in line]

    def wait_for(self, text: str) -> None:
        def seen() -> bool:
            assert self.process.poll() is None, "uvicorn exited:\n" + "\n".join(self.lines)
            return bool(self.said(text))

        wait_until(seen, timeout_s=30, what=f"{text!r} on uvicorn's stderr")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    machine = Machine(tmp_path_factory.mktemp("machine"))
    machine.set_used_percent(30)
    server = Server(machine)
    try:
        server.wait_for("Uvicorn running on")
        yield server
    finally:
        server.stop()


def test_the_level_change_and_the_reclaim_are_in_uvicorns_default_stderr(server: Server) -> None:
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["level"] == "OK"
    server.machine.set_used_percent(60)
    server.wait_for("resguard: WARNING level OK -> WARNING")
    [line] = server.said("level OK -> WARNING")  # once: no second handler repeats it
    assert "memory-high" in line
    server.wait_for("resguard: INFO reclaim step gc.collect: freed ")
    body = httpx.get(f"{server.url}/readyz", timeout=10).json()
    assert (body["ready"], body["level"]) == (True, "WARNING")
    assert [breach["rule"] for breach in body["breaches"]] == ["memory-high"]
    assert body["breaches"][0]["threshold"] == 50


def test_critical_is_unready_with_retry_after_and_liveness_stays_up(server: Server) -> None:
    server.machine.set_used_percent(95)
    server.wait_for("-> CRITICAL")
    unready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert unready.status_code == 503
    assert int(unready.headers["retry-after"]) >= 1
    body = unready.json()
    assert body["level"] == "CRITICAL"
    assert "memory-full" in {breach["rule"] for breach in body["breaches"]}
    for path in ("/livez", "/healthz"):
        alive = httpx.get(f"{server.url}{path}", timeout=10)
        assert (alive.status_code, alive.json()) == (200, {"status": "alive"})
    for _ in range(20):
        assert httpx.get(f"{server.url}/", timeout=10).status_code == 503
    server.wait_for("resguard: WARNING guard refuses requests (level 1)")
    server.machine.set_used_percent(30)
    server.wait_for("-> OK")
    # the burst's tail is told before the line that ends the episode; never 20 lines
    assert len(server.said("refuse")) == 2
    assert "refused 19 request(s)" in server.said("refuse")[1]
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200


PAGE = TESTS.parent / "docs" / "logging.md"


def page_log_config(tmp_path: Path) -> Path:
    """docs/logging.md's uvicorn ``--log-config`` YAML, as a file."""
    text = PAGE.read_text()
    start = text.index("```yaml\n# log-config.yaml") + len("```yaml\n")
    path = tmp_path / "log-config.yaml"
    path.write_text(text[start : text.index("```", start)])
    return path


def test_the_pages_log_config_routes_resguard_through_uvicorns_handler_once(
    tmp_path: Path,
) -> None:
    machine = Machine(tmp_path)
    machine.set_used_percent(30)
    server = Server(machine, "--log-config", str(page_log_config(tmp_path)))
    try:
        server.wait_for("Uvicorn running on")
        machine.set_used_percent(60)
        server.wait_for("resguard: level OK -> WARNING")
        server.wait_for("resguard: reclaim")
    finally:
        server.stop()
    assert server.said("resguard: WARNING") == []  # the default handler stepped aside
    [line] = server.said("level OK -> WARNING")  # once
    assert line.startswith("WARNING:  resguard: level OK -> WARNING")
