"""Container stats: resguard.docker vs ``docker stats --no-stream`` vs the SDK's loop.

Starts 10 busybox containers (``--network none``, 64 MiB limit, labelled
``resguard-bench=1``) on the local engine from ``.ci/docker-up.sh``, times one stats round
of each way, and removes the containers. Without a reachable engine it adds one row saying
so instead of failing.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

from _harness import Table, Target, per_call_s

CONTAINERS = 10
IMAGE = "resguard-busybox:latest"
LABEL = "resguard-bench"
HOLD = "x=$(head -c 4m /dev/zero | tr '\\0' a); sleep 100000; echo ${#x}"
WHAT = f"stats of {CONTAINERS} running containers"


def _timed(fn: Callable[[], object], rounds: int) -> float:
    """Median seconds of *rounds* calls (for alternatives that take seconds each)."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _connect() -> Any:
    import docker

    client = docker.from_env(timeout=120)
    client.ping()
    client.images.get(IMAGE)
    return client


def run(table: Table) -> None:
    try:
        from resguard.docker import Containers
    except ImportError as exc:
        table.note(WHAT, f"not run: {exc}")
        return
    try:
        client = _connect()
    except Exception as exc:  # no engine, no image: say so, do not fail the whole run
        table.note(
            WHAT,
            f"not run: no Docker engine reachable ({type(exc).__name__}); "
            "start one with .ci/docker-up.sh",
        )
        return
    started = []
    try:
        for index in range(CONTAINERS):
            started.append(
                client.containers.run(
                    IMAGE,
                    ["sh", "-c", HOLD],
                    detach=True,
                    network_mode="none",
                    mem_limit="64m",
                    labels={LABEL: "1"},
                    name=f"resguard-bench-{index}",
                )
            )
        time.sleep(1.0)  # let each shell hold its memory
        fast = Containers(client)
        fast.stats()
        if (
            len([item for item in fast.stats() if item.name.startswith("resguard-bench-")])
            != CONTAINERS
        ):
            table.note(WHAT, "not run: the bench containers did not all start")
            return
        ours_s = per_call_s(fast.stats)
        through_api = Containers(client, method="api")
        through_api.stats()
        api_s = _timed(through_api.stats, 3)

        def sdk_loop() -> None:
            for container in client.containers.list(filters={"label": LABEL}):
                container.stats(stream=False)

        sdk_s = _timed(sdk_loop, 1)
        table.compare(f"{WHAT} (cgroup files)", ours_s, "SDK per-container stats loop", sdk_s)
        table.compare(
            f"{WHAT} (API, concurrent one-shot)", api_s, "SDK per-container stats loop", sdk_s
        )
        cli = shutil.which("docker")
        if cli is None:
            table.note(
                f"{WHAT} (cgroup files)",
                f"{ours_s * 1e3:.2f} ms",
                "docker stats --no-stream",
                "not run: no docker CLI",
            )
        else:

            def docker_stats() -> None:
                subprocess.run(
                    [cli, "stats", "--no-stream"],
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )

            cli_s = _timed(docker_stats, 3)
            table.compare(
                f"{WHAT} (cgroup files)",
                ours_s,
                "docker stats --no-stream",
                cli_s,
                Target.speedup_at_least(20, text="≥ 20× faster"),
            )
        fast.close()
        through_api.close()
    finally:
        for container in started:
            try:
                container.remove(force=True)
            except Exception:
                pass
        client.close()
