"""The acceptance of issue 16's Prometheus part: a real Prometheus (Debian's binary, a
config and a TSDB in a temporary folder, loopback ports, scraping every second) scrapes three
replicas of a guarded uvicorn service (tests/apps/fleet_app.py). One replica runs in a real
memory cgroup and a load client squeezes it — requests that hold memory in it — until its
guard refuses. Prometheus's HTTP API then has resguard's series for all three, the squeezed
replica's refusals rising from a 0 that was there from the first scrape, and its readiness
gauge down while the other two stay ready."""

from __future__ import annotations

import contextlib
import functools
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from plugins.integration import unavailable
from support import Uvicorn, free_port, start_uvicorn, wait_until

TESTS = Path(__file__).resolve().parent
RULES = TESTS.parent / "deploy" / "prometheus" / "resguard-rules.yml"
MIB = 2**20
LIMIT_BYTES = 256 * MIB
REPLICAS = ("squeezed", "calm-1", "calm-2")


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(found).exists():
        unavailable("prometheus is not installed (Debian: apt-get install prometheus)")
    return found


def replica(cgroup: Any | None, critical_percent: str) -> AbstractContextManager[Uvicorn]:
    """A fleet replica under uvicorn, in *cgroup* when one is given, not yet answering:
    CRITICAL at *critical_percent* of the memory it judges by."""
    return start_uvicorn(
        "--app-dir", str(TESTS), "--log-level", "warning", "--no-access-log",
        "--factory", "apps.fleet_app:replica",
        ready=None,
        env={"RESGUARD_FLEET_CRITICAL_PERCENT": critical_percent},
        spawn=subprocess.Popen if cgroup is None else cgroup.spawn,
    )  # fmt: skip


def config(ports: dict[str, int]) -> str:
    targets = "\n".join(
        f"      - targets: ['127.0.0.1:{port}']\n        labels: {{replica: {name}}}"
        for name, port in ports.items()
    )
    return (
        "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: fleet\n"
        "    static_configs:\n"
        f"{targets}\n"
    )


class Fleet:
    """Three replicas and the Prometheus that scrapes them, all on loopback."""

    def __init__(self, prometheus_url: str, replicas: dict[str, str]) -> None:
        self.prometheus_url = prometheus_url
        self.replicas = replicas

    def query(self, promql: str) -> dict[str, float]:
        """An instant query's result, by replica."""
        response = httpx.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10
        )
        response.raise_for_status()
        answer = response.json()
        assert answer["status"] == "success", answer
        return {
            item["metric"].get("replica", ""): float(item["value"][1])
            for item in answer["data"]["result"]
        }


@pytest.fixture
def fleet(memory_cgroup: Any, tmp_path: Path) -> Iterator[Fleet]:
    binary = prometheus_binary()
    memory_cgroup.set_limit(LIMIT_BYTES)
    with contextlib.ExitStack() as stack:
        # CRITICAL at half the squeezed replica's cgroup; the calm ones, wherever this runs (a
        # CI container's own limit), only when nearly full; all three start together
        servers = {
            name: stack.enter_context(
                replica(memory_cgroup, "50") if name == "squeezed" else replica(None, "99.9")
            )
            for name in REPLICAS
        }
        (tmp_path / "prometheus.yml").write_text(
            config({name: server.port for name, server in servers.items()})
        )
        web_port = free_port()
        log = stack.enter_context((tmp_path / "prometheus.log").open("wb"))
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web_port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, prometheus)
        for name, server in servers.items():
            wait_until(
                functools.partial(server.answers, "/livez"),
                timeout_s=30,
                what=f"replica {name} to answer",
            )
        url = f"http://127.0.0.1:{web_port}"
        wait_until(
            lambda: _answers(f"{url}/-/ready", prometheus),
            timeout_s=30,
            what="Prometheus to be ready",
        )
        yield Fleet(url, {name: server.url for name, server in servers.items()})


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, f"{process.args!r} exited with {process.returncode}"
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


def squeeze(url: str) -> int:
    """Hold memory in the replica until its guard refuses; returns the requests refused."""
    refused = 0
    with httpx.Client(base_url=url, timeout=10) as client:

        def refuses() -> bool:
            nonlocal refused
            status = client.get("/hold").status_code
            assert status in (200, 503), status
            refused += status == 503
            return status == 503

        wait_until(refuses, timeout_s=20, what="the squeezed replica to refuse")
        for _ in range(4):  # a few more refusals: the counter rises, never goes back
            refused += client.get("/hold").status_code == 503
    return refused


@pytest.mark.cgroup
@pytest.mark.linux_backend
@pytest.mark.slow
def test_prometheus_sees_three_replicas_and_the_squeezed_one_shedding(fleet: Fleet) -> None:
    ready_query = "resguard_ready"
    refused_query = 'sum by (replica) (resguard_guard_refused_total{reason="level"})'

    # every replica's series are there from the first scrape: ready, refusals at 0
    def all_scraped() -> bool:
        return (
            set(fleet.query(ready_query)) == set(REPLICAS)
            and set(fleet.query(refused_query)) == set(REPLICAS)
            and set(fleet.query("resguard_memory_used_ratio")) == set(REPLICAS)
        )

    wait_until(all_scraped, timeout_s=15, what="Prometheus to scrape all three replicas")
    assert fleet.query(ready_query) == dict.fromkeys(REPLICAS, 1.0)
    assert fleet.query(refused_query) == dict.fromkeys(REPLICAS, 0.0)
    # the squeezed replica judges by its cgroup's limit (the others by wherever they run)
    limits = fleet.query("max by (replica) (resguard_memory_limit_bytes)")
    assert limits["squeezed"] == LIMIT_BYTES
    assert fleet.query('resguard_memory_limit_bytes{replica="squeezed", source="cgroup"}')
    if Path("/proc/pressure/memory").exists():  # PSI's stall counters, node_exporter's names
        stalls = fleet.query("resguard_pressure_memory_waiting_seconds_total")
        assert set(stalls) == set(REPLICAS)

    refused = squeeze(fleet.replicas["squeezed"])
    assert refused >= 1
    assert httpx.get(f"{fleet.replicas['squeezed']}/readyz", timeout=10).status_code == 503

    def seen_shedding() -> bool:
        return fleet.query(refused_query).get("squeezed", 0) >= refused and (
            fleet.query(ready_query).get("squeezed") == 0
        )

    wait_until(seen_shedding, timeout_s=10, what="Prometheus to see the replica shed load")
    assert fleet.query(refused_query) == {"squeezed": refused, "calm-1": 0.0, "calm-2": 0.0}
    assert fleet.query(ready_query) == {"squeezed": 0.0, "calm-1": 1.0, "calm-2": 1.0}
    used = fleet.query("resguard_memory_used_ratio")
    assert used["squeezed"] >= 0.5
    assert fleet.query('resguard_verdict_level{replica="squeezed"}') == {"squeezed": 2.0}
    # the shipped rules loaded into this Prometheus and evaluate without errors
    rules = httpx.get(f"{fleet.prometheus_url}/api/v1/rules", timeout=10).json()
    health = {r["name"]: r["health"] for g in rules["data"]["groups"] for r in g["rules"]}
    shipped = yaml.safe_load(RULES.read_text())["groups"]
    assert set(health) == {rule["alert"] for group in shipped for rule in group["rules"]}
    assert set(health.values()) <= {"ok", "unknown"}, health
