"""cgroup parsing on fixture trees (v2 and v1 layouts this machine may not have)."""

from __future__ import annotations

from pathlib import Path

import pytest

from resguard._probes import cgroup
from resguard.snapshot import Sampler
from resguard.testing import Roots

GiB = 2**30
V1_UNLIMITED = "9223372036854771712"


def write_tree(root: Path, files: dict[str, str]) -> Roots:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return Roots(proc=str(root / "proc"), cgroup=str(root / "cgroup"))


def meminfo(total_gib: int = 16, available_gib: int = 12) -> str:
    return (
        f"MemTotal:       {total_gib * 1024 * 1024} kB\n"
        f"MemFree:        {available_gib * 1024 * 1024} kB\n"
        f"MemAvailable:   {available_gib * 1024 * 1024} kB\n"
        "SwapTotal:             0 kB\nSwapFree:              0 kB\n"
    )


def v2_tree(tmp_path: Path, levels: dict[str, dict[str, str]], own: str = "/a/b/c") -> Roots:
    files = {
        "proc/self/cgroup": f"0::{own}\n",
        "proc/meminfo": meminfo(),
        "cgroup/cgroup.controllers": "cpu io memory pids\n",
    }
    for directory, content in levels.items():
        for name, value in content.items():
            files[f"cgroup{directory}/{name}"] = value
    return write_tree(tmp_path, files)


