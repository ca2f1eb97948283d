"""Parsers for /proc files: meminfo, stat (CPU times, boot time), loadavg, uptime, and a
process's stat and statm.

Every parser is total: it returns a value or ``None`` (or leaves a key out), never raises,
whatever the text. A number cut short (no newline after it) is not trusted, because a
truncated ``12345678`` reads as a smaller, wrong ``1234``.
"""

from __future__ import annotations

import math
import os

__all__ = [
    "CPU_WINDOW_MIN_S",
    "PAGE_SIZE",
    "TICKS_PER_S",
    "parse_btime",
    "parse_cmdline",
    "parse_loadavg",
    "parse_meminfo",
    "parse_pid_stat",
    "parse_statm",
    "parse_total_cpu_ticks",
    "parse_uptime",
]


def _sysconf(name: str, default: int) -> int:
    """``os.sysconf(name)`` where the platform has it (not on Windows), else *default*."""
    try:
        value = os.sysconf(name)
    except (AttributeError, ValueError, OSError):
        return default
    return value if value > 0 else default


PAGE_SIZE = _sysconf("SC_PAGE_SIZE", 4096)
TICKS_PER_S = _sysconf("SC_CLK_TCK", 100)

CPU_WINDOW_MIN_S = 0.25
"""The shortest window a CPU percent is measured over (the process table, this process,
the host): CPU time comes in 10 ms ticks, so one tick either way is then at most 4 % of
one CPU; ``top`` refreshes every 1-3 s and 0.25 s still answers quickly."""

_MEMINFO_KEYS = ("MemTotal:", "MemAvailable:", "MemFree:", "SwapTotal:", "SwapFree:")
_MAX_DIGITS = 20  # 2**64 has 20 digits; longer is damage (and int() of 5000 digits raises)


_LIMIT = 1 << 64  # kernel counters are 64-bit; anything larger is damage


def _count(token: str) -> int | None:
    """A non-negative integer token, else ``None``."""
    try:
        value = int(token)
    except ValueError:  # also for the 4300-digit limit of int()
        return None
    return value if 0 <= value < _LIMIT and token.isdigit() else None


def _counts(tokens: list[str]) -> list[int] | None:
    """Non-negative integers, or ``None`` when one token is not (cheap when all are)."""
    try:
        values = [int(token) for token in tokens]
    except ValueError:
        return None
    if values and (min(values) < 0 or max(values) >= _LIMIT):
        return None
    return values


def _real(token: str) -> float | None:
    """A finite non-negative decimal token, else ``None``."""
    if len(token) > 32:
        return None
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_meminfo(text: str) -> dict[str, int]:
    """The fields of ``/proc/meminfo`` that snapshots use, in bytes; a field whose line is
    missing, cut short or not a number is left out."""
    result: dict[str, int] = {}
    for key in _MEMINFO_KEYS:
        start = text.find(key)
        if start < 0 or (start > 0 and text[start - 1] != "\n"):
            continue
        end = text.find("\n", start)
        if end < 0:
            continue  # the number may be cut short
        parts = text[start + len(key) : end].split()
        if len(parts) == 2 and parts[1] == "kB":
            number = parts[0]
            if number.isdigit() and number.isascii() and len(number) <= _MAX_DIGITS:
                result[key[:-1]] = int(number) * 1024
    return result


def parse_total_cpu_ticks(text: str) -> tuple[int, int] | None:
    """(busy, total) clock ticks from the aggregate ``cpu`` line of ``/proc/stat``."""
    end = text.find("\n")
    if end < 0:
        return None
    first = text[:end].split()
    if len(first) < 5 or first[0] != "cpu":
        return None
    counts = _counts(first[1:11])
    if counts is None:
        return None
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is inside user
    idle = counts[3] + (counts[4] if len(counts) > 4 else 0)
    total = sum(counts[:8])
    return total - idle, total


def parse_btime(text: str) -> float | None:
    """Boot time (epoch seconds) from the ``btime`` line of ``/proc/stat``."""
    start = text.find("\nbtime ")
    if start < 0:
        return None
    end = text.find("\n", start + 1)
    if end < 0:
        return None
    value = _count(text[start + 7 : end].strip())
    return float(value) if value else None


def parse_loadavg(text: str) -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages from ``/proc/loadavg``."""
    if not text.endswith("\n"):
        return None
    parts = text.split()
    if len(parts) < 3:
        return None
    one, five, fifteen = _real(parts[0]), _real(parts[1]), _real(parts[2])
    if one is None or five is None or fifteen is None:
        return None
    return one, five, fifteen


def parse_uptime(text: str) -> float | None:
    """Seconds since boot from ``/proc/uptime``."""
    if not text.endswith("\n"):
        return None
    parts = text.split()
    value = _real(parts[0]) if parts else None
    return value if value else None


def parse_pid_stat(text: str) -> tuple[str, str, int, int, int, int, int, int] | None:
    """(name, state, ppid, utime+stime ticks, num_threads, start time ticks, rss bytes,
    virtual size bytes) from ``/proc/<pid>/stat``, or ``None`` when the text is not a
    whole stat line; the name may contain spaces and parentheses."""
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren or not text.endswith("\n"):
        return None
    name = text[open_paren + 1 : close_paren]
    fields = text[close_paren + 2 :].split()
    if len(fields) < 22:
        return None
    # fields[0] is field 3 (state) of proc(5); rss (field 24) is in pages
    numbers = _counts(
        [fields[1], fields[11], fields[12], fields[17], fields[19], fields[20], fields[21]]
    )
    if numbers is None:
        return None
    ppid, utime, stime, threads, start, vsize, rss = numbers
    return name, fields[0], ppid, utime + stime, threads, start, rss * PAGE_SIZE, vsize


def parse_cmdline(raw: bytes) -> tuple[str, ...]:
    """The arguments of ``/proc/<pid>/cmdline`` (NUL-separated; empty parts dropped, bytes
    that are not UTF-8 replaced)."""
    return tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)


def parse_statm(text: str) -> tuple[int, int, int] | None:
    """(vms, rss, data) in bytes from ``/proc/<pid>/statm``, or ``None``."""
    if not text.endswith("\n"):
        return None
    parts = text.split()
    numbers = _counts(parts[:6]) if len(parts) >= 6 else None
    if numbers is None:
        return None
    return numbers[0] * PAGE_SIZE, numbers[1] * PAGE_SIZE, numbers[5] * PAGE_SIZE
