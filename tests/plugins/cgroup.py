"""A real child memory cgroup (v1 or v2) with a limit, and child processes run inside it.

Needs root and a writable memory hierarchy; elsewhere the tests skip with the reason (or
fail under ``RESGUARD_REQUIRE_INTEGRATION=1``). Every cgroup and process is cleaned up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from plugins.integration import unavailable
from support import wait_until

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


def _hierarchy() -> tuple[str, Path] | None:
    controllers = V2_ROOT / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        return "v2", V2_ROOT
    if (V1_ROOT / "memory.limit_in_bytes").exists():
        return "v1", V1_ROOT
    return None


class MemoryCgroup:
    """One cgroup directory (possibly nested) that tests put processes into."""

    def __init__(self, version: str, path: Path) -> None:
        self.version = version
        self.path = path
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def relative(self) -> str:
        """The path as /proc/<pid>/cgroup shows it."""
        root = V1_ROOT if self.version == "v1" else V2_ROOT
        return "/" + str(self.path.relative_to(root))

    def set_limit(self, limit_bytes: int | None) -> None:
        """Set the hard limit (None = unlimited)."""
        if self.version == "v1":
            value = "-1" if limit_bytes is None else str(limit_bytes)
            (self.path / "memory.limit_in_bytes").write_text(value)
        else:
            value = "max" if limit_bytes is None else str(limit_bytes)
            (self.path / "memory.max").write_text(value)
            swap = self.path / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")

    def usage_bytes(self) -> int:
        name = "memory.usage_in_bytes" if self.version == "v1" else "memory.current"
        return int((self.path / name).read_text())

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this cgroup."""
        name = "memory.oom_control" if self.version == "v1" else "memory.events"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def spawn(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start *argv* inside this cgroup; it joins before exec, so all of it is charged."""
        procs = self.path / "cgroup.procs"
        wrapper = ["/bin/sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *argv]
        process: subprocess.Popen[bytes] = subprocess.Popen(wrapper, **kwargs)  # type: ignore[call-overload]
        self.processes.append(process)
        return process

    def python(self, code: str, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """Run ``python -c code`` inside this cgroup with this interpreter."""
        return self.spawn([sys.executable, "-c", code, *args], **kwargs)

    def child(self, name: str) -> MemoryCgroup:
        """Make a nested cgroup below this one."""
        path = self.path / name
        path.mkdir()
        if self.version == "v2":
            (self.path / "cgroup.subtree_control").write_text("+memory")
        return MemoryCgroup(self.version, path)

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        for directory in sorted(self.path.rglob("*"), key=lambda p: -len(p.parts)):
            if directory.is_dir():
                _kill_and_remove(directory)
        _kill_and_remove(self.path)


def _kill_and_remove(path: Path) -> None:
    if not path.exists():
        return

    def killed_and_removed() -> bool:
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            path.rmdir()
        except OSError:
            return False  # its processes are still exiting
        return True

    wait_until(killed_and_removed, timeout_s=5.0, what=f"the test cgroup {path} to be removed")


@pytest.fixture
def memory_cgroup() -> Iterator[MemoryCgroup]:
    """A fresh child memory cgroup under the hierarchy's root, without a limit yet."""
    if os.geteuid() != 0:
        unavailable("creating memory cgroups needs root")
    found = _hierarchy()
    if found is None:
        unavailable("no memory cgroup hierarchy is mounted at /sys/fs/cgroup")
    version, root = found
    if version == "v2":
        subtree = (root / "cgroup.subtree_control").read_text().split()
        if "memory" not in subtree:
            try:
                (root / "cgroup.subtree_control").write_text("+memory")
            except OSError as error:
                unavailable(f"cannot enable the memory controller below {root}: {error}")
    path = root / f"resguard-test-{uuid.uuid4().hex[:12]}"
    try:
        path.mkdir()
    except OSError as error:
        unavailable(f"cannot create a cgroup under {root}: {error}")
    cgroup = MemoryCgroup(version, path)
    try:
        yield cgroup
    finally:
        cgroup.cleanup()
