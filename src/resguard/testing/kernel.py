"""A re-rooted ``/proc`` and cgroup tree in a folder, for a real Sampler without root.

Point a :class:`~resguard.snapshot.Sampler` at :attr:`KernelTree.roots` to read fixture
files instead of the kernel's: any memory limit, any pressure, and damaged files, on a
laptop and without root.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from resguard._errors import InvalidType, InvalidValue
from resguard._probes.paths import Roots
from resguard.units import shown

__all__ = ["KernelTree", "Roots"]

GiB = 2**30


class KernelTree:
    """A complete, healthy re-rooted ``/proc`` and cgroup v2 tree for a real Sampler.

    This process sits in the cgroup ``/a``, whose ``memory.max`` (2 GiB of a 16 GiB host)
    binds, with a CPU quota of 1.5 CPUs and PSI files in the cgroup. ``/proc/self/stat``,
    ``statm`` and ``uptime`` are copies of the real ones (so CPU percentages stay sane).
    :meth:`damage` breaks one file in one of the ways the kernel or a hostile host can;
    :meth:`restore` puts it back. ``files`` names the files by their short names and
    ``contents`` holds their healthy text. ``cgroup=False`` writes a host without cgroups
    (no ``/proc/self/cgroup``, no cgroup files): the host's numbers bind.
    :meth:`add_hwmon` writes temperature sensors and fans under :attr:`hwmon_root`.

    Example::

        tree = KernelTree(tmp_path)
        tree.damage("memory.current", "garbage")
        snap = Sampler(tree.roots).sample()
        assert snap.memory.limit == 2 * 2**30  # the cgroup's limit still binds ...
        assert snap.memory.used is None  # ... but its usage is unknown, and says why:
        assert snap.fault_for("memory.used").kind == "garbage"
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

    def __init__(self, root: str | os.PathLike[str], *, cgroup: bool = True) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise InvalidType(f"root={shown(root)} is not a path; expected a folder to write into")
        root = Path(root)
        self.root = root
        own = _own_process_files()
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
    def hwmon_root(self) -> str:
        """The tree's ``/sys/class/hwmon``, to pass as ``HeatReader(hwmon_root=...)``
        (empty until :meth:`add_hwmon` writes a chip)."""
        return str(self.root / "sys" / "class" / "hwmon")

    def add_hwmon(
        self,
        chip: str,
        temperatures: Sequence[tuple[str | None, float, float | None, float | None]] = (),
        fans: Sequence[tuple[str | None, float]] = (),
    ) -> str:
        """Write one more hwmon chip named *chip*: each temperature as ``(label,
        celsius, high, critical)`` (``None``: no such file), each fan as ``(label,
        rpm)``, in the kernel's units (millidegrees). Its files join :attr:`files` as
        ``"hwmonN/temp1_input"`` and so on (:meth:`damage` breaks them); returns
        ``"hwmonN"``."""
        hwmon = Path(self.hwmon_root)
        number = len([name for name in self.contents if name.endswith("/name")])
        device = f"hwmon{number}"
        written = {"name": f"{chip}\n"}
        for index, (label, celsius, high, critical) in enumerate(temperatures, 1):
            for suffix, value in (("input", celsius), ("max", high), ("crit", critical)):
                if value is not None:
                    written[f"temp{index}_{suffix}"] = f"{round(value * 1000)}\n"
            if label is not None:
                written[f"temp{index}_label"] = f"{label}\n"
        for index, (label, rpm) in enumerate(fans, 1):
            written[f"fan{index}_input"] = f"{round(rpm)}\n"
            if label is not None:
                written[f"fan{index}_label"] = f"{label}\n"
        for name, content in written.items():
            key = f"{device}/{name}"
            self.contents[key] = content
            self.files[key] = hwmon / device / name
            self.restore(key)
        return device

    @property
    def roots(self) -> Roots:
        """Where the tree is, to pass as ``Sampler(roots=...)``."""
        return Roots(proc=str(self.root / "proc"), cgroup=str(self.root / "cgroup"))

    def path(self, name: str) -> str:
        """The fixture file *name* (a short name such as ``"meminfo"``, ``"memory.max"``)."""
        return str(self._file(name))

    def _file(self, name: object) -> Path:
        """The fixture file *name*, or an error listing the names there are."""
        if not isinstance(name, str) or name not in self.files:
            raise InvalidValue(
                f"name={shown(name)} is not a file of this tree; expected one of "
                + ", ".join(sorted(self.files))
            )
        return self.files[name]

    def damage(self, name: str, kind: str) -> None:
        """Break file *name*: ``garbage``, ``truncated`` (cut inside its first line),
        ``empty``, ``huge`` (megabytes of junk), ``unreadable`` (a read fails with an I/O
        error: the path is a directory), ``missing``. ``vanished`` needs the read itself
        to fail after the open, which a file on disk cannot do; it is not offered here.

        ``unreadable`` and ``missing`` replace the file: do them before a sampler first
        reads it, since a sampler keeps its files open (a kept descriptor would still read
        the old file, as it reads the kernel's)."""
        import shutil

        path = self._file(name)
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
            raise InvalidValue(
                f"kind={shown(kind)} is not a kind of damage; expected one of garbage, "
                "truncated, empty, huge, unreadable, missing"
            )

    def restore(self, name: str) -> None:
        """Write file *name* back with its healthy content."""
        import shutil

        path = self._file(name)
        if path.is_dir():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.contents[name])


def _own_process_files() -> dict[str, str]:
    """This process's ``stat``, ``statm`` and the uptime, for the tree's ``self``: the
    real files where there is a ``/proc``, else (macOS, Windows) lines of the same shape,
    so fixture trees work on every platform."""
    try:
        with (
            open("/proc/self/stat") as stat,
            open("/proc/self/statm") as statm,
            open("/proc/uptime") as uptime,
        ):
            return {"stat": stat.read(), "statm": statm.read(), "uptime": uptime.read()}
    except OSError:
        pid = os.getpid()
        # state ppid pgrp session tty tpgid flags, 4 fault counters, utime stime cutime
        # cstime, priority nice threads itrealvalue, start ticks, vsize, rss pages
        fields = ["S", "1", str(pid), str(pid), "0", "-1", "4194560", "0", "0", "0", "0"]
        fields += ["10", "5", "0", "0", "20", "0", "1", "0", "100", str(64 * 2**20), "4096"]
        return {
            "stat": f"{pid} (python) {' '.join(fields)} {'0 ' * 30}\n",
            "statm": "16384 4096 512 1 0 2048 0\n",
            "uptime": "1000.00 1800.00\n",
        }
