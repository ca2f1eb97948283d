"""Real snapshot values for tests of the judge layer (no mocks: the real attrs types)."""

from __future__ import annotations

from pathlib import Path

from resguard._probes.paths import Roots
from resguard.snapshot import (
    ContainersInfo,
    ContainerStats,
    CpuInfo,
    MemoryInfo,
    PressureInfo,
    PressureLine,
    ProcessInfo,
    ProcessSelf,
    ResourcePressure,
    Snapshot,
    SwapInfo,
)

GiB = 2**30
MB = 10**6
WALL_OFFSET_S = 1_700_000_000.0  # wall clock = monotonic + this, in these snapshots


def make_process(
    pid: int,
    name: str = "proc",
    *,
    cpu_percent: float = 0.0,
    rss: int = 10 * MB,
    create_time: float | None = None,
) -> ProcessInfo:
    """One process-table row; identity ``(pid, create_time)`` (default create time: pid)."""
    return ProcessInfo(
        pid=pid,
        name=name,
        cmdline=(name,),
        username="user",
        uid=1000,
        ppid=1,
        rss=rss,
        uss=None,
        cpu_percent=cpu_percent,
        num_threads=1,
        create_time=float(pid) if create_time is None else create_time,
    )


def make_snapshot(
    *,
    at: float = 1000.0,
    memory_percent: float | None = None,
    used: int | None = None,
    limit: int = 16 * GiB,
    rss: int = 30 * MB,
    psi_some: float | None = 0.0,
    psi_full: float | None = 0.0,
    processes: tuple[ProcessInfo, ...] | None = None,
    containers: tuple[ContainerStats, ...] | None = None,
    cpu_percent: float = 5.0,
) -> Snapshot:
    """A snapshot at monotonic time *at*.

    Memory is given as ``memory_percent`` of *limit* or as ``used`` bytes (default 40 %).
    ``psi_some=None`` means a kernel without PSI; ``psi_full=None`` a PSI file without a
    ``full`` line. ``containers`` fills ``snapshot.containers``.
    """
    if used is None:
        percent = 40.0 if memory_percent is None else float(memory_percent)
        used = round(limit * percent / 100)
    else:
        percent = 100.0 * used / limit
    memory = MemoryInfo(
        total=32 * GiB,
        limit=limit,
        used=used,
        available=max(limit - used, 0),
        percent=percent,
        source="cgroup",
        source_detail="memory.max",
        cgroup="/test",
    )
    if psi_some is None:
        pressure = PressureInfo(memory=None, cpu=None, io=None, source=None)
    else:
        full = None if psi_full is None else PressureLine(psi_full, psi_full, psi_full, 0)
        memory_pressure = ResourcePressure(PressureLine(psi_some, psi_some, psi_some, 0), full)
        quiet = ResourcePressure(PressureLine(0.0, 0.0, 0.0, 0), PressureLine(0.0, 0.0, 0.0, 0))
        pressure = PressureInfo(memory=memory_pressure, cpu=quiet, io=quiet, source="system")
    return Snapshot(
        memory=memory,
        swap=SwapInfo(total=0, used=0, free=0, percent=0.0),
        cpu=CpuInfo(
            percent=cpu_percent,
            count=8,
            effective=8.0,
            effective_source="host",
            load_1m=0.5,
            load_5m=0.5,
            load_15m=0.5,
        ),
        pressure=pressure,
        process=ProcessSelf(
            pid=4242, rss=rss, vms=4 * rss, uss=None, cpu_percent=1.0, num_threads=4, children_rss=0
        ),
        taken_at=WALL_OFFSET_S + at,
        monotonic=at,
        processes=processes,
        containers=None if containers is None else ContainersInfo.from_items(containers),
    )


def make_container(
    name: str, *, memory_used: int, memory_limit: int | None = None
) -> ContainerStats:
    """One running container with the given working set and limit."""
    percent = None if memory_limit is None else 100.0 * memory_used / memory_limit
    return ContainerStats(
        id=name * 3,
        name=name,
        image="busybox",
        status="running",
        memory_usage=memory_used,
        memory_used=memory_used,
        memory_limit=memory_limit,
        memory_percent=percent,
        cpu_percent=1.0,
        pids=1,
    )


