"""Fixtures for the docker tests: a real engine and throw-away busybox containers.

The engine and the ``resguard-busybox:latest`` image come from ``.ci/docker-up.sh``. Every
container a test starts runs with ``--network none``, carries the label ``resguard-test=1``
and is removed (forcibly) when the test ends, whatever happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from plugins.integration import unavailable
from support import wait_until

IMAGE = "resguard-busybox:latest"
TEST_LABEL = "resguard-test"

# A shell that keeps *n* KiB of anonymous memory in a variable and then sleeps. ash execs
# the last command of ``sh -c`` in place of itself, so the sleep must not be the last one.
HOLD = "x=$(head -c {kib}k /dev/zero | tr '\\0' a); sleep 100000; echo ${{#x}}"
# Grows by 512 KiB every 0.1 s in separate variables (no copy doubles it), until killed.
GROW = (
    "x=$(head -c 512k /dev/zero | tr '\\0' a); i=0; "
    'while :; do i=$((i+1)); eval "v$i=\\$x"; sleep 0.1; done'
)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A connected ``docker.DockerClient``; skip (or fail in CI) without an engine."""
    try:
        import docker
    except ImportError:
        unavailable("the docker package is not installed (pip install 'resguard[docker]')")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # any failure means: no usable engine here
        unavailable(f"no Docker engine is reachable ({exc}); start one with .ci/docker-up.sh")
    try:
        client.images.get(IMAGE)
    except Exception:
        client.close()
        unavailable(f"image {IMAGE} is missing; .ci/docker-up.sh imports it")
    yield client
    client.close()


class ContainerFactory:
    """Starts labelled test containers and removes them all at teardown."""

    def __init__(self, client: Any, test_name: str) -> None:
        self.client = client
        self.test_name = test_name
        self.started: list[Any] = []

    def __call__(
        self,
        script: str,
        *,
        memory: str | None = None,
        memswap: str | None = None,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        image: str = IMAGE,
    ) -> Any:
        """Run ``sh -c script`` detached; returns the SDK's Container (reloaded)."""
        all_labels = {TEST_LABEL: "1", "resguard-test-name": self.test_name[:200]}
        all_labels.update(labels or {})
        kwargs: dict[str, Any] = {"network_mode": "none", "labels": all_labels, "detach": True}
        if memory is not None:
            kwargs["mem_limit"] = memory
        if memswap is not None:
            kwargs["memswap_limit"] = memswap
        if name is not None:
            kwargs["name"] = name
        container = self.client.containers.run(image, ["sh", "-c", script], **kwargs)
        self.started.append(container)
        container.reload()
        return container

    def remove_all(self) -> None:
        for container in self.started:
            try:
                container.remove(force=True)
            except Exception:  # already gone
                pass
        self.started.clear()


@pytest.fixture
def docker_run(docker_client: Any, request: pytest.FixtureRequest) -> Iterator[ContainerFactory]:
    """``docker_run(script, memory="64m")`` starts a test container, removed afterwards."""
    factory = ContainerFactory(docker_client, request.node.nodeid)
    try:
        yield factory
    finally:
        factory.remove_all()


def wait_for(
    predicate: Callable[[], object],
    *,
    timeout_s: float = 60.0,
    what: str = "condition",
) -> Any:
    """Wait until *predicate* returns something true, and return that (what a test waits
    for is often what it asserts on); fails after *timeout_s* naming *what*."""
    found: list[object] = []

    def check() -> bool:
        value = predicate()
        if value:
            found.append(value)
        return bool(value)

    wait_until(check, timeout_s=timeout_s, what=what)
    return found[0]
