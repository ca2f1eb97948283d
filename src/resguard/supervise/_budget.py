"""The memory budget of a supervised command: its own memory cgroup (v1 or v2) where this
process may make one, else ``RLIMIT_AS``.

The cgroup is made below this process's own memory cgroup (or ``cgroup_parent``), so a
limit above it still binds: ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``
at the same value where swap is accounted, so swap does not stretch the budget) on v1,
``memory.max`` and ``memory.swap.max = 0`` on v2. OOM kills are read from the cgroup's own
counter (``oom_kill`` in ``memory.oom_control`` on v1, ``memory.events`` on v2).
``RLIMIT_AS`` bounds each process's address space, not its resident memory: it cannot see
an OOM kill (an allocation fails instead: MemoryError, ENOMEM, often a crash), it does not
add up a process tree, and it refuses large reservations that would never be touched
(JVMs, Go, CUDA).
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable
from typing import Literal

import attrs

from resguard._errors import InvalidValue
from resguard._probes.cgroup import locate
from resguard._probes.paths import DEFAULT_ROOTS, Roots
from resguard.units import format_bytes, shown

__all__ = [
    "Budget",
    "BudgetKind",
    "Cgroup",
    "ParentFacts",
    "budget_for",
    "choose_budget",
    "parent_facts",
]

BudgetKind = Literal["cgroup-v1", "cgroup-v2", "rlimit-as", "none"]

RLIMIT_AS_CANNOT = (
    "RLIMIT_AS bounds each process's address space, not its resident memory: an OOM "
    "cannot be told from a crash (allocations fail instead), children are not added up, "
    "and large untouched reservations are refused"
)


@attrs.frozen
class Budget:
    """How the budget is enforced: *kind*, *limit_bytes* (``None``: no budget), the cgroup
    *parent* directory the run's cgroup is made in, and *why* this kind in words."""

    kind: BudgetKind
    limit_bytes: int | None
    why: str
    parent: str | None = None

    def describe(self) -> str:
        if self.limit_bytes is None:
            return "no memory budget (--memory not given)"
        size = format_bytes(self.limit_bytes)
        if self.kind == "rlimit-as":
            return f"{size} as RLIMIT_AS ({self.why}; {RLIMIT_AS_CANNOT})"
        return f"{size} as a memory cgroup {self.kind[-2:]} below {self.parent} ({self.why})"

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "limit_bytes": self.limit_bytes,
            "parent": self.parent,
            "why": self.why,
        }


CgroupVersion = Literal["v1", "v2"]


@attrs.frozen
class ParentFacts:
    """What choosing a budget needs to know of the cgroup parent, read by
    :func:`parent_facts`: its *path* (``None``: no memory cgroup hierarchy is mounted), its
    cgroup *version*, whether it was *given* (``--cgroup-parent``), *is_cgroup* (a
    directory with ``cgroup.procs``), *writable* by this process, and whether this process
    is *root*."""

    path: str | None
    version: CgroupVersion = "v2"
    given: bool = False
    is_cgroup: bool = True
    writable: bool = True
    root: bool = True


def parent_facts(
    cgroup_parent: str | None = None,
    *,
    roots: Roots = DEFAULT_ROOTS,
    writable: Callable[[str], bool] = lambda path: os.access(path, os.W_OK),
) -> ParentFacts:
    """Read the facts of *cgroup_parent* (default: this process's own memory cgroup); it
    writes nothing. A *cgroup_parent* that is not a cgroup directory is refused with
    :class:`~resguard.InvalidValue`."""
    version: CgroupVersion
    if cgroup_parent is not None:
        parent = os.path.abspath(cgroup_parent)
        if not os.path.exists(os.path.join(parent, "cgroup.procs")):
            raise InvalidValue(
                f"--cgroup-parent {shown(cgroup_parent)} is not a cgroup directory (it has "
                f"no cgroup.procs); expected a directory under {roots.cgroup}"
            )
        v1 = os.path.exists(os.path.join(parent, "memory.limit_in_bytes"))
        version = "v1" if v1 else "v2"
    else:
        location = locate(roots)
        if location is None or location.memory_dir is None:
            return ParentFacts(None)
        parent = location.memory_dir
        version = "v1" if location.version == "v1" else "v2"
    is_cgroup = os.path.isdir(parent) and os.path.exists(os.path.join(parent, "cgroup.procs"))
    return ParentFacts(
        parent,
        version,
        given=cgroup_parent is not None,
        is_cgroup=is_cgroup,
        writable=is_cgroup and writable(parent),
        root=os.geteuid() == 0,
    )


def budget_for(facts: ParentFacts, limit_bytes: int | None) -> Budget:
    """How *limit_bytes* is enforced given the parent's *facts*, with the reason kept for
    the journal: a cgroup below the parent where one can be made there, else RLIMIT_AS.
    A plain function: it reads and writes nothing."""
    if limit_bytes is None:
        return Budget("none", None, "--memory not given")
    parent = facts.path
    if parent is None:
        return Budget("rlimit-as", limit_bytes, "no memory cgroup hierarchy is mounted")
    if not facts.is_cgroup:
        return Budget("rlimit-as", limit_bytes, f"{parent} is not a cgroup directory")
    if not facts.writable:
        why = "not root" if not facts.root else "no write access"
        return Budget("rlimit-as", limit_bytes, f"{why}: {parent} is not writable (delegate it)")
    kind: BudgetKind = "cgroup-v1" if facts.version == "v1" else "cgroup-v2"
    how = "the given --cgroup-parent" if facts.given else "its own cgroup"
    return Budget(kind, limit_bytes, f"below {how}", parent)


