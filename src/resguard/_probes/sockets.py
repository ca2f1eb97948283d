"""Which process listens on a TCP port: ``/proc/net/tcp{,6}`` and ``/proc/<pid>/fd``.

Linux only; elsewhere (no ``/proc``) nothing is found. Every function is total: it returns
a value or ``None`` and never raises on a missing, damaged or unreadable file, or on a
process that exits while it is looked at.
"""

from __future__ import annotations

import os
import string
import time
from collections.abc import Callable

from resguard._probes.files import read_text
from resguard._probes.identity import Identity, read_stat

__all__ = ["SCAN_DEADLINE_S", "listener", "listening_inodes", "listening_pid", "port_inodes"]

SCAN_DEADLINE_S = 1.0
"""The most one look through ``/proc/*/fd`` may take (a machine with many processes)."""
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
_HEX = frozenset(string.hexdigits)


def listening_inodes(text: str, port: int) -> frozenset[int]:
    """The socket inodes listening on *port* in a ``/proc/net/tcp`` or ``tcp6`` text
    (the header and lines that are cut short or not numbers are skipped; never raises)."""
    inodes: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        _, _, hex_port = fields[1].rpartition(":")
        inode = fields[9]
        if not hex_port or not _HEX.issuperset(hex_port):
            continue
        if not (inode.isascii() and inode.isdigit()):
            continue
        if int(hex_port, 16) == port:
            inodes.add(int(inode))
    return frozenset(inodes)


def port_inodes(port: int, proc: str = "/proc") -> frozenset[int]:
    """The socket inodes listening on TCP *port* now, from ``/proc/net/tcp`` and ``tcp6``
    (two small files: cheap, unlike the ``/proc/*/fd`` scan that finds their process)."""
    inodes: set[int] = set()
    for name in ("tcp", "tcp6"):
        inodes |= listening_inodes(read_text(f"{proc}/net/{name}") or "", port)
    return frozenset(inodes)


def listening_pid(
    port: int,
    proc: str = "/proc",
    *,
    deadline_s: float = SCAN_DEADLINE_S,
    clock: Callable[[], float] = time.monotonic,
    inodes: frozenset[int] | None = None,
) -> int | None:
    """The process with a socket listening on TCP *port* (one of *inodes* when given, as
    :func:`port_inodes` read them), or ``None`` when none is seen (no listener, its
    process is another user's and this one is not root, or the look took longer than
    *deadline_s* by *clock*)."""
    if inodes is None:
        inodes = port_inodes(port, proc)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    ends = clock() + deadline_s
    try:
        pids = sorted(
            (int(e) for e in os.listdir(proc) if e.isascii() and e.isdigit()), reverse=True
        )
    except OSError:
        return None
    for pid in pids:  # the newest first: a server is usually younger than the system's own
        if clock() > ends:
            return None
        if _holds(f"{proc}/{pid}/fd", wanted):
            return pid
    return None


def _holds(fd_dir: str, wanted: set[str]) -> bool:
    """Whether a descriptor in *fd_dir* is one of the sockets *wanted*."""
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False  # gone, or not ours to read
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") in wanted:
                return True
        except OSError:
            continue
    return False


def listener(
    port: int,
    proc: str = "/proc",
    *,
    deadline_s: float = SCAN_DEADLINE_S,
    clock: Callable[[], float] = time.monotonic,
    inodes: frozenset[int] | None = None,
) -> Identity | None:
    """The process listening on TCP *port* with its start time (an :class:`Identity`, so
    a later process on its PID is never taken for it), or ``None`` when none is seen or
    its stat cannot be read."""
    pid = listening_pid(port, proc, deadline_s=deadline_s, clock=clock, inodes=inodes)
    stat = None if pid is None else read_stat(pid, proc)
    if pid is None or stat is None:
        return None
    return Identity(pid, stat.start_ticks)
