"""Pressure stall information (PSI): ``/proc/pressure/*`` or a cgroup v2 ``*.pressure`` file.

The parser returns plain numbers; :class:`resguard.snapshot.ResourcePressure` is the value
made of them.
"""

from __future__ import annotations

import re

__all__ = ["PsiLine", "open_trigger", "parse_pressure"]

PsiLine = tuple[float, float, float, int]
"""One PSI line: avg10, avg60, avg300 (percent of wall time stalled) and total (µs)."""

_PERCENT = r"([0-9]{1,3}\.[0-9]{1,4})"
_LINE = re.compile(
    rf"^(some|full) avg10={_PERCENT} avg60={_PERCENT} avg300={_PERCENT} total=([0-9]{{1,20}})$",
    re.MULTILINE,
)


def parse_pressure(text: str | None) -> tuple[PsiLine, PsiLine | None] | None:
    """Parse a PSI file's text into its ``some`` and ``full`` lines (``full`` may be
    absent: ``None``); ``None`` when it is missing or not in PSI form (never raises).

    A line cut short (no final newline) is not trusted: ``total=12`` may be ``total=123456``.
    """
    if not text or not text.endswith("\n"):
        return None
    lines: dict[str, PsiLine] = {
        kind: (float(a10), float(a60), float(a300), int(total))
        for kind, a10, a60, a300, total in _LINE.findall(text)
    }
    some = lines.get("some")
    return None if some is None else (some, lines.get("full"))


def open_trigger(path: str, stall_us: int = 100_000, window_us: int = 1_000_000) -> int | None:
    """Arm a PSI trigger on *path*: the descriptor becomes ready (``POLLPRI``) when tasks
    stall for *stall_us* within *window_us*.

    Without CAP_SYS_RESOURCE the kernel only accepts windows that are multiples of 2 s, so
    that is tried next; ``None`` when the kernel refuses both (then the caller polls).
    """
    import os

    attempts = [(stall_us, window_us)]
    if window_us % 2_000_000:
        unprivileged_window = 2_000_000
        attempts.append((max(stall_us * unprivileged_window // window_us, 1), unprivileged_window))
    for stall, window in attempts:
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            os.write(fd, f"some {stall} {window}\0".encode())
        except OSError:
            os.close(fd)
            continue
        return fd
    return None
