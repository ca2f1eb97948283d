"""Pressure stall information (PSI): ``/proc/pressure/*`` or a cgroup v2 ``*.pressure`` file.

The parser returns plain numbers; :class:`resguard.snapshot.ResourcePressure` is the value
made of them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["PsiLine", "PsiTrigger", "arm_trigger", "parse_pressure"]

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


class PsiTrigger(NamedTuple):
    """An armed PSI trigger: its descriptor and the stall and window the kernel accepted."""

    fd: int
    stall_us: int
    window_us: int


def arm_trigger(path: str, stall_us: int = 100_000, window_us: int = 1_000_000) -> PsiTrigger | str:
    """Arm a PSI trigger on *path*: the descriptor becomes ready (``POLLPRI``) when tasks
    stall for *stall_us* within *window_us*; else why not (one clause, for a log line).

    Without CAP_SYS_RESOURCE the kernel only accepts windows that are multiples of 2 s, so
    a 2 s window (the stall scaled alike) is tried next: the result says which was taken.
    A plain file with content (a fixture tree's) is refused, never written into. Never
    raises; no descriptor is left open on failure.
    """
    import os

    attempts = [(stall_us, window_us)]
    if window_us % 2_000_000:
        unprivileged_window = 2_000_000
        attempts.append((max(stall_us * unprivileged_window // window_us, 1), unprivileged_window))
    why = f"the kernel refused a trigger on {path}"
    for stall, window in attempts:
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            return f"cannot open {path} ({error.strerror or error})"
        try:
            if os.fstat(fd).st_size > 0:  # the kernel's PSI files have no size: a fixture's do
                os.close(fd)
                return f"{path} is not a kernel PSI file (a plain file takes no trigger)"
            os.write(fd, f"some {stall} {window}\0".encode())
        except OSError as error:
            os.close(fd)
            why = f"the kernel refused a trigger on {path} ({error.strerror or error})"
            continue
        return PsiTrigger(fd, stall, window)
    return why
