"""resguard.docker against a real Docker engine (started by .ci/docker-up.sh).

Tests marked ``docker`` need the engine; the others check the rules and the error boundary
without one (an unreachable socket is real enough to fail on).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

docker_sdk = pytest.importorskip("docker")

import resguard  # noqa: E402
from resguard._modules.faults import FaultLog  # noqa: E402
from resguard.docker import (  # noqa: E402
    ContainerLimits,
    ContainerRef,
    Containers,
    ContainersSource,
    find_duplicates,
)
from resguard.docker._cgroups import CgroupFinder, read_api, read_cgroup  # noqa: E402
from resguard.snapshot import ContainersInfo, ContainerStats  # noqa: E402

from plugins.docker import GROW, HOLD, wait_for  # noqa: E402
from support import wait_until  # noqa: E402

MiB = 1 << 20


def _unreachable(tmp_path: Any) -> Any:
    """A client for a socket that does not exist (the engine down or never installed)."""
    return docker_sdk.DockerClient(
        base_url=f"unix://{tmp_path}/missing/docker.sock", version="1.41", timeout=5
    )


def _engine_used_bytes(client: Any, container_id: str) -> int:
    """What the engine's own stats API reports as used memory, computed like the docker
    CLI: usage minus total_inactive_file (cgroup v1) or inactive_file (v2)."""
    for attempt in range(3):
        try:
            data = client.api.stats(container_id, stream=False, one_shot=True)
            break
        except ValueError:  # a busy engine now and then answers with an empty body
            if attempt == 2:
                raise
    memory = data["memory_stats"]
    stats = memory.get("stats", {})
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return int(memory["usage"] - inactive) if inactive < memory["usage"] else int(memory["usage"])


def _only(items: tuple[ContainerStats, ...], container_id: str) -> ContainerStats | None:
    found = [item for item in items if item.id == container_id]
    return found[0] if found else None


# --------------------------------------------------------------------------------------
# without an engine


def test_bad_arguments_are_named() -> None:
    with pytest.raises(resguard.InvalidValue, match="method='fast'"):
        Containers(method="fast")  # type: ignore[arg-type]
    with pytest.raises(resguard.InvalidValue, match="timeout=0"):
        Containers(timeout=0)
    engine = Containers()
    with pytest.raises(resguard.InvalidValue, match="memory= or memswap="):
        engine.set_limit("web")
    with pytest.raises(resguard.InvalidValue, match="'lots' is not a size"):
        engine.set_limit("web", memory="lots")
    with pytest.raises(resguard.InvalidValue, match="below memory"):
        engine.set_limit("web", memory="2GiB", memswap="1GiB")
    with pytest.raises(resguard.InvalidType, match="not a container"):
        engine.set_limit(42, memory="1GiB")  # type: ignore[arg-type]


def test_engine_down_raises_one_documented_error(tmp_path: Any) -> None:
    engine = Containers(_unreachable(tmp_path))
    calls: list[Callable[[], object]] = [
        engine.stats,
        engine.info,
        engine.limits,
        engine.duplicates,
        lambda: engine.set_limit("web", memory="1GiB", memswap="2GiB"),
        lambda: engine.stop("web"),
    ]
    for call in calls:
        with pytest.raises(resguard.DockerError, match="not reachable") as caught:
            call()
        assert isinstance(caught.value, resguard.IntegrationError)
        assert caught.value.__cause__ is not None  # the SDK's error is kept, not shown


def test_missing_socket_from_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nowhere.sock")
    engine = Containers()  # building it never touches the engine
    with pytest.raises(resguard.DockerError, match="connecting to the Docker engine"):
        engine.stats()


def test_source_fault_is_logged_once(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """What a Monitor does with a failing source: FaultLog logs the fault once."""
    source = Containers(_unreachable(tmp_path)).as_source()
    assert isinstance(source, ContainersSource)
    assert source.name == "containers"
    faults = FaultLog(logging.getLogger("test.monitor"))
    with caplog.at_level(logging.WARNING, logger="test.monitor"):
        for _ in range(5):
            try:
                source.sample()
            except resguard.DockerError as exc:
                faults.failed(source.name, exc)
    assert len(caplog.records) == 1
    assert "containers is failing" in caplog.records[0].getMessage()
    assert "DockerError" in caplog.records[0].getMessage()


def _ref(
    index: int, image: str, project: str | None = None, service: str | None = None
) -> ContainerRef:
    return ContainerRef(
        id=f"id{index}",
        name=f"c{index}",
        image=image,
        image_id="sha:" + image,
        status="running",
        created=float(index),
        compose_project=project,
        compose_service=service,
    )


def test_duplicate_rules() -> None:
    refs = [
        _ref(1, "redis"),
        _ref(2, "redis"),  # same image twice
        _ref(3, "app", "shop", "web"),
        _ref(4, "app", "shop", "worker"),  # one project's own
        _ref(5, "postgres:15", "supabase", "db"),
        _ref(6, "postgres:16", "supabase-old", "db"),  # one service, 2 projects
        _ref(7, "ollama"),
    ]
    groups = {
        (group.reason, group.key): [ref.name for ref in group.containers]
        for group in find_duplicates(refs)
    }
    assert groups == {("image", "redis"): ["c1", "c2"], ("compose service", "db"): ["c5", "c6"]}


_refs = st.lists(
    st.builds(
        _ref,
        st.integers(0, 10**6),
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.none(), st.sampled_from(["p1", "p2"])),
        st.one_of(st.none(), st.sampled_from(["s1", "s2"])),
    ),
    max_size=12,
    unique_by=lambda ref: ref.id,
)


@given(_refs)
def test_duplicates_properties(refs: list[ContainerRef]) -> None:
    groups = find_duplicates(refs)
    for group in groups:
        assert len(group.containers) >= 2
        created = [ref.created for ref in group.containers]
        assert created == sorted(created)
        if group.reason == "image":
            assert len({ref.image_id for ref in group.containers}) == 1
            owners = {ref.compose_project or ref.id for ref in group.containers}
            assert len(owners) >= 2  # never one compose project's own containers
        else:
            assert len({ref.compose_project for ref in group.containers}) >= 2
    # Every pair of containers of one image with different owners is reported.
    grouped = [{ref.id for ref in group.containers} for group in groups]
    for first in refs:
        for second in refs:
            if (
                first.id != second.id
                and first.image_id == second.image_id
                and (
                    first.compose_project is None or first.compose_project != second.compose_project
                )
            ):
                assert any({first.id, second.id} <= ids for ids in grouped)


# --------------------------------------------------------------------------------------
# against the real engine


@pytest.fixture
def engine(docker_client: Any) -> Any:
    with Containers(docker_client) as containers:
        yield containers


def _require_local_cgroups(docker_client: Any, container_id: str) -> None:
    try:
        Containers(docker_client, method="cgroup").stats()
    except resguard.DockerError as exc:
        from plugins.integration import unavailable

        unavailable(f"the engine's cgroups are not on this machine ({exc})")


@pytest.mark.docker
@pytest.mark.slow
def test_stats_agree_with_the_engine_for_1_16_48_mb(
    docker_client: Any, docker_run: Any, engine: Containers
) -> None:
    sizes_mb = (1, 16, 48)
    started = {size: docker_run(HOLD.format(kib=size * 1024), memory="128m") for size in sizes_mb}
    _require_local_cgroups(docker_client, started[1].id)
    for size, container in started.items():  # wait until each holds its memory, settled
        wait_for(
            functools.partial(_settled, engine, container.id, size * MiB),
            what=f"{size} MB allocated and head/tr gone",
        )
    api_path = Containers(docker_client, method="api")
    for size, container in started.items():
        # The kernel charges memory to a cgroup in per-CPU batches of up to 64 pages, so a
        # 1 MB container's usage moves by a few hundred KB between any two reads. Compare
        # the engine's read with ours just before and after it, a few times: a systematic
        # difference (the wrong inactive-file rule, a wrong cgroup) fails every time.
        ours = _agree(
            lambda c=container: _engine_used_bytes(docker_client, c.id),
            engine,
            container.id,
            f"{size} MB vs the engine's stats API",
        )
        assert ours.memory_used <= ours.memory_usage
        assert ours.memory_limit == 128 * MiB
        assert ours.memory_percent == pytest.approx(ours.memory_used / (128 * MiB) * 100)
        assert ours.pids is not None
        assert ours.pids >= 1
        assert ours.name == container.name
        assert ours.image.startswith("resguard-busybox")
        assert ours.status == "running"
        # The API path gives the same numbers as the cgroup path.
        through_api = _only(api_path.stats(), container.id)
        assert through_api is not None
        _agree(
            lambda c=container: (_only(api_path.stats(), c.id) or _never()).memory_used,
            engine,
            container.id,
            f"{size} MB, cgroup path vs API path",
        )
        assert through_api.memory_limit == ours.memory_limit
        assert through_api.pids == ours.pids
    api_path.close()


def _agree(theirs_bytes: Any, engine: Containers, container_id: str, what: str) -> ContainerStats:
    """Assert *theirs_bytes()* is within 5 % of our read just before or after it, in one of
    ten tries; return our last stats of the container."""
    misses = []
    for _ in range(10):
        before = _only(engine.stats(), container_id) or _never()
        theirs = theirs_bytes()
        after = _only(engine.stats(), container_id) or _never()
        closest = min(before.memory_used, after.memory_used, key=lambda v: abs(v - theirs))
        if closest == pytest.approx(theirs, rel=0.05):
            return after
        misses.append((before.memory_used, theirs, after.memory_used))
    pytest.fail(f"{what}: (ours before, theirs, ours after) = {misses}")


def _settled(engine: Containers, container_id: str, at_least_bytes: int) -> bool:
    """The shell holds its string and only it and its sleep are left (pids == 2)."""
    stats = _only(engine.stats(), container_id) or _never()
    return stats.memory_used >= at_least_bytes and stats.pids == 2


def _never() -> Any:
    raise AssertionError("the container is not running any more")


@pytest.mark.docker
def test_unlimited_container_has_no_limit_and_no_percent(
    docker_run: Any, engine: Containers
) -> None:
    container = docker_run(HOLD.format(kib=64))
    stats = wait_for(lambda: _only(engine.stats(), container.id), what="stats")
    assert stats.memory_limit is None
    assert stats.memory_percent is None
    assert [item.id for item in engine.limits()].count(container.id) == 1


@pytest.mark.docker
def test_cpu_percent_between_two_calls(docker_run: Any, engine: Containers) -> None:
    busy = docker_run("while :; do :; done")
    idle = docker_run("sleep 100000; true")
    first = engine.stats()
    assert _only(first, busy.id) is not None
    assert _only(first, busy.id).cpu_percent is None  # type: ignore[union-attr]
    time.sleep(1.0)  # CPU time needs real time to pass
    second = engine.stats()
    busy_stats, idle_stats = _only(second, busy.id), _only(second, idle.id)
    assert busy_stats is not None
    assert idle_stats is not None
    assert busy_stats.cpu_percent is not None
    assert idle_stats.cpu_percent is not None
    assert busy_stats.cpu_percent > 20.0  # about 100 on an idle machine
    assert idle_stats.cpu_percent < busy_stats.cpu_percent
    assert idle_stats.cpu_percent < 10.0


@pytest.mark.docker
def test_set_limit_changes_what_inspect_reports(
    docker_client: Any, docker_run: Any, engine: Containers
) -> None:
    limited = docker_run(HOLD.format(kib=64), memory="64m")  # swap allowance: 64m
    unlimited = docker_run(HOLD.format(kib=64))

    def inspect(container: Any) -> tuple[int, int]:
        host = docker_client.api.inspect_container(container.id)["HostConfig"]
        return host["Memory"], host["MemorySwap"]

    assert inspect(limited) == (64 * MiB, 128 * MiB)
    after = engine.set_limit(limited.name, memory="256MiB")
    assert isinstance(after, ContainerLimits)
    # docker update --memory 256m alone would fail (above the old memswap); the swap
    # allowance of 64 MiB is kept instead.
    assert inspect(limited) == (256 * MiB, 320 * MiB)
    assert (after.memory_limit, after.memswap_limit) == (256 * MiB, 320 * MiB)
    engine.set_limit(after, memory="96MiB", memswap="96MiB")
    assert inspect(limited) == (96 * MiB, 96 * MiB)
    stats = _only(engine.stats(), limited.id)
    assert stats is not None
    assert stats.memory_limit == 96 * MiB

    assert unlimited.id in [item.id for item in engine.limits()]
    assert limited.id not in [item.id for item in engine.limits()]
    assert {limited.id, unlimited.id} <= {item.id for item in engine.limits(all=True)}
    engine.set_limit(unlimited.id, memory="2GiB")  # `docker update --memory 2g` fails here
    assert inspect(unlimited) == (2 << 30, -1)
    engine.set_limit(unlimited.id, memory="1GiB", memswap="unlimited")
    assert inspect(unlimited) == (1 << 30, -1)
    engine.set_limit(unlimited.id, memswap="1536MiB")
    assert inspect(unlimited) == (1 << 30, 1536 * MiB)
    assert unlimited.id not in [item.id for item in engine.limits()]

    with pytest.raises(resguard.DockerError, match="no such container"):
        engine.set_limit("resguard-test-no-such-container", memory="1GiB", memswap="2GiB")
    with pytest.raises(resguard.DockerError, match="refused"):
        engine.set_limit(limited, memory="1MiB", memswap="1MiB")  # below docker's minimum


@pytest.mark.docker
@pytest.mark.slow
def test_container_past_its_limit_shows_above_90_percent_before_it_is_killed(
    docker_client: Any, docker_run: Any, engine: Containers
) -> None:
    container = docker_run(GROW, memory="32m", memswap="32m")
    highest: list[float] = [0.0]

    def killed() -> bool:
        stats = _only(engine.stats(), container.id)
        if stats is None:
            return True
        assert stats.memory_percent is not None
        highest.append(stats.memory_percent)
        return False

    wait_until(killed, timeout_s=120, what="the growing container to be killed")
    assert max(highest) > 90.0
    state = wait_for(lambda: _exited(docker_client, container.id), what="exit state")
    assert state["OOMKilled"] is True or state["ExitCode"] == 137


def _exited(client: Any, container_id: str) -> dict[str, Any] | None:
    state: dict[str, Any] = client.api.inspect_container(container_id)["State"]
    return state if state["Status"] == "exited" else None


@pytest.mark.docker
def test_duplicates_finds_two_containers_from_one_image(
    docker_run: Any, engine: Containers
) -> None:
    first = docker_run(HOLD.format(kib=16))
    second = docker_run(HOLD.format(kib=16))
    one = docker_run(
        HOLD.format(kib=16),
        labels={"com.docker.compose.project": "rgtest-a", "com.docker.compose.service": "cache"},
    )
    other = docker_run(
        HOLD.format(kib=16),
        labels={"com.docker.compose.project": "rgtest-b", "com.docker.compose.service": "cache"},
    )
    groups = engine.duplicates()
    ours = {first.id, second.id, one.id, other.id}
    image_groups = [
        group
        for group in groups
        if group.reason == "image" and {first.id, second.id} <= {ref.id for ref in group.containers}
    ]
    assert len(image_groups) == 1
    assert image_groups[0].containers[0].created <= image_groups[0].containers[-1].created
    named = {ref.id: ref for ref in image_groups[0].containers}
    assert named[first.id].name == first.name
    assert ours <= set(named)  # two compose projects are two owners of the same image
    # Reporting stops nothing.
    assert {item.id for item in engine.stats()} >= ours


@pytest.mark.docker
def test_duplicate_compose_service_under_two_projects(
    docker_client: Any, docker_run: Any, engine: Containers
) -> None:
    labels = {"com.docker.compose.service": "rgtest-db"}
    one = docker_run(
        HOLD.format(kib=16), labels={**labels, "com.docker.compose.project": "rgtest-a"}
    )
    other = docker_run(
        HOLD.format(kib=16), labels={**labels, "com.docker.compose.project": "rgtest-b"}
    )
    groups = [
        group
        for group in engine.duplicates()
        if group.reason == "compose service" and group.key == "rgtest-db"
    ]
    assert len(groups) == 1
    assert {ref.id for ref in groups[0].containers} == {one.id, other.id}
    assert {ref.compose_project for ref in groups[0].containers} == {"rgtest-a", "rgtest-b"}
    engine.stop(other, timeout=0)
    assert docker_client.api.inspect_container(other.id)["State"]["Running"] is False
    assert not [group for group in engine.duplicates() if group.key == "rgtest-db"]


@pytest.mark.docker
def test_source_gives_the_judge_layer_totals(docker_run: Any, engine: Containers) -> None:
    small = docker_run(HOLD.format(kib=2048), memory="64m")
    big = docker_run(HOLD.format(kib=8192), memory="32m")
    wait_for(
        lambda: (_only(engine.stats(), big.id) or _never()).memory_used >= 8 * MiB,
        what="8 MB allocated",
    )
    sample = engine.as_source().sample()
    info = sample["containers"]
    assert isinstance(info, ContainersInfo)
    assert info.memory.total == sum(item.memory_used for item in info.items)
    mine = {item.id: item for item in info.items if item.id in (small.id, big.id)}
    assert len(mine) == 2
    assert info.memory.max_percent is not None
    assert info.memory.max_percent >= mine[big.id].memory_percent  # type: ignore[operator]
    assert mine[big.id].memory_percent > 20  # type: ignore[operator]
    assert json.loads(json.dumps(info.to_dict()))["memory"]["total"] == info.memory.total


@pytest.mark.docker
def test_source_recovers_when_the_engine_comes_back(
    docker_client: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    base_url = docker_client.api.base_url
    socket_path = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not socket_path.startswith("unix://") or not os.path.exists(socket_path[7:]):
        from plugins.integration import unavailable

        unavailable(f"the engine is not on a local unix socket ({base_url})")
    link = tmp_path / "docker.sock"
    client = docker_sdk.DockerClient(base_url=f"unix://{link}", version="1.41", timeout=10)
    source = Containers(client).as_source()
    faults = FaultLog(logging.getLogger("test.monitor"))
    with caplog.at_level(logging.WARNING, logger="test.monitor"):
        for tick in range(6):
            if tick == 3:
                link.symlink_to(socket_path[7:])  # the engine "comes back"
            try:
                sample = source.sample()
            except resguard.DockerError as exc:
                faults.failed(source.name, exc)
            else:
                faults.recovered(source.name)
                assert isinstance(sample["containers"], ContainersInfo)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "is failing" in messages[0]
    assert "works again" in messages[1]
    client.close()


def _monitor_module() -> Any:
    from resguard import monitor, rules  # part of resguard: an ImportError is a failure

    return monitor, rules


def test_monitor_keeps_running_and_reports_the_fault_once(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    monitor, rules = _monitor_module()
    policy = rules.Policy([rules.Threshold("containers.memory.total", ">", "5GB")])
    source = Containers(_unreachable(tmp_path)).as_source()
    mon = monitor.Monitor(policy=policy, sources=[source], reclaim=False, psi_trigger=False)
    with caplog.at_level(logging.WARNING, logger="resguard"):
        for _ in range(4):
            mon.sample_slow()
            state = mon.sample_now()
    assert state.snapshot.containers is None
    assert state.verdict.level == rules.Level.OK
    assert list(mon.faults) == ["containers"]
    failing = [
        record for record in caplog.records if "containers is failing" in record.getMessage()
    ]
    assert len(failing) == 1


@pytest.mark.docker
def test_monitor_judges_containers_with_a_policy(docker_run: Any, docker_client: Any) -> None:
    monitor, rules = _monitor_module()
    container = docker_run(HOLD.format(kib=8192), memory="32m")  # reading it peaks higher
    engine = Containers(docker_client)
    wait_for(
        lambda: (_only(engine.stats(), container.id) or _never()).memory_used >= 8 * MiB,
        what="8 MB allocated",
    )
    policy = rules.Policy(
        [
            rules.Threshold("containers.memory.total", ">", "5GB", level="CRITICAL"),
            rules.Threshold("containers.memory.max_percent", ">", 20, level="WARNING"),
        ]
    )
    mon = monitor.Monitor(
        policy=policy, sources=[engine.as_source()], reclaim=False, psi_trigger=False
    )
    mon.sample_slow()
    state = mon.sample_now()
    assert state.snapshot.containers is not None
    assert container.id in [item.id for item in state.snapshot.containers.items]
    assert state.verdict.level == rules.Level.WARNING
    assert [breach.metric for breach in state.verdict.breaches] == ["containers.memory.max_percent"]
    assert mon.faults == {}
    engine.close()


def _write(path: Any, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("relative", ["system.slice/docker-{id}.scope", "docker/{id}"])
def test_cgroup_v2_layouts_are_found(tmp_path: Any, relative: str) -> None:
    """The v2 layouts of the systemd and cgroupfs drivers (this CI host runs v1)."""
    container_id = "ab" * 32
    _write(tmp_path / "cgroup.controllers", "cpuset cpu io memory pids\n")
    base = tmp_path / relative.format(id=container_id)
    _write(base / "memory.current", f"{40 * MiB}\n")
    _write(base / "memory.max", f"{64 * MiB}\n")
    _write(base / "memory.high", "max\n")
    _write(base / "memory.stat", f"anon {30 * MiB}\nfile {10 * MiB}\ninactive_file {8 * MiB}\n")
    _write(base / "cpu.stat", "usage_usec 2500000\nuser_usec 2000000\n")
    _write(base / "pids.current", "3\n")
    finder = CgroupFinder(str(tmp_path))
    dirs = finder.find(container_id)
    assert dirs is not None
    assert dirs.version == "v2"
    assert finder.find("cd" * 32) is None
    reading = read_cgroup(dirs, host_total=1 << 34)
    assert reading is not None
    assert (reading.memory_usage, reading.memory_used) == (40 * MiB, 32 * MiB)
    assert reading.memory_limit == 64 * MiB
    assert (reading.cpu_ns, reading.pids) == (2_500_000_000, 3)
    _write(base / "memory.max", "max\n")
    assert read_cgroup(dirs, host_total=1 << 34).memory_limit is None  # type: ignore[union-attr]


def test_cgroup_v1_systemd_layout_with_joined_cpu_controllers(tmp_path: Any) -> None:
    container_id = "ef" * 32
    relative = f"system.slice/docker-{container_id}.scope"
    for controller in ("memory", "cpu,cpuacct", "pids"):
        _write(tmp_path / controller / "cgroup.procs", "")
    memory = tmp_path / "memory" / relative
    _write(memory / "memory.usage_in_bytes", f"{20 * MiB}\n")
    _write(memory / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    _write(memory / "memory.stat", f"inactive_file {1 * MiB}\ntotal_inactive_file {4 * MiB}\n")
    _write(tmp_path / "cpu,cpuacct" / relative / "cpuacct.usage", "123456789\n")
    _write(tmp_path / "pids" / relative / "pids.current", "7\n")
    dirs = CgroupFinder(str(tmp_path)).find(container_id)
    assert dirs is not None
    assert dirs.version == "v1"
    reading = read_cgroup(dirs, host_total=1 << 34)
    assert reading is not None
    assert reading.memory_used == 16 * MiB  # hierarchical total_inactive_file, like docker
    assert reading.memory_limit is None
    assert (reading.cpu_ns, reading.pids) == (123456789, 7)


def test_no_cgroup_filesystem_means_the_api_path(tmp_path: Any) -> None:
    assert CgroupFinder(str(tmp_path / "absent")).find("ab" * 32) is None


def test_api_answers_of_both_cgroup_versions() -> None:
    host = 16 << 30
    v2 = {
        "memory_stats": {
            "usage": 50 * MiB,
            "limit": host,
            "stats": {"inactive_file": 5 * MiB, "anon": 40 * MiB},
        },
        "cpu_stats": {"cpu_usage": {"total_usage": 10**9}},
        "pids_stats": {"current": 4},
    }
    reading = read_api(v2, host)
    assert reading is not None
    assert (reading.memory_used, reading.memory_limit) == (45 * MiB, None)  # host = no limit
    assert (reading.cpu_ns, reading.pids) == (10**9, 4)
    v1 = {
        "memory_stats": {
            "usage": 50 * MiB,
            "limit": 64 * MiB,
            "stats": {"inactive_file": 1 * MiB, "total_inactive_file": 6 * MiB},
        }
    }
    reading = read_api(v1, host)
    assert reading is not None
    assert (reading.memory_used, reading.memory_limit) == (44 * MiB, 64 * MiB)
    assert (reading.cpu_ns, reading.pids) == (None, None)
    assert read_api({"memory_stats": {}}, host) is None  # a container that just stopped


# --------------------------------------------------------------------------------------
# a dead or hung engine: every call ends within its deadline


def _dead_engines(tmp_path: Any) -> dict[str, str]:
    """Addresses where no engine answers: a missing socket, a socket file nobody listens
    on, and a TCP port that refuses."""
    from support import free_port

    stale = tmp_path / "stale.sock"
    import socket as _socket

    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    listener.bind(str(stale))
    listener.close()  # the file stays, nothing listens: connect() is refused
    return {
        "missing": f"unix://{tmp_path}/missing/docker.sock",
        "stale": f"unix://{stale}",
        "refused": f"tcp://127.0.0.1:{free_port()}",
    }


def _every_call_times_out(engine: Containers, timeout_s: float) -> None:
    """Each public call fails as "did not answer in time", within its deadline + 1 s."""
    for name, call in _calls(engine).items():
        started = time.monotonic()
        with pytest.raises(resguard.DockerError, match="did not answer in time"):
            call()
        elapsed = time.monotonic() - started
        assert elapsed < timeout_s + 1, f"{name} took {elapsed:.1f} s"


def _calls(engine: Containers) -> dict[str, Any]:
    return {
        "stats": engine.stats,
        "info": engine.info,
        "limits": engine.limits,
        "duplicates": engine.duplicates,
        "set_limit": lambda: engine.set_limit("web", memory="1GiB"),
        "stop": lambda: engine.stop("web", timeout=0),
        "source": engine.as_source().sample,
    }


@pytest.mark.parametrize("where", ["missing", "stale", "refused"])
def test_a_dead_engine_fails_every_call_with_docker_error_at_once(
    tmp_path: Any, where: str
) -> None:
    url = _dead_engines(tmp_path)[where]
    with Containers(base_url=url, timeout=1) as engine:
        messages = set()
        for name, call in _calls(engine).items():
            started = time.monotonic()
            with pytest.raises(resguard.DockerError, match="not reachable") as caught:
                call()
            assert time.monotonic() - started < 1 + 1, name
            messages.add(str(caught.value).split(": ", 1)[1])
        # one fault reads the same on every call (no object addresses): logged once
        assert len(messages) == 1, messages


def test_an_engine_that_accepts_but_never_answers_fails_within_the_timeout(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resguard.testing.misbehaving import MisbehavingServer

    path = str(tmp_path / "hung.sock")
    with MisbehavingServer("hang", unix_path=path):
        for engine in (
            Containers(base_url=f"unix://{path}", timeout=0.5),
            _from_environment(monkeypatch, f"unix://{path}"),
        ):
            with engine:
                _every_call_times_out(engine, 0.5)


def _from_environment(monkeypatch: pytest.MonkeyPatch, url: str) -> Containers:
    monkeypatch.setenv("DOCKER_HOST", url)
    return Containers(timeout=0.5)


def test_monitor_source_of_a_hung_engine_is_none_with_one_warning(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    monitor, _ = _monitor_module()
    from resguard.testing.misbehaving import MisbehavingServer

    path = str(tmp_path / "hung.sock")
    with (
        MisbehavingServer("hang", unix_path=path),
        Containers(base_url=f"unix://{path}", timeout=0.5) as engine,
    ):
        mon = monitor.Monitor(sources=[engine.as_source()], reclaim=False, psi_trigger=False)
        with caplog.at_level(logging.WARNING, logger="resguard"):
            for _ in range(3):
                started = time.monotonic()
                mon.sample_slow()
                assert time.monotonic() - started < 0.5 + 1
                assert mon.sample_now().snapshot.containers is None
    failing = [r for r in caplog.records if "containers is failing" in r.getMessage()]
    assert len(failing) == 1


def test_refused_tcp_engine_is_logged_once_by_the_monitor(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    monitor, _ = _monitor_module()
    engine = Containers(base_url=_dead_engines(tmp_path)["refused"], timeout=1)
    mon = monitor.Monitor(sources=[engine.as_source()], reclaim=False, psi_trigger=False)
    with caplog.at_level(logging.WARNING, logger="resguard"):
        for _ in range(4):
            mon.sample_slow()
    failing = [r for r in caplog.records if "containers is failing" in r.getMessage()]
    assert len(failing) == 1
    assert "0x" not in failing[0].getMessage()
    engine.close()


# --------------------------------------------------------------------------------------
# sizes as Docker reads them (go-units RAMInBytes), arguments

from resguard.docker import docker_bytes  # noqa: E402

_DOCKER_MULTIPLIERS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "p": 1 << 50,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MB", 512 * MiB),
        ("512mb", 512 * MiB),
        ("512m", 512 * MiB),
        ("512M", 512 * MiB),
        ("512MiB", 512 * MiB),
        ("512 MB", 512 * MiB),
        ("2g", 2 << 30),
        ("2GB", 2 << 30),
        ("1k", 1024),
        ("1kb", 1024),
        ("1KiB", 1024),
        ("100", 100),
        ("100b", 100),
        ("0.5k", 512),
        ("1.5", 1),
        ("1.5m", 1572864),
        (".5g", 1 << 29),
        ("1t", 1 << 40),
    ],
)
def test_set_limit_sizes_are_read_as_docker_reads_them(text: str, expected: int) -> None:
    assert docker_bytes(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "512 MiB ",
        "",
        "m",
        "-1m",
        "1e3",
        "1mm",
        "1mbb",
        "1ki",
        "1 2",
        "1EiB",
        "1%",
        "1  m",
        "nan",
        "0x10",
    ],
)
def test_sizes_docker_would_refuse_are_refused_quoting_the_value(text: str) -> None:
    with pytest.raises(resguard.InvalidValue) as caught:
        docker_bytes(text, "memory")
    assert repr(text) in str(caught.value)


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(sorted(_DOCKER_MULTIPLIERS)),
    st.sampled_from(["", "b", "ib"]),
    st.booleans(),
    st.booleans(),
)
def test_docker_sizes_are_binary_and_case_insensitive(
    number: int, prefix: str, suffix: str, upper: bool, space: bool
) -> None:
    if prefix in ("", "b") and suffix:
        return  # "bb", "bib", "ib" are not units
    unit = prefix + suffix
    text = f"{number}{' ' if space else ''}{unit.upper() if upper else unit}"
    assert docker_bytes(text) == number * _DOCKER_MULTIPLIERS[prefix]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout": float("nan")}, resguard.InvalidValue),
        ({"timeout": float("inf")}, resguard.InvalidValue),
        ({"timeout": -1}, resguard.InvalidValue),
        ({"timeout": True}, resguard.InvalidType),
        ({"timeout": "soon"}, resguard.InvalidValue),
        ({"max_workers": 0}, resguard.InvalidValue),
        ({"max_workers": 2.5}, resguard.InvalidType),
        ({"max_workers": True}, resguard.InvalidType),
        ({"method": ["api"]}, resguard.InvalidValue),
        ({"cgroup_root": 5}, resguard.InvalidType),
        ({"clock": 5}, resguard.InvalidType),
        ({"client": "unix:///x"}, resguard.InvalidType),
        ({"base_url": ""}, resguard.InvalidValue),
        ({"base_url": 5}, resguard.InvalidValue),
    ],
)
def test_containers_arguments_are_checked(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error) as caught:
        Containers(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(caught.value)


def test_set_limit_and_stop_check_their_arguments_before_the_engine() -> None:
    engine = Containers(base_url="unix:///nonexistent/docker.sock")
    bad: Any
    for bad, error in (
        (True, resguard.InvalidType),
        ([1], resguard.InvalidType),
        (float("nan"), resguard.InvalidValue),
        (-5, resguard.InvalidValue),
        ("512 MB of RAM", resguard.InvalidValue),
    ):
        with pytest.raises(error):
            engine.set_limit("web", memory=bad)
        with pytest.raises(error):
            engine.set_limit("web", memory="1g", memswap=bad)
    bad_timeout: Any
    for bad_timeout in (float("nan"), -1, "x", True):
        with pytest.raises((resguard.InvalidValue, resguard.InvalidType)):
            engine.stop("web", timeout=bad_timeout)
    for bad_timeout in (float("nan"), -1, "x", None):
        with (
            pytest.warns(DeprecationWarning, match="timeout_s"),
            pytest.raises((resguard.InvalidValue, resguard.InvalidType)),
        ):
            engine.stop("web", timeout_s=bad_timeout)


@pytest.mark.docker
def test_set_limit_512mb_sets_what_docker_update_would(
    docker_client: Any, docker_run: Any, engine: Containers
) -> None:
    container = docker_run(HOLD.format(kib=64), memory="64m")
    after = engine.set_limit(container.id, memory="512MB")
    host = docker_client.api.inspect_container(container.id)["HostConfig"]
    assert host["Memory"] == 536870912  # docker update --memory 512MB: 512 MiB
    assert after.memory_limit == 536870912
    engine.set_limit(container.id, memory="256m", memswap="1g")
    host = docker_client.api.inspect_container(container.id)["HostConfig"]
    assert (host["Memory"], host["MemorySwap"]) == (256 * MiB, 1 << 30)


@given(
    value=st.text(max_size=12)
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.none()
    | st.booleans()
    | st.sampled_from([10**400, "1e999", [1], b"1"])
)
def test_hostile_sizes_and_timeouts_give_only_documented_errors(value: Any) -> None:
    try:
        size = docker_bytes(value)
    except (resguard.InvalidValue, resguard.InvalidType):
        pass
    else:
        assert isinstance(size, int)
        assert size >= 0
    try:
        Containers(timeout=value)
    except (resguard.InvalidValue, resguard.InvalidType):
        pass


@pytest.mark.parametrize("mode", ["drip", "drip_headers"])
def test_an_engine_that_drips_its_answer_fails_within_the_timeout(tmp_path: Any, mode: str) -> None:
    """A socket read timeout restarts at every byte: a server that sends one byte every
    0.1 s kept `resguard docker stats` busy for ever. The deadline covers the whole answer."""
    from resguard.testing.misbehaving import MisbehavingServer

    path = str(tmp_path / f"{mode}.sock")
    with (
        MisbehavingServer(mode, unix_path=path, interval_s=0.1),
        Containers(base_url=f"unix://{path}", timeout=0.5) as engine,
    ):
        _every_call_times_out(engine, 0.5)


def test_a_dripping_engine_does_not_pile_up_request_threads(tmp_path: Any) -> None:
    """A request past its deadline is abandoned in its thread; while it is still stuck, the
    next calls fail at once instead of leaving one more stuck thread each (a Monitor
    samples a dripping engine every few seconds)."""
    from resguard.testing.misbehaving import MisbehavingServer

    path = str(tmp_path / "drip.sock")
    with (
        MisbehavingServer("drip", unix_path=path, interval_s=0.1),
        Containers(base_url=f"unix://{path}", timeout=0.3) as engine,
    ):
        for _ in range(5):
            with pytest.raises(resguard.DockerError, match="did not answer in time"):
                engine.stats()
        stuck = [
            thread for thread in threading.enumerate() if thread.name == "resguard-docker-request"
        ]
        assert len(stuck) <= 1


def test_a_docker_host_with_a_bad_port_is_not_called_an_answer_that_is_not_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DOCKER_HOST=tcp://127.0.0.1:99999 fails before anything is sent; the message said
    "the Docker engine's answer was not JSON (Port out of range 0-65535)"."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:99999")
    with Containers(timeout=1) as engine, pytest.raises(resguard.DockerError) as caught:
        engine.stats()
    assert "not JSON" not in str(caught.value)
    assert "Port out of range" in str(caught.value)


def test_the_old_timeout_s_keyword_still_works_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match=r"Containers\(timeout_s=...\) is deprecated"):
        engine = Containers(base_url="unix:///nonexistent/docker.sock", timeout_s=2)
    with (
        pytest.warns(DeprecationWarning, match="timeout_s"),
        pytest.raises(resguard.InvalidValue, match="timeout_s=0"),
    ):
        Containers(timeout_s=0)  # the error names the keyword as typed
    with pytest.raises(resguard.InvalidValue, match="both given"):
        Containers(timeout="1s", timeout_s=1)
    with (
        pytest.warns(DeprecationWarning, match=r"Containers.stop\(timeout_s=...\)"),
        pytest.raises(resguard.DockerError, match="not reachable"),
    ):
        engine.stop("web", timeout_s=0)
    assert Containers(timeout="250ms") is not None  # a duration, like every timeout=


def test_resguard_docker_keeps_no_presentation_and_its_cli_moved() -> None:
    import resguard.cli.docker
    import resguard.docker

    with pytest.warns(DeprecationWarning, match="resguard.cli.docker"):
        moved = resguard.docker.cli
    assert moved is resguard.cli.docker.cli
    for name in ("Containers", "ContainersSource", "ContainerRef", "docker_bytes"):
        assert getattr(resguard.docker, name).__module__ == "resguard.docker"
