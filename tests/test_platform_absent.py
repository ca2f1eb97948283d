"""Where a platform lacks a Linux-only part (``select.poll``, PSI, ``resource``,
``/proc/self/status``, a cgroup hierarchy), resguard says so once and keeps working on what
it has.
"""

from __future__ import annotations

import logging
import select
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import resguard
from resguard.guard import _self
from resguard.monitor import _loops
from resguard.monitor._events import EventHub
from resguard.profile import _core as profile_core

from support import wait_until

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]


# -- the Monitor without poll or PSI --------------------------------------------------


@pytest.fixture
def unsaid(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if nothing had said "not available" in this process yet."""
    monkeypatch.setattr(_loops, "_said_unavailable", False)


def _unavailable_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if "not available on this platform" in record.getMessage()
    ]


def _run_and_stop_without_poll() -> None:
    monitor = resguard.Monitor("10ms", adaptive=False, reclaim=False)
    with monitor:
        wait_until(lambda: monitor.ticks >= 3, what="three ticks of the fast loop")
    # a long interval: stop() must not wait it out (the stop flag wakes the loop)
    slow = resguard.Monitor("30s", adaptive=False, reclaim=False).start()
    wait_until(lambda: slow.ticks >= 1, what="the first tick")
    started_s = time.monotonic()
    slow.stop()
    assert time.monotonic() - started_s < 5.0
    assert not slow.running


@pytest.mark.usefixtures("unsaid")
def test_the_monitor_runs_and_stops_without_select_poll_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(select, "poll")
    caplog.set_level(logging.INFO, logger="resguard")
    for _ in range(2):
        _run_and_stop_without_poll()
    lines = _unavailable_lines(caplog)
    assert lines == [
        "kernel memory events (PSI triggers, cgroup notifications) are not available on this "
        "platform (this Python has no select.poll); the monitor polls at its paced interval"
    ]


@pytest.mark.usefixtures("unsaid")
def test_no_kernel_event_is_armed_off_linux_and_that_is_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="resguard")
    snap = resguard.testing.make_snapshot()
    monkeypatch.setattr(sys, "platform", "darwin")
    hub = EventHub(lambda source, error: None, lambda source: None, lambda: False)
    for _ in range(2):
        wakeups = _loops.open_wakeups(hub, snap, events=True, psi=True, root=None)
        assert wakeups.events is None
        wakeups.close()
    assert len(_unavailable_lines(caplog)) == 1
    assert "on darwin" in _unavailable_lines(caplog)[0]


def test_a_monitor_of_a_cgroup_off_linux_is_refused_saying_cgroups_are_not_available(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(resguard.InvalidValue, match="cgroups are not available on this platform"):
        resguard.Monitor(cgroup="/sys/fs/cgroup")


# -- limit_self without the resource module --------------------------------------------


@pytest.mark.skipif(resource is None, reason="the resource module is missing here")
def test_limit_self_without_the_resource_module_says_it_is_not_available_and_sets_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = resource.getrlimit(resource.RLIMIT_DATA)
    monkeypatch.setattr(_self, "_resource_module", None)
    with pytest.raises(resguard.InvalidState, match="not available on this platform"):
        resguard.limit_self("2GiB")
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    # the argument is still checked first, in its own words
    with pytest.raises(resguard.InvalidValue, match="kind="):
        resguard.limit_self("2GiB", kind="heap")  # type: ignore[arg-type]


@pytest.mark.skipif(resource is None, reason="the resource module is missing here")
def test_limit_self_refused_by_the_system_is_a_resguard_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Refusing:
        RLIMIT_DATA = resource.RLIMIT_DATA
        RLIMIT_AS = resource.RLIMIT_AS
        RLIM_INFINITY = resource.RLIM_INFINITY

        @staticmethod
        def getrlimit(which: int) -> tuple[int, int]:
            return resource.getrlimit(which)

        @staticmethod
        def setrlimit(which: int, limits: tuple[int, int]) -> None:
            raise ValueError("current limit exceeds maximum limit")

    monkeypatch.setattr(_self, "_resource_module", Refusing)
    with pytest.raises(resguard.InvalidState, match="refused RLIMIT_DATA"):
        resguard.limit_self("2GiB")


# -- the profile's peak without /proc/self/status --------------------------------------


@pytest.mark.skipif(resource is None, reason="the resource module is missing here")
def test_the_peak_rss_comes_from_getrusage_where_proc_self_status_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_proc(path: str, *args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(profile_core, "open", no_proc, raising=False)
    peak = profile_core.read_hwm_bytes()
    assert peak is not None
    assert peak == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # macOS counts ru_maxrss in bytes, not KiB
    monkeypatch.setattr(sys, "platform", "darwin")
    assert profile_core.read_hwm_bytes() == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_the_peak_rss_is_unknown_without_proc_and_without_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_proc(path: str, *args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(profile_core, "open", no_proc, raising=False)
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` raises ImportError
    assert profile_core.read_hwm_bytes() is None


# -- Docker without cgroup files (Docker Desktop's VM) ---------------------------------


@pytest.mark.docker
def test_docker_stats_come_from_the_engine_where_there_are_no_cgroup_files_said_once(
    docker_client: Any, docker_run: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from resguard.docker import Containers, _containers

    from plugins.docker import HOLD

    started = docker_run(HOLD.format(kib=1024), memory="64m")
    caplog.set_level(logging.INFO, logger="resguard")
    missing = tmp_path / "no-cgroups"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_containers, "_said_no_cgroups", False)
        for _ in range(2):
            with Containers(docker_client, cgroup_root=str(missing)) as containers:
                stats = {item.id: item for item in containers.stats()}
            assert stats[started.id].memory_used > 0
        with Containers(docker_client, cgroup_root=str(missing), method="cgroup") as forced:
            with pytest.raises(resguard.DockerError, match="not available on this platform"):
                forced.stats()
    said = [
        record.getMessage()
        for record in caplog.records
        if "container cgroup files are not available on this platform" in record.getMessage()
    ]
    assert len(said) == 1
    assert "using the engine's stats" in said[0]