class KernelTree:
    """A complete, healthy re-rooted ``/proc`` and cgroup v2 tree for a real Sampler.

    This process sits in the cgroup ``/a``, whose ``memory.max`` (2 GiB of a 16 GiB host)
    binds, with a CPU quota of 1.5 CPUs and PSI files in the cgroup. ``/proc/self/stat``,
    ``statm`` and ``uptime`` are copies of the real ones (so CPU percentages stay sane).
    :meth:`damage` breaks one file in one of the ways the kernel or a hostile host can;
    :meth:`restore` puts it back. ``files`` names the files by their short names.
    """

    MEMINFO = (
        "MemTotal:       16777216 kB\nMemFree:         8388608 kB\n"
        "MemAvailable:    8388608 kB\nBuffers:           65536 kB\n"
        "SwapTotal:       2097152 kB\nSwapFree:        1048576 kB\n"
    )
    PSI = (
        "some avg10=1.50 avg60=1.00 avg300=0.50 total=123456\n"
        "full avg10=0.50 avg60=0.25 avg300=0.10 total=6543\n"
    )
    HUGE_BYTES = 4 * 2**20

    def __init__(self, root: Path, *, cgroup: bool = True) -> None:
        import os

        self.root = root
        with (
            open("/proc/self/stat") as stat,
            open("/proc/self/statm") as statm,
            open("/proc/uptime") as uptime,
        ):
            own = {"stat": stat.read(), "statm": statm.read(), "uptime": uptime.read()}
        self.contents: dict[str, str] = {
            "meminfo": self.MEMINFO,
            "stat": (
                "cpu  1000 10 500 8000 100 0 20 0 0 0\n"
                "cpu0 1000 10 500 8000 100 0 20 0 0 0\nbtime 1700000000\n"
            ),
            "loadavg": "0.50 0.40 0.30 2/345 6789\n",
            "uptime": own["uptime"],
            "self/stat": own["stat"],
            "self/statm": own["statm"],
        }
        self.files: dict[str, Path] = {name: root / "proc" / name for name in self.contents}
        if cgroup:
            cgroup_files = {
                "self/cgroup": ("proc", "0::/a\n"),
                "memory.max": ("cgroup/a", f"{2 * GiB}\n"),
                "memory.high": ("cgroup/a", "max\n"),
                "memory.current": ("cgroup/a", f"{GiB}\n"),
                "memory.stat": (
                    "cgroup/a",
                    f"anon {GiB // 2}\nfile {GiB // 2}\ninactive_file {GiB // 4}\n",
                ),
                "memory.pressure": ("cgroup/a", self.PSI),
                "cpu.pressure": ("cgroup/a", self.PSI),
                "io.pressure": ("cgroup/a", self.PSI),
                "cpu.max": ("cgroup/a", "150000 100000\n"),
            }
            for name, (directory, content) in cgroup_files.items():
                self.contents[name] = content
                self.files[name] = root / directory / name.removeprefix("self/")
            self.files["self/cgroup"] = root / "proc" / "self" / "cgroup"
            self.contents["cgroup.controllers"] = "cpu io memory\n"
            self.files["cgroup.controllers"] = root / "cgroup" / "cgroup.controllers"
        for name in self.contents:
            self.restore(name)
        (root / "proc" / str(os.getpid()) / "task").mkdir(parents=True, exist_ok=True)

    @property
    def roots(self) -> Roots:
        return Roots(proc=str(self.root / "proc"), cgroup=str(self.root / "cgroup"))

    def path(self, name: str) -> str:
        return str(self.files[name])

    def damage(self, name: str, kind: str) -> None:
        """Break file *name*: ``garbage``, ``truncated`` (cut inside its first line),
        ``empty``, ``huge`` (megabytes of junk), ``unreadable`` (a read fails with an I/O
        error: the path is a directory), ``missing``. ``vanished`` needs the read itself
        to fail and is done by the tests with :func:`vanish`.

        ``unreadable`` and ``missing`` replace the file: do them before a sampler first
        reads it, since a sampler keeps its files open (a kept descriptor would still read
        the old file, as it reads the kernel's)."""
        import shutil

        path = self.files[name]
        content = self.contents[name]
        if path.is_dir():
            shutil.rmtree(path)
        if kind == "garbage":
            path.write_bytes(b"\x00\xff not a kernel file {[( 12abc -5 nan\n")
        elif kind == "truncated":
            first = content.split("\n", 1)[0]
            path.write_text(first[: max(len(first) // 2, 1)])
        elif kind == "empty":
            path.write_text("")
        elif kind == "huge":
            line = b"x" * 79 + b"\n"
            path.write_bytes(line * (self.HUGE_BYTES // len(line)))
        elif kind == "unreadable":
            path.unlink(missing_ok=True)
            path.mkdir()
        elif kind == "missing":
            path.unlink(missing_ok=True)
        else:
            raise AssertionError(f"unknown damage {kind!r}")

    def restore(self, name: str) -> None:
        import shutil

        path = self.files[name]
        if path.is_dir():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.contents[name])
