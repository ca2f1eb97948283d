"""Fast reads of small kernel files (/proc, /sys/fs/cgroup) through kept-open descriptors.

Re-reading a seq file with ``pread`` at offset 0 regenerates its content, so keeping the
descriptor saves the open/close pair that dominates the cost of a small read. Descriptors
are dropped in a forked child (``/proc/self`` would still name the parent) and when a file
disappears (a removed cgroup).
"""

from __future__ import annotations

import os
import threading

__all__ = ["FileCache", "read_text"]

_READ_SIZE = 64 * 1024


def read_text(path: str) -> str | None:
    """Read a whole small file, or ``None`` if it does not exist or cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


class FileCache:
    """Keeps descriptors of small kernel files open and re-reads them with ``pread``."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def read(self, path: str) -> str | None:
        """The file's current content, or ``None`` when it is missing or unreadable."""
        if os.getpid() != self._pid:
            self._forget_all()
        fd = self._fds.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            with self._lock:
                existing = self._fds.setdefault(path, fd)
            if existing != fd:
                os.close(fd)
                fd = existing
        try:
            data = os.pread(fd, _READ_SIZE, 0)
        except OSError:
            self._forget(path)
            return None
        return data.decode("ascii", "replace")

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
            fds, self._fds = self._fds, {}
            self._pid = os.getpid()
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        """Close every kept descriptor."""
        self._forget_all()