def choose_budget(
    limit_bytes: int | None,
    *,
    cgroup_parent: str | None = None,
    roots: Roots = DEFAULT_ROOTS,
    writable: Callable[[str], bool] = lambda path: os.access(path, os.W_OK),
) -> Budget:
    """:func:`budget_for` the :func:`parent_facts` of *cgroup_parent*; it writes nothing
    (on v2 the memory controller is enabled for the parent's children when the cgroup is
    made, :meth:`Cgroup.create`), so ``--dry-run`` changes nothing."""
    if limit_bytes is None:
        return budget_for(ParentFacts(None), None)
    return budget_for(parent_facts(cgroup_parent, roots=roots, writable=writable), limit_bytes)


def enable_memory_for_children(parent: str) -> None:
    """Enable the v2 memory controller for *parent*'s children unless it is already;
    :class:`OSError` saying why when it cannot be (the parent holds processes of its own)."""
    control = os.path.join(parent, "cgroup.subtree_control")
    with open(control, encoding="ascii") as handle:
        if "memory" in handle.read().split():
            return
    _write(control, "+memory")


def cgroup_problem(parent: str, error: OSError) -> str:
    """Why a cgroup cannot be made below *parent*, in words for the journal."""
    busy = (
        " (it holds processes of its own; pass --cgroup-parent)"
        if error.errno in (errno.EBUSY, errno.EOPNOTSUPP)
        else ""
    )
    return f"cannot make a cgroup below {parent}: {error.strerror or error}{busy}"


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(text)


class Cgroup:
    """One memory cgroup made for a supervised command, removed by :meth:`remove`."""

    def __init__(self, path: str, version: str) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(cls, parent: str, name: str, version: str, limit_bytes: int) -> Cgroup:
        """Make ``parent/name`` with the limit (on v2 enabling the memory controller for
        *parent*'s children first); :class:`OSError` (and no cgroup left behind) when it
        cannot be made."""
        if version == "v2":
            enable_memory_for_children(parent)
        path = os.path.join(parent, name)
        os.mkdir(path)
        cgroup = cls(path, version)
        try:
            if version == "v1":
                _write(os.path.join(path, "memory.limit_in_bytes"), str(limit_bytes))
                memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
                if os.path.exists(memsw):
                    _write(memsw, str(limit_bytes))
            else:
                _write(os.path.join(path, "memory.max"), str(limit_bytes))
                swap = os.path.join(path, "memory.swap.max")
                if os.path.exists(swap):
                    _write(swap, "0")
        except OSError:
            os.rmdir(path)
            raise
        return cgroup

    def add(self, pid: int) -> None:
        """Move *pid* (a child that has not exec'd yet) into this cgroup."""
        _write(os.path.join(self.path, "cgroup.procs"), str(pid))

    def oom_kills(self) -> int | None:
        """The kernel's count of OOM kills in this cgroup, ``None`` when unreadable."""
        name = "memory.oom_control" if self.version == "v1" else "memory.events"
        try:
            with open(os.path.join(self.path, name), encoding="ascii") as handle:
                text = handle.read()
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return None

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs"), encoding="ascii") as handle:
                return [int(word) for word in handle.read().split() if word.isdigit()]
        except OSError:
            return []

    def kill_members(self) -> int:
        """SIGKILL what is left in the cgroup (a daemonised helper of the command's); each
        pid is opened as a pidfd and checked to be a member still before it is signalled.
        Returns how many were signalled."""
        killed = 0
        for pid in self.pids():
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue  # gone already
            try:
                if pid in self.pids():  # the pidfd is this member: a reused pid is not
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    killed += 1
            except OSError:
                pass
            finally:
                os.close(pidfd)
        return killed

    def empty(
        self, deadline: float, now: Callable[[], float], wait: Callable[[float], object]
    ) -> bool:
        """Kill what is left and wait until no process is in the cgroup, by *deadline*
        (the next run then starts with the whole budget)."""
        while self.kill_members() or self.pids():
            if now() >= deadline:
                return False
            wait(0.01)
        return True

    def remove(
        self, deadline: float, now: Callable[[], float], wait: Callable[[float], object]
    ) -> str | None:
        """Kill what is left and remove the cgroup by *deadline*; ``None`` once removed,
        else why not (it is then left behind, named in the journal)."""
        while True:
            self.kill_members()
            try:
                os.rmdir(self.path)
                return None
            except FileNotFoundError:
                return None
            except OSError as error:
                if now() >= deadline:
                    return f"cannot remove {self.path}: {error.strerror}"
            wait(0.01)


def limit_address_space(pid: int, limit_bytes: int) -> None:
    """Set RLIMIT_AS of *pid* (a child that has not exec'd yet)."""
    import resource  # Unix only: imported when a budget is applied

    resource.prlimit(pid, resource.RLIMIT_AS, (limit_bytes, limit_bytes))
