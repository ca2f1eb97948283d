"""Under ``uvicorn app:app`` with its default logging, resguard's lines are in the server's
stderr: the level change with its rule, the reclaim climb; readiness explains itself and
liveness stays 200 under pressure (issue 16, items 1 and 2).

One real uvicorn subprocess serves tests/apps/logged_app.py on a fixture /proc the test
writes; nothing sleeps: each step waits (with a deadline) for what it expects to appear.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from support import Machine, Uvicorn, start_uvicorn

TESTS = Path(__file__).parent


def logged_app(machine: Machine, *options: str) -> AbstractContextManager[Uvicorn]:
    """uvicorn serving apps.logged_app:app on *machine*'s /proc; without *options*, with
    uvicorn's default logging, as an operator runs it."""
    env = {"RESGUARD_TEST_PROC": str(machine.proc)}
    return start_uvicorn("--app-dir", str(TESTS), *options, "apps.logged_app:app", env=env)


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Machine:
    machine = Machine(tmp_path_factory.mktemp("machine"))
    machine.set_used_percent(30)
    return machine


@pytest.fixture(scope="module")
def server(machine: Machine) -> Iterator[Uvicorn]:
    with logged_app(machine) as server:
        yield server


def test_the_level_change_and_the_reclaim_are_in_uvicorns_default_stderr(
    server: Uvicorn, machine: Machine
) -> None:
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["level"] == "OK"
    machine.set_used_percent(60)
    server.wait_for("resguard: WARNING level OK -> WARNING")
    [line] = server.said("level OK -> WARNING")  # once: no second handler repeats it
    assert "memory-high" in line
    # the climb's line (its steps are DEBUG when they free nothing, as on a fixture /proc)
    server.wait_for("resguard: INFO reclaim: ")
    body = httpx.get(f"{server.url}/readyz", timeout=10).json()
    assert (body["ready"], body["level"]) == (True, "WARNING")
    assert [breach["rule"] for breach in body["breaches"]] == ["memory-high"]
    assert body["breaches"][0]["threshold"] == 50


def test_critical_is_unready_with_retry_after_and_liveness_stays_up(
    server: Uvicorn, machine: Machine
) -> None:
    machine.set_used_percent(95)
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
    server.wait_for("resguard: WARNING guard refused 1 request: level;")
    machine.set_used_percent(30)
    server.wait_for("-> OK")
    # the burst's tail is told before the line that ends the episode; never 20 lines, and
    # no summary in between: the app's summary interval outlasts the burst (logged_app)
    assert "at most every 3600s" in server.said("refuse")[0]
    assert len(server.said("refuse")) == 2
    assert "refused 19 requests" in server.said("refuse")[1]
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
    with logged_app(machine, "--log-config", str(page_log_config(tmp_path))) as server:
        machine.set_used_percent(60)
        server.wait_for("resguard: level OK -> WARNING")
        server.wait_for("resguard: reclaim")
    assert server.said("resguard: WARNING") == []  # the default handler stepped aside
    [line] = server.said("level OK -> WARNING")  # once
    assert line.startswith("WARNING:  resguard: level OK -> WARNING")