def level(
    max_: str = "max",
    high: str = "max",
    current: int = GiB // 2,
    inactive_file: int = 0,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    return {
        "memory.max": max_ + "\n",
        "memory.high": high + "\n",
        "memory.current": f"{current}\n",
        "memory.stat": f"anon 1\nfile 2\ninactive_file {inactive_file}\nactive_file 5\n",
        **(extra or {}),
    }


def test_v2_max_everywhere_means_the_host_binds(tmp_path: Path) -> None:
    roots = v2_tree(tmp_path, {"/a": level(), "/a/b": level(), "/a/b/c": level()})
    snap = Sampler(roots).sample(children=False)
    assert snap.memory.source == "host"
    assert snap.memory.limit == 16 * GiB
    assert snap.memory.used == 4 * GiB  # total minus MemAvailable
    assert snap.memory.cgroup == "/a/b/c"


def test_v2_limit_in_the_middle_binds_and_used_is_its_working_set(tmp_path: Path) -> None:
    roots = v2_tree(
        tmp_path,
        {
            "/a": level(),
            "/a/b": level(max_=str(2 * GiB), current=GiB, inactive_file=GiB // 4),
            "/a/b/c": level(current=GiB // 2),
        },
    )
    snap = Sampler(roots).sample(children=False)
    assert snap.memory.source == "cgroup"
    assert snap.memory.limit == 2 * GiB
    assert snap.memory.source_detail.endswith("/a/b/memory.max")
    assert snap.memory.used == GiB - GiB // 4  # working set: usage minus inactive file
    assert snap.memory.available == 2 * GiB - (GiB - GiB // 4)
    assert snap.memory.percent == pytest.approx(37.5)


def test_v2_memory_high_counts_as_a_limit(tmp_path: Path) -> None:
    roots = v2_tree(
        tmp_path,
        {"/a": level(max_=str(4 * GiB)), "/a/b": level(), "/a/b/c": level(high=str(3 * GiB))},
    )
    snap = Sampler(roots).sample(children=False)
    assert snap.memory.limit == 3 * GiB
    assert snap.memory.source_detail.endswith("/a/b/c/memory.high")


def test_v2_protections_are_never_limits(tmp_path: Path) -> None:
    roots = v2_tree(
        tmp_path,
        {
            "/a": level(),
            "/a/b": level(),
            "/a/b/c": level(extra={"memory.low": str(GiB), "memory.min": str(GiB)}),
        },
    )
    snap = Sampler(roots).sample(children=False)
    assert snap.memory.source == "host"
    assert snap.memory.limit == 16 * GiB


def test_v2_nested_limits_take_the_tightest(tmp_path: Path) -> None:
    roots = v2_tree(
        tmp_path,
        {
            "/a": level(max_=str(GiB)),
            "/a/b": level(max_=str(8 * GiB)),
            "/a/b/c": level(max_=str(4 * GiB)),
        },
    )
    bound = cgroup.memory_bound(cgroup.locate(roots))  # type: ignore[arg-type]
    assert bound is not None
    assert bound.limit == GiB
    assert bound.directory.endswith("/cgroup/a")


def test_cgroup_limit_above_host_total_does_not_bind(tmp_path: Path) -> None:
    roots = v2_tree(tmp_path, {"/a": level(max_=str(64 * GiB)), "/a/b": level(), "/a/b/c": level()})
    assert Sampler(roots).sample(children=False).memory.source == "host"


def test_v2_pressure_comes_from_the_cgroup(tmp_path: Path) -> None:
    psi = (
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=123456\n"
        "full avg10=6.25 avg60=1.00 avg300=0.50 total=654\n"
    )
    roots = v2_tree(
        tmp_path,
        {
            "/a": level(),
            "/a/b": level(),
            "/a/b/c": level(
                extra={
                    "memory.pressure": psi,
                    "cpu.pressure": psi.replace("12.50", "1.00"),
                    "io.pressure": psi,
                }
            ),
        },
    )
    pressure = Sampler(roots).sample(children=False).pressure
    assert pressure.source is not None
    assert pressure.source.endswith("/a/b/c")
    assert pressure.memory is not None
    assert pressure.memory.some.avg10 == 12.5
    assert pressure.memory.full is not None
    assert pressure.memory.full.total_us == 654
    assert pressure.cpu is not None
    assert pressure.cpu.some.avg10 == 1.0


def test_v2_cpu_quota(tmp_path: Path) -> None:
    roots = v2_tree(
        tmp_path,
        {
            "/a": level(extra={"cpu.max": "max 100000\n"}),
            "/a/b": level(extra={"cpu.max": "150000 100000\n"}),
            "/a/b/c": level(extra={"cpu.max": "max 100000\n"}),
        },
    )
    assert cgroup.cpu_quota(cgroup.locate(roots)) == 1.5  # type: ignore[arg-type]


def v1_tree(tmp_path: Path, limits: dict[str, str], own: str = "/docker/abc") -> Roots:
    files = {
        "proc/self/cgroup": f"12:cpu,cpuacct:{own}\n9:memory:{own}\n1:name=systemd:{own}\n",
        "proc/meminfo": meminfo(),
    }
    for directory, limit in limits.items():
        files[f"cgroup/memory{directory}/memory.limit_in_bytes"] = limit + "\n"
        files[f"cgroup/memory{directory}/memory.usage_in_bytes"] = f"{GiB}\n"
        files[f"cgroup/memory{directory}/memory.stat"] = (
            f"cache 5\ninactive_file 7\ntotal_inactive_file {GiB // 2}\n"
        )
    files["cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us"] = "50000\n"
    files["cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us"] = "100000\n"
    return write_tree(tmp_path, files)


def test_v1_huge_number_means_unlimited(tmp_path: Path) -> None:
    roots = v1_tree(
        tmp_path, {"": V1_UNLIMITED, "/docker": V1_UNLIMITED, "/docker/abc": V1_UNLIMITED}
    )
    assert Sampler(roots).sample(children=False).memory.source == "host"


def test_v1_limit_uses_hierarchical_inactive_file(tmp_path: Path) -> None:
    roots = v1_tree(
        tmp_path, {"": V1_UNLIMITED, "/docker": V1_UNLIMITED, "/docker/abc": str(2 * GiB)}
    )
    snap = Sampler(roots).sample(children=False)
    assert snap.memory.source == "cgroup"
    assert snap.memory.limit == 2 * GiB
    assert snap.memory.used == GiB // 2
    assert snap.cpu.effective == 0.5
    assert snap.cpu.effective_source == "cgroup"


def test_v1_inside_a_container_without_cgroup_namespace(tmp_path: Path) -> None:
    # /proc shows the host's path, but the container's hierarchy is mounted at its root
    roots = v1_tree(tmp_path, {"": str(GiB)}, own="/docker/abc")
    location = cgroup.locate(roots)
    assert location is not None
    assert location.memory_dir == location.memory_mount
    assert Sampler(roots).sample(children=False).memory.limit == GiB


def test_no_cgroups_at_all(tmp_path: Path) -> None:
    roots = write_tree(tmp_path, {"proc/meminfo": meminfo()})
    snap = Sampler(roots).sample(children=False)
    assert snap.memory.source == "host"
    assert snap.memory.cgroup is None
    assert snap.pressure.memory is None


def test_parse_proc_cgroup() -> None:
    parsed = cgroup.parse_proc_cgroup("4:memory:/x\n2:cpu,cpuacct:/y\n1:name=systemd:/z\n0::/w\n")
    assert parsed == {"memory": "/x", "cpu": "/y", "cpuacct": "/y", "systemd": "/z", "": "/w"}


def test_limits_are_cached_for_their_max_age(tmp_path: Path) -> None:
    roots = v2_tree(tmp_path, {"/a": level(), "/a/b": level(max_=str(2 * GiB)), "/a/b/c": level()})
    cached = Sampler(roots, limits_max_age_s=3600)
    fresh = Sampler(roots, limits_max_age_s=0)
    assert cached.sample(children=False).memory.limit == 2 * GiB
    assert fresh.sample(children=False).memory.limit == 2 * GiB
    (tmp_path / "cgroup/a/b/memory.max").write_text(f"{GiB}\n")  # like `docker update`
    assert fresh.sample(children=False).memory.limit == GiB
    assert cached.sample(children=False).memory.limit == 2 * GiB


def test_read_memory_survives_a_garbage_memory_stat(tmp_path: Path) -> None:
    # int() of a garbage value in memory.stat raised ValueError out of read_memory
    (tmp_path / "memory.current").write_text(f"{GiB}\n")
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.stat").write_text("inactive_file lots\nanon 1\n")
    memory = cgroup.read_memory(tmp_path, "v2")
    assert memory is not None
    assert memory.working_set == GiB  # unknown cache counts as used: more, never less


def test_pressure_with_a_malformed_number_is_none_not_an_error() -> None:
    from resguard._probes.psi import parse_pressure

    # [0-9.]+ matched "1.2.3" and float() raised
    assert parse_pressure("some avg10=1.2.3 avg60=0.00 avg300=0.00 total=1\n") is None
    assert parse_pressure("some avg10=1.00 avg60=0.00 avg300=0.00 total=1") is None  # cut
    assert parse_pressure("some avg10=1.00 avg60=0.00 avg300=0.00 total=1\n") is not None


@pytest.mark.parametrize(
    "text", ["0 100000\n", "150000 0\n", "-5 100000\n", "abc\n", "150000 100000"]
)
def test_a_damaged_cpu_max_is_reported_and_skipped(tmp_path: Path, text: str) -> None:
    roots = v2_tree(
        tmp_path,
        {
            "/a": level(extra={"cpu.max": "200000 100000\n"}),
            "/a/b": level(),
            "/a/b/c": level(extra={"cpu.max": text}),
        },
    )
    location = cgroup.locate(roots)
    assert location is not None
    reported: list[tuple[str, str, str | None, bool]] = []
    assert cgroup.cpu_quota(location, report=lambda *args: reported.append(args)) == 2.0
    damaged = [entry for entry in reported if entry[2] is not None]
    assert [entry[1] for entry in damaged] == [str(tmp_path / "cgroup/a/b/c/cpu.max")]


def test_proc_cgroup_lines_without_a_path_are_ignored() -> None:
    assert cgroup.parse_proc_cgroup("0::\n4:memory:relative\n") == {}
    assert cgroup.parse_proc_cgroup("0::/\n") == {"": "/"}
