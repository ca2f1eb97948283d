"""Pressure stall information (PSI): ``/proc/pressure/*`` or a cgroup v2 ``*.pressure`` file."""

from __future__ import annotations

import re

import attrs

from resguard._modules.render import ValueMixin

__all__ = ["PressureLine", "ResourcePressure", "parse_pressure"]


@attrs.frozen
class PressureLine(ValueMixin):
    """One PSI line: share of wall time stalled (percent) over 10/60/300 s, total in µs."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@attrs.frozen
class ResourcePressure(ValueMixin):
    """``some``: at least one task stalled; ``full``: all non-idle tasks stalled (may be absent)."""

    some: PressureLine
    full: PressureLine | None


_PERCENT = r"([0-9]{1,3}\.[0-9]{1,4})"
_LINE = re.compile(
    rf"^(some|full) avg10={_PERCENT} avg60={_PERCENT} avg300={_PERCENT} total=([0-9]{{1,20}})$",
    re.MULTILINE,
)


def parse_pressure(text: str | None) -> ResourcePressure | None:
    """Parse a PSI file's text; ``None`` when it is missing or not in PSI form (never raises).

    A line cut short (no final newline) is not trusted: ``total=12`` may be ``total=123456``.
    """
    if not text or not text.endswith("\n"):
        return None
    lines = {
        kind: PressureLine(float(a10), float(a60), float(a300), int(total))
        for kind, a10, a60, a300, total in _LINE.findall(text)
    }
    some = lines.get("some")
    return None if some is None else ResourcePressure(some, lines.get("full"))


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
