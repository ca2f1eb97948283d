"""Fast reads of small kernel files (/proc, /sys/fs/cgroup) through kept-open descriptors.

Re-reading a seq file with ``pread`` at offset 0 regenerates its content, so keeping the
descriptor saves the open/close pair that dominates the cost of a small read. Descriptors
are dropped in a forked child (``/proc/self`` would still name the parent) and when a file
disappears (a removed cgroup).

Every read is capped at :data:`READ_CAP_BYTES`: a damaged or hostile file of many
megabytes costs one bounded read, never the whole file. A read that fails leaves the kind
of failure behind (:meth:`FileCache.failure`), so callers can say *why* a number is
unknown without paying for it on the healthy path.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from typing import Literal

from resguard._modules import forks

__all__ = [
    "READ_CAP_BYTES",
    "READ_FLAGS",
    "FaultKind",
    "FileCache",
    "damage_of",
    "read_bytes",
    "read_text",
]

FaultKind = Literal["garbage", "truncated", "empty", "unreadable", "vanished", "missing"]
"""How a source was damaged: content that does not parse, content cut short, an empty
file, a file that exists but cannot be read (permission denied, I/O error), a file that
disappeared between open and read, and a file that is not there at all."""

Damage = tuple[FaultKind, str]

READ_CAP_BYTES = 64 * 1024
"""The most bytes read from one kernel file; the files resguard reads are a few KiB."""

READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
"""Flags of every read-only open: close-on-exec where the platform has it (not Windows)."""


def _seek_and_read(fd: int, size: int, offset: int) -> bytes:
    """``os.pread`` where the platform has none (Windows)."""
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


# pread is looked up through the module so the fault-injection tests can make a read fail
# the way the kernel does for a file that vanished after it was opened (ESRCH, ENODEV).
_pread = getattr(os, "pread", _seek_and_read)

_VANISHED = frozenset({errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.ESTALE})


def read_text(path: str) -> str | None:
    """Read a small file (at most :data:`READ_CAP_BYTES`), or ``None`` if it does not exist
    or cannot be read."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(READ_CAP_BYTES)
    except OSError:
        return None
    return data.decode("ascii", "replace")


def read_bytes(path: str, size_bytes: int = READ_CAP_BYTES) -> bytes | None:
    """At most *size_bytes* of a small file (one ``/proc/<pid>/...`` read, no kept
    descriptor), or ``None`` if it does not exist or cannot be read."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError:
        return None
    try:
        return os.read(fd, size_bytes)
    except OSError:
        return None
    finally:
        os.close(fd)


def _open_failure(error: OSError) -> Damage:
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return "missing", "no such file"
    return "unreadable", f"cannot open: {error.strerror or error}"


def _read_failure(error: OSError) -> Damage:
    if error.errno in _VANISHED:
        return "vanished", f"gone after it was opened: {error.strerror or error}"
    return "unreadable", f"cannot read: {error.strerror or error}"


def damage_of(text: str) -> Damage:
    """(kind, detail) of a text a parser rejected: ``empty``, ``truncated`` (cut at the
    read cap, or without the newline every kernel file ends with) or ``garbage``."""
    if not text.strip():
        return "empty", "the file is empty"
    if len(text) >= READ_CAP_BYTES:
        return "truncated", f"larger than the {READ_CAP_BYTES // 1024} KiB read cap"
    if not text.endswith("\n"):
        return "truncated", "cut short (no final newline)"
    return "garbage", f"cannot parse {text[:40]!r}"


def _close_all(fds: dict[str, int]) -> None:
    """Close every descriptor of *fds* (a cache's, when it is closed or collected)."""
    for fd in list(fds.values()):
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


class FileCache:
    """Keeps descriptors of small kernel files open and re-reads them with ``pread``."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._failures: dict[str, Damage] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        forks.register(self)
        # the descriptors are plain numbers: without this a sampler nobody closed kept its
        # files open for the life of the process (one set per Sampler ever made)
        weakref.finalize(self, _close_all, self._fds)

    def read(self, path: str) -> str | None:
        """The file's current content, or ``None`` when it is missing or unreadable (then
        :meth:`failure` says why)."""
        if os.getpid() != self._pid:
            self._forget_all()
        fd = self._fds.get(path)
        if fd is None:
            try:
                fd = os.open(path, READ_FLAGS)
            except OSError as error:
                self._failures[path] = _open_failure(error)
                return None
            with self._lock:
                existing = self._fds.setdefault(path, fd)
            if existing != fd:
                os.close(fd)
                fd = existing
        try:
            data = _pread(fd, READ_CAP_BYTES, 0)
        except OSError as error:
            self._failures[path] = _read_failure(error)
            self._forget(path)
            return None
        return data.decode("ascii", "replace")

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it at the fork

    def failure(self, path: str) -> Damage:
        """(kind, detail) of the last failed :meth:`read` of *path*."""
        return self._failures.get(path, ("unreadable", "cannot read"))

    def damage(self, path: str, text: str | None) -> tuple[str, FaultKind, str]:
        """``(path, kind, detail)``: why *path* gave no value, the read failed (*text*
        ``None``) or its *text* was rejected by a parser."""
        kind, detail = self.failure(path) if text is None else damage_of(text)
        return path, kind, detail

    def _forget(self, path: str) -> None:
        with self._lock:
            fd = self._fds.pop(path, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _forget_all(self) -> None:
        with self._lock:
            fds = dict(self._fds)
            self._fds.clear()  # in place: the finalizer holds this dict
            self._pid = os.getpid()
        _close_all(fds)

    def close(self) -> None:
        """Close every kept descriptor."""
        self._forget_all()
